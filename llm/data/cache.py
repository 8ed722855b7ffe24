"""On-disk token cache: a corpus split tokenized once, then memory-mapped by every later run.

A cache is a folder holding tokens.bin (each document as [bos] + its tokens, back to back),
byte_fixes.npy (where a document's tokens' bytes do not add up to its text's: the position of its
first token and the bytes it adds, llm.losses.byte_fix; what bits per byte counts) and meta.json
(counts, dtype, and the tokenizer that made it).
"""
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from absl import logging
import numpy as np

from llm import files, losses

_TOKENS, _BYTE_FIXES, _META = 'tokens.bin', 'byte_fixes.npy', 'meta.json'
_CHUNK_CHARS = 8_000_000  # text per encode_batch call: enough to keep every core busy
_FORMAT = 'v2: [bos] + encode(doc) per document, byte fixes'  # part of the cache key


def build_token_cache(docs: Iterable[str], tokenizer, path: Path):
  """Tokenizes docs into the cache folder path.

  The folder appears only when complete (built under a temporary name, then renamed), so an
  interrupted build never leaves a half-written cache for the next run to trust.
  """
  path = Path(path)
  dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f'.{path.name}.', dir=path.parent))
  counts = dict(num_tokens=0, num_docs=0, num_bytes=0)
  token_bytes_V, byte_fixes = tokenizer.token_bytes(), []

  def write(chunk: list[str], out):
    ids, fixes = document_stream(chunk, tokenizer, token_bytes_V)
    tokens = np.asarray(ids, dtype)
    tokens.tofile(out)
    byte_fixes.extend((counts['num_tokens'] + position, fix) for position, fix in fixes)
    counts['num_tokens'] += len(tokens)
    counts['num_docs'] += len(chunk)
    counts['num_bytes'] += sum(len(doc.encode()) for doc in chunk)

  try:
    with open(tmp / _TOKENS, 'wb') as out:
      chunk, chunk_chars = [], 0
      for doc in docs:
        chunk.append(doc)
        chunk_chars += len(doc)
        if chunk_chars >= _CHUNK_CHARS:
          write(chunk, out)
          chunk, chunk_chars = [], 0
      write(chunk, out)
    np.save(tmp / _BYTE_FIXES, np.array(byte_fixes, np.int64).reshape(-1, 2))
    meta = dict(counts, dtype=np.dtype(dtype).name, tokenizer_path=str(tokenizer.path),
                tokenizer_fingerprint=tokenizer.fingerprint, format=_FORMAT)
    (tmp / _META).write_text(json.dumps(meta, indent=2))
    tmp.chmod(path.parent.stat().st_mode & 0o7777)  # mkdtemp's 0700 would keep the cache from other users
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def document_stream(docs: list[str], tokenizer, token_bytes_V) -> tuple[list[int], list[tuple[int, int]]]:
  """docs as one stream of [bos] + encode(doc) each, and the (position in the stream, byte fix) of
  each document's first token where its bytes need one (llm.losses.byte_fix): what the cache
  stores, and what llm.evals.bpb scores a corpus outside it on."""
  stream, fixes = [], []
  for doc, ids in zip(docs, tokenizer.encode_batch(docs)):
    stream.append(tokenizer.bos_id)
    fix = losses.byte_fix(token_bytes_V, doc, ids)
    if fix and ids:  # a document of no tokens has no target to hold its bytes, nor a loss
      fixes.append((len(stream), fix))
    stream.extend(ids)
  return stream, fixes


def load_cache_meta(path: Path) -> dict:
  meta_file = Path(path) / _META
  if not meta_file.is_file():
    raise FileNotFoundError(f'no token cache at {path} ({_META} missing); build it with '
                            'build_token_cache or delete the folder to rebuild')
  return files.read_json(meta_file, 'delete the cache folder to rebuild it')


def load_token_cache(path: Path) -> np.ndarray:
  """The cached tokens, memory-mapped read-only (an empty array for an empty split)."""
  meta = load_cache_meta(path)
  if not meta['num_tokens']:
    return np.zeros(0, meta['dtype'])
  tokens = np.memmap(Path(path) / _TOKENS, dtype=meta['dtype'], mode='r')
  if len(tokens) != meta['num_tokens']:
    raise ValueError(f'token cache {path} is corrupt ({len(tokens)} tokens, meta.json says '
                     f'{meta["num_tokens"]}); delete the folder to rebuild it')
  return tokens


def load_byte_fixes(path: Path) -> np.ndarray:
  """int64[N, 2]: (position in the cached tokens, bytes added) of each document's first token whose
  bytes need a fix (llm.losses.byte_fix): what pipeline.eval_batches puts in a batch's 'byte_fix'."""
  return np.load(Path(path) / _BYTE_FIXES)


def get_or_build_cache(docs_fn: Callable[[], Iterable[str]], tokenizer, cache_dir: Path,
                       fingerprint: str, split: str) -> Path:
  """The cache folder of one split, cache_dir/tokens/<hash>/<split>, built on first use.

  The hash covers the corpus fingerprint and the tokenizer's content; docs_fn is only called
  when the cache does not exist yet.
  """
  key = hashlib.sha256(f'{fingerprint}|{tokenizer.fingerprint}|{_FORMAT}'.encode()).hexdigest()
  path = Path(cache_dir) / 'tokens' / key[:16] / split
  if (path / _META).is_file():
    return path
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path.parent / f'.lock-{split}', 'a') as lock:  # freed when closed, or when its holder dies
    alone = _lock(lock, path)
    if (path / _META).is_file():  # built by the process that held the lock before
      return path
    if alone:
      _remove_abandoned_builds(path)
    try:
      build_token_cache(docs_fn(), tokenizer, path)
    except OSError:
      # Another process (a second host on a disk without locks) finished the same cache first.
      if not (path / _META).is_file():
        raise
  return path


def _lock(lock, path: Path) -> bool:
  """Whether this process now holds the flock on lock, the build lock of the cache folder path
  (waiting for a process that builds it now); False on a disk without locks."""
  try:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      logging.info('tokens: waiting for another process that builds %s', path)
      fcntl.flock(lock, fcntl.LOCK_EX)
  except OSError as e:  # some network disks: build unguarded, since another builder may be at work
    logging.warning('tokens: %s cannot be locked (%s); building %s unguarded', lock.name, e.strerror, path)
    return False
  return True


def _remove_abandoned_builds(path: Path):
  """Removes the temporary folders of builds of path that a kill cut short (no except clause runs on
  SIGKILL; a FineWeb one holds 20 GB). Called under the build lock, so none is in use."""
  for tmp in path.parent.glob(f'.{path.name}.*'):
    if tmp.is_dir():
      logging.info('tokens: removing %s, left by a build that was cut short', tmp)
      shutil.rmtree(tmp, ignore_errors=True)
