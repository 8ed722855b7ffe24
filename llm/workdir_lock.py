"""One training process per run directory: a second one started on the same directory would cut
metrics.jsonl back to its own start and race the first for the checkpoints."""
import contextlib
import fcntl
import logging
import os
import socket
from pathlib import Path


@contextlib.contextmanager
def held(workdir: Path):
  """Holds workdir/.lock (an flock: freed when the process ends, however it ends, so a killed run
  leaves no stale lock) while the run trains; a held one raises ValueError naming its holder."""
  path = Path(workdir) / '.lock'
  with open(path, 'a+') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      raise ValueError(f'{workdir} is in use by {f.read().strip() or "another process"} ({path}): let it finish '
                       'or stop it (a rerun resumes), or give another --workdir') from None
    except OSError as e:  # a file system without locks (some network disks): train unguarded
      logging.warning('%s cannot be locked (%s): make sure no other run uses %s', path, e.strerror, workdir)
    f.seek(0)
    f.truncate()
    f.write(f'pid {os.getpid()} on {socket.gethostname()}\n')
    f.flush()
    yield
