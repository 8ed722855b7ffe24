"""Writing files: so that a killed process leaves either the old file or the whole new one, and
only where they can be written; reading JSON so that a broken file is named."""
import json
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


def check_writable(folder: Path | str) -> Path:
  """folder, created if need be, once a file could be written in it: checked before the work whose
  results go there, so a read-only disk fails at the start, not after an hour."""
  folder = Path(folder)
  try:
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f'.write-check.{os.getpid()}'
    probe.write_bytes(b'')
    probe.unlink()
  except OSError as e:
    raise PermissionError(f'{folder} cannot be written ({e.strerror}): choose a folder on a writable disk') from None
  return folder


def read_json(path: Path | str, remedy: str = 'restore it, or rerun the command that wrote it'):
  """The JSON in path; one that is not JSON (edited by hand, cut short by a full disk) is a
  ValueError naming the file, not json's bare 'Expecting value: line 2 column 1'."""
  try:
    return json.loads(Path(path).read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON ({e.msg}: line {e.lineno} column {e.colno}); {remedy}') from None
