"""One training process per run directory: a second one started on the same directory would cut
metrics.jsonl back to its own start and race the first for the checkpoints."""
import contextlib
import fcntl
import logging
import os
import socket
from pathlib import Path

from llm import files


@contextlib.contextmanager
def held(workdir: Path):
  """Holds workdir/.lock (an flock: freed when the process ends, however it ends, so a killed run
  leaves no stale lock) while the run trains; a held one raises ValueError naming its holder."""
  path = Path(workdir) / '.lock'
  # Unbuffered: on a full disk the write below fails, and nothing is left for close() to fail on again.
  with open(path, 'a+b', buffering=0) as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().decode().strip() or 'another process'
      raise ValueError(f'{workdir} is in use by {holder} ({path}): let it finish '
                       'or stop it (a rerun resumes), or give another --workdir') from None
    except OSError as e:  # a file system without locks (some network disks): train unguarded
      logging.warning('%s cannot be locked (%s): make sure no other run uses %s', path, e.strerror, workdir)
    with files.naming(path):  # a full disk: the line it ends in names the file
      f.seek(0)
      f.truncate()
      f.write(f'pid {os.getpid()} on {socket.gethostname()}\n'.encode())
    yield
