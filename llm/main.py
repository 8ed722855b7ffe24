"""Entry point: python -m llm.main --config=configs/NAME.py --workdir=DIR [--config.a.b=value].

Running the same command again resumes from DIR's latest checkpoint.
"""
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics, summary.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  from llm import sharding, train  # after flag parsing, so --help stays fast
  sharding.maybe_initialize_distributed(_CONFIG.value.mesh.distributed)
  train.run(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
