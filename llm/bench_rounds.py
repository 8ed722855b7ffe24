"""Alternating rounds of the train-step benchmark, each run a fresh process: ours with
model.attention=auto, ours with the XLA attention path, then the PyTorch reference, `rounds`
times. Prints one JSON line per run and a summary with per-round ratios and medians: the
train-step rows of the README and docs/performance.md.

    python -m llm.bench --rounds=4
    LLM_CPU_MARCH=haswell XLA_FLAGS=--xla_cpu_max_isa=AVX2 python -m llm.bench --rounds=4   # the AVX2 build

Other jobs on the machine swing single runs by 10-50%: alternating keeps each round's three runs
under the same conditions, so the per-round ratios mean more than any one rate.
"""
import json
import statistics
import subprocess
import sys

_IMPLEMENTATIONS = ('auto', 'xla')


def _ours(shape: dict, options: dict, implementation: str) -> dict:
  cmd = [sys.executable, '-m', 'llm.bench', *(f'--{k}={v}' for k, v in {**shape, **options}.items()),
         f'--attention_impl={implementation}']
  return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def run(rounds: int, shape: dict, run_reference, options: dict) -> dict:
  """run_reference(shape) -> the torch reference's JSON, or None where torch cannot run; options:
  llm.bench's other flags for our runs ({'dtype': 'bfloat16', 'remat': 'full'})."""
  rates = {name: [] for name in (*_IMPLEMENTATIONS, 'torch')}
  for _ in range(rounds):
    for implementation in _IMPLEMENTATIONS:
      result = _ours(shape, options, implementation)
      rates[implementation].append(result['tokens_per_s'])
      print(json.dumps(result), flush=True)
    reference = run_reference(shape)
    if reference is not None:
      rates['torch'].append(reference['tokens_per_s'])
      print(json.dumps(reference), flush=True)
  ratio = lambda a, b: [round(x / y, 3) for x, y in zip(rates[a], rates[b])]
  summary = {'rounds': rounds, **shape, **options,
             **{f'{name}_tokens_per_s_median': statistics.median(r) for name, r in rates.items() if r},
             'auto_over_xla': ratio('auto', 'xla'), 'host': result['host']}
  if rates['torch']:  # beside torch's precision: a bfloat16 run of ours against fp32 torch says so
    summary.update(auto_over_torch=ratio('auto', 'torch'), torch_dtype=reference['dtype'])
  return summary
