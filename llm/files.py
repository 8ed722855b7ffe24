"""Writing files: so that a killed process leaves either the old file or the whole new one, only
where they can be written, and a full disk names the file it refused; reading JSON so that a
broken file is named."""
import contextlib
import errno
import json
import os
from pathlib import Path

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # the disk is full, or the user's quota on it used up


def write_atomically(path: Path | str, data: bytes | str):
  """data (text as UTF-8) into path through a temporary file of this process beside it, renamed
  over path: a reader, or a run resumed after a kill or a power cut, never sees half a file. A
  write that fails (a full disk) leaves path as it was and no temporary file."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
  try:
    with naming(path), open(tmp, 'wb') as f:
      f.write(data.encode() if isinstance(data, str) else data)
      f.flush()
      # On the disk before the rename: a file system may otherwise commit the rename first, and a
      # power cut leave path empty, the very thing the rename is there to prevent.
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  _sync_folder(path.parent)  # the rename is an entry in the folder, on the disk only once it is synced


def _sync_folder(folder: Path):
  descriptor = os.open(folder, os.O_RDONLY)
  try:
    os.fsync(descriptor)
  except OSError as e:
    if e.errno != errno.EINVAL:  # a file system that cannot sync a folder (some network ones): nothing to do
      raise
  finally:
    os.close(descriptor)


@contextlib.contextmanager
def naming(path: Path | str):
  """An OSError raised inside without a file name (a write() or flush() on a file already open,
  as on a full disk) gets path's, so the line it ends in says which file could not be written."""
  try:
    yield
  except OSError as e:
    if e.filename is None:
      e.filename = str(path)
    raise


def no_space(error: OSError, where: Path | str) -> str:
  """'no space left on device writing FILE: free space on that disk' for an OSError whose errno is
  one of NO_SPACE; where stands for the file when the error names none."""
  return f'{os.strerror(error.errno).lower()} writing {error.filename or where}: free space on that disk'


def check_writable(folder: Path | str) -> Path:
  """folder, created if need be, once a file could be written in it: checked before the work whose
  results go there, so a read-only disk fails at the start, not after an hour. A full one raises
  its OSError, naming folder: the fix is to free space there, not to choose another folder."""
  folder = Path(folder)
  try:
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f'.write-check.{os.getpid()}'
    try:
      probe.write_bytes(b'.')  # a byte, not none: a full disk still creates an empty file
    finally:
      probe.unlink(missing_ok=True)
  except OSError as e:
    if e.errno in NO_SPACE:
      raise OSError(e.errno, os.strerror(e.errno), str(folder)) from None
    remedy = ('it, or a folder above it, is a file: give a folder' if isinstance(e, (FileExistsError, NotADirectoryError))
              else 'choose a folder on a writable disk')
    raise PermissionError(f'{folder} cannot be written ({e.strerror}): {remedy}') from None
  return folder


def read_json(path: Path | str, remedy: str = 'restore it, or rerun the command that wrote it'):
  """The JSON in path; one that is not JSON (edited by hand, cut short by a full disk) is a
  ValueError naming the file, not json's bare 'Expecting value: line 2 column 1'."""
  try:
    return json.loads(Path(path).read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON ({e.msg}: line {e.lineno} column {e.colno}); {remedy}') from None


def read_json_table(path: Path | str, remedy: str, valid_entry, entries: str) -> dict:
  """The {key: entry} table in path, {} where there is none: read_json, and then a table of
  another shape (`[]`, an entry valid_entry refuses) is a ValueError naming the file and saying
  what its entries should be (`entries`), not a TypeError where the table is first used."""
  table = read_json(path, remedy) if Path(path).exists() else {}
  if not (isinstance(table, dict) and all(valid_entry(entry) for entry in table.values())):
    raise ValueError(f'{path} is not a table of {entries}; {remedy}')
  return table
