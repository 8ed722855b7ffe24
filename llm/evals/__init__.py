"""Evaluators, one a file, looked up by name (as big_vision's config.evals); suites are named
lists of them. Each module llm/evals/<name>.py exposes evaluate(ctx: Context) -> {key: number}
with flat keys. `python -m llm.eval` runs a suite on a run's latest checkpoint; the training
tasks' periodic and final evaluations call the same functions.

    results = evals.run_suite('base', evals.Context.from_run(inference.load(workdir)))
"""
import importlib
import time

from llm.evals.context import Context

EVALUATORS = ('bpb', 'hellaswag', 'copying', 'fewshot_arithmetic', 'fewshot_translation', 'well_formed', 'arithmetic',
              'arithmetic_phrasing', 'gsm8k', 'identity', 'probes', 'rl_pass_at_k', 'poison',
              'injection', 'jailbreak', 'honesty')
SUITES = {
    'base': ('bpb', 'hellaswag', 'copying', 'fewshot_arithmetic', 'fewshot_translation'),
    'chat': ('well_formed', 'arithmetic', 'arithmetic_phrasing', 'gsm8k', 'identity', 'probes'),
    'rl': ('rl_pass_at_k',),
    'security': ('poison', 'injection', 'jailbreak'),
}


def get(name: str):
  """The evaluate function of the evaluator called name."""
  if name not in EVALUATORS:
    raise ValueError(f'evaluator {name!r} is unknown; choose from {", ".join(EVALUATORS)}')
  return importlib.import_module(f'llm.evals.{name}').evaluate


def suite(name: str) -> tuple[str, ...]:
  """The evaluators of a suite; an evaluator's own name is the suite of that one evaluator."""
  if name in EVALUATORS:
    return (name,)
  if name not in SUITES:
    raise ValueError(f'--suite={name} is unknown; choose a suite ({", ".join(SUITES)}) or one evaluator '
                     f'({", ".join(EVALUATORS)})')
  return SUITES[name]


def run_suite(name: str, ctx: Context, log=lambda message: None) -> dict:
  """Every evaluator of the suite, their keys merged in order; log(message) after each."""
  results = {}
  for evaluator in suite(name):
    start = time.time()
    results.update(get(evaluator)(ctx))
    log(f'{evaluator}: {time.time() - start:.0f}s')
  return results


__all__ = ['Context', 'EVALUATORS', 'SUITES', 'get', 'run_suite', 'suite']
