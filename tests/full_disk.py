"""A disk that is full, for tests that cannot mount a small one: files opened for writing in a
folder take no byte, as on a real full disk. Opening works (an empty file takes no space). A
buffered file fails at flush() and again at close(), its bytes still waiting; an unbuffered one
fails at write(). Either raises OSError ENOSPC without a file name, as the operating system's write()
does."""
import builtins
import errno
import io
import os
from pathlib import Path


def fill(folder: Path, names: tuple[str, ...] = (), setattr=setattr):
  """From now on the disk of folder is full for files opened for writing in it (or below it), or
  only for those named in names where given. setattr: pytest's monkeypatch.setattr, to undo it
  after the test."""
  real_open = builtins.open  # io.open is the same function

  def open_(file, mode='r', *args, **kwargs):
    opened = real_open(file, mode, *args, **kwargs)
    if isinstance(file, int) or not set(mode) & set('wax+'):
      return opened
    path = Path(os.fsdecode(file)).absolute()
    if path.is_relative_to(Path(folder).absolute()) and (not names or path.name in names):
      return _OnAFullDisk(opened)
    return opened

  for module in (builtins, io):  # open() and pathlib's io.open()
    setattr(module, 'open', open_)


def _no_space() -> OSError:
  return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _OnAFullDisk:

  def __init__(self, file):
    self._file = file
    self._waiting = False  # bytes written to the buffer that the disk has no room for

  def write(self, data):
    if data and isinstance(self._file, io.RawIOBase):
      raise _no_space()
    self._waiting = self._waiting or bool(data)
    return len(data)

  def flush(self):
    if self._waiting:
      raise _no_space()

  def close(self):
    try:
      self.flush()
    finally:
      self._file.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __getattr__(self, name):  # fileno, seek, read, truncate: the real file's
    return getattr(self._file, name)
