"""Evaluate a run's latest checkpoint (parameters only) with a suite of evaluators (llm/evals):

    python -m llm.eval --workdir=runs/pretrain_small --suite=base \
        --corpus=../shared/data/tinystories_val_sample --corpus=../shared/data/tinyshakespeare
    python -m llm.eval --workdir=runs/sft_small --suite=chat --limit=100

writes DIR/eval/<suite>.json (flat keys, numbers, plus the checkpoint's step and --limit, 0 for
each evaluator's default) and prints a table.
The data sets come from the run's data dir (config.data.dir, $LLM_DATA_DIR or ../shared/data).
"""
import json
import sys
import time
from pathlib import Path

from absl import flags

from llm import cli, files

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory.', required=True)
_SUITE = flags.DEFINE_string('suite', 'base', 'Suite of evaluators (base, chat, rl, security) or one evaluator\'s name.')
_LIMIT = flags.DEFINE_integer('limit', 0, 'Items per evaluator (problems, HellaSwag items, bits-per-byte '
                              'windows); 0 = each evaluator\'s default.', lower_bound=0)
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'Folder of the data sets (default: the run\'s config.data.dir, '
                                 '$LLM_DATA_DIR, ./data or ../shared/data).')
_CORPUS = flags.DEFINE_multi_string('corpus', [], 'Extra text file or folder for bits per byte (repeatable).')


def table(results: dict) -> str:
  width = max(map(len, results), default=6)
  rows = [f'{k:<{width}}  {v:.4f}' if isinstance(v, float) else f'{k:<{width}}  {v}' for k, v in results.items()]
  return '\n'.join(rows)


def main(argv):
  del argv
  from llm import evals, inference  # after flag parsing, so --help stays fast
  from llm.evals import bpb
  evals.suite(_SUITE.value)
  missing = [c for c in _CORPUS.value if not Path(c).exists()]
  if missing:
    raise ValueError(f'--corpus={missing[0]} does not exist; give a text file or a folder of *.txt files')
  bpb.corpus_keys(_CORPUS.value)  # two corpora of one name, refused before the model loads
  start = time.time()
  run = inference.load(_WORKDIR.value)  # inference.RunError (a ValueError): no run, no checkpoint
  out = files.check_writable(Path(_WORKDIR.value) / 'eval') / f'{_SUITE.value}.json'  # before the work, not after
  if _DATA_DIR.value:
    run.config.data.dir = _DATA_DIR.value
  log = lambda message: print(f'llm.eval: {message}', file=sys.stderr)
  try:
    ctx = evals.Context.from_run(run, limit=_LIMIT.value, corpora=tuple(Path(c) for c in _CORPUS.value),
                                 data_dir_flag='--data_dir')
    results = {'step': run.step, 'limit': _LIMIT.value, **evals.run_suite(_SUITE.value, ctx, log)}
  except FileNotFoundError as e:  # a data set
    raise ValueError(f'{e} (for llm.eval: --data_dir=DIR or $LLM_DATA_DIR)') from None
  results['eval_wall_s'] = round(time.time() - start, 1)
  files.write_atomically(out, json.dumps(results, indent=2) + '\n')
  print(table(results))
  print(f'wrote {out}')


if __name__ == '__main__':
  cli.run(main, 'llm.eval')
