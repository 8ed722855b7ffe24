"""Entry point: python -m llm.main --config=configs/NAME.py --workdir=DIR [--config.a.b=value].

Running the same command again resumes from DIR's latest checkpoint.

Several processes (hosts, or processes on one machine) train as one job when each runs the same
command with JAX_COORDINATOR_ADDRESS=<process 0's host:port>, JAX_NUM_PROCESSES=<n> and
JAX_PROCESS_ID=<0..n-1> set (see sharding.maybe_initialize_distributed); on Cloud TPU VMs
--config.mesh.distributed=True is enough. DIR must be one directory every process can write
(a shared disk): each writes its own part of every checkpoint there.
"""
import sys

from absl import app, flags
from ml_collections import config_flags

from llm import cli, files

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics, summary.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  cli.quiet_libraries()
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  from llm import cpu_memory, sharding, train  # after flag parsing, so --help stays fast
  cpu_memory.keep_freed_memory()  # before JAX starts its CPU client
  try:
    sharding.maybe_initialize_distributed(config.mesh.distributed)
    train.run(config, _WORKDIR.value)
  except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, FloatingPointError) as e:
    # Bad input or a diverged run: one line that says what and how to fix it, no traceback (other
    # exceptions are bugs, and keep theirs).
    sys.exit(f'llm: {type(e).__name__}: {e}')
  except OSError as e:  # a full disk is no bug either: the run resumes once there is room
    if e.errno not in files.NO_SPACE:
      raise
    sys.exit(f'llm: {files.no_space(e, _WORKDIR.value)}, then rerun the same command to resume from its last '
             'checkpoint')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.config_parser('llm'))
