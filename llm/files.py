"""Writing a file so that a killed process leaves either the old file or the whole new one."""
import os
from pathlib import Path


def write_atomically(path: Path | str, data: bytes | str):
  """data (text as UTF-8) into path through a temporary file of this process beside it, renamed
  over path: a reader, or a run resumed after a kill, never sees half a file."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
  tmp.write_bytes(data.encode() if isinstance(data, str) else data)
  os.replace(tmp, path)
