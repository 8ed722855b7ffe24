"""SHA-256 of a corpus's files, each read once: a file's digest is remembered under the cache dir
(a memo per host) beside what stat says of it (size, mtime, ctime, inode), and the file read again
only when one of these changes: an edit (even one that puts the mtime back, which cannot put back
the ctime), a copy or a move. The digests key a corpus's tokenizer and token caches (sources.corpus_fingerprint), so
the same text at another path or on another machine finds them, and an edited file does not."""
import hashlib
import json
import socket
from pathlib import Path

from absl import logging

from llm import files

_WORTH_A_LINE = 1 << 30  # bytes: reading this much takes seconds to minutes


def sha256s(root: Path, paths: list[Path], cache_dir: Path) -> list[str]:
  """The SHA-256 (hex) of each file of paths, each root itself or a file under it."""
  root = Path(root)
  # One memo per host: inode numbers (and on some mounts the times) differ between the hosts of a
  # job sharing a cache dir (gcsfuse numbers inodes per mount), so a shared memo would be read as
  # stale by every other host and rewritten by each at every start.
  memo_path = Path(cache_dir) / 'file_digests' / (
      # '../shared/data' and its absolute path are one corpus, one memo
      hashlib.sha256(f'{socket.gethostname()}:{root.resolve()}'.encode()).hexdigest()[:16] + '.json')
  try:
    memo = json.loads(memo_path.read_text())
  except (OSError, ValueError):  # none yet, or damaged: a memo only, the files are read again
    memo = {}
  stamps = {str(Path(p).relative_to(root)): _stamp(Path(p)) for p in paths}
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
    try:
      files.write_atomically(memo_path, json.dumps(fresh))
    except OSError as e:  # a cache dir this run cannot write (shared, read-only, full): only time is lost
      logging.warning('data: file digests not remembered (%s); each start reads the corpus again', e)
  return [fresh[name][-1] for name in stamps]


def _stamp(path: Path) -> list[int]:
  st = path.stat()
  return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
