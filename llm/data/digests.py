"""SHA-256 of a corpus's files, each read once: a file's digest is remembered under the cache dir
beside what stat says of it (size, mtime, ctime, inode), and the file read again only when one of
these changes: an edit (even one that puts the mtime back, which cannot put back the ctime), a copy
or a move. The digests key a corpus's tokenizer and token caches (sources.corpus_fingerprint), so
the same text at another path or on another machine finds them, and an edited file does not."""
import hashlib
import json
from pathlib import Path

from absl import logging

from llm import files

_WORTH_A_LINE = 1 << 30  # bytes: reading this much takes seconds to minutes


def sha256s(root: Path, paths: list[Path], cache_dir: Path) -> list[str]:
  """The SHA-256 (hex) of each file of paths, each root itself or a file under it."""
  root = Path(root).absolute()
  memo_path = Path(cache_dir) / 'file_digests' / f'{hashlib.sha256(str(root).encode()).hexdigest()[:16]}.json'
  try:
    memo = json.loads(memo_path.read_text())
  except (OSError, ValueError):  # none yet, or damaged: a memo only, the files are read again
    memo = {}
  stamps = {str(Path(p).absolute().relative_to(root)): _stamp(Path(p)) for p in paths}
  fresh = {name: memo[name] for name, stamp in stamps.items()
           if isinstance(memo.get(name), list) and memo[name][:-1] == stamp}
  unread = [name for name in stamps if name not in fresh]
  size = sum(stamps[name][0] for name in unread)
  if size >= _WORTH_A_LINE:
    logging.info('data: reading %d files of %s (%.1f GB) to key its caches by their content; once per file',
                 len(unread), root, size / 1e9)
  for name in unread:
    with open(root / name, 'rb') as f:
      fresh[name] = [*stamps[name], hashlib.file_digest(f, 'sha256').hexdigest()]
  if fresh != memo:
    files.write_atomically(memo_path, json.dumps(fresh))
  return [fresh[name][-1] for name in stamps]


def _stamp(path: Path) -> list[int]:
  st = path.stat()
  return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
