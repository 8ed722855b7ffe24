"""Results over seeds: each named group of runs (one run per seed) as mean, spread and every seed.

    python -m llm.seeds --group="recipe A=runs/a_s0,runs/a_s1,runs/a_s2" --group="recipe B=..." \
        --keys=arith_acc_tool,arith_copy_acc --out=results/sft_recipe

writes OUT/table.md (`| group | key: mean ± std [min, max] |`, then each run's value) and
OUT/<first key>.png (each seed a dot, the mean a bar), and prints the table. A run's numbers are
its summary.json and its eval/*.json (python -m llm.eval); a key missing from a run is an error
naming the run, never a silent gap in a mean. std is the sample standard deviation (n - 1). A
value a run holds as NaN (an eval's rate over no cases) is undefined there: the statistics are over
the seeds where it is defined, and the table says how many those are.
"""
import json
import math
import statistics
from pathlib import Path

from absl import app, flags

from llm import cli, files


def run_numbers(workdir: Path) -> dict:
  """Flat numbers of one finished run: summary.json, then eval/<suite>.json (later ones win)."""
  summary = workdir / 'summary.json'
  if not summary.exists():
    raise ValueError(f'{workdir} has no summary.json: is it a finished run (python -m llm.main --workdir=...)?')
  numbers = files.read_json(summary)
  for results in read_evals(workdir, numbers.get('steps')).values():
    numbers.update(results)
  return numbers


def read_evals(workdir: Path, steps: int | None) -> dict[str, dict]:
  """eval/<suite>.json of a run, by suite. Each must be of the run's last checkpoint (`steps`, where
  known): a suite evaluated before the run trained on would stand beside the newer numbers."""
  evals = {}
  for path in sorted((workdir / 'eval').glob('*.json')):
    results = files.read_json(path, f'evaluate again: python -m llm.eval --workdir={workdir} --suite={path.stem}')
    if steps is not None and results.get('step', steps) != steps:
      raise ValueError(f'{path} is of step {results["step"]}, the run of step {steps}: evaluate it again '
                       f'(python -m llm.eval --workdir={workdir} --suite={path.stem})')
    evals[path.stem] = results
  return evals


def parse_group(text: str, flag: str = '--group') -> tuple[str, list[Path]]:
  """(NAME, runs) of the flag's NAME=RUN[,RUN...]."""
  name, sep, runs = text.partition('=')
  if not sep or not name.strip() or not runs.strip():
    raise ValueError(f'{flag}={text!r}: write NAME=RUN[,RUN...], e.g. {flag}="baseline=runs/s0,runs/s1"')
  return name.strip(), [Path(r) for r in runs.split(',') if r]


def describe(values: list[float]) -> dict:
  """{'values', 'defined', 'mean', 'std', 'min', 'max'}: the statistics over the defined (not NaN)
  values, NaN where none is."""
  defined = [v for v in values if not math.isnan(v)]
  nan = float('nan')
  return {'values': values, 'defined': len(defined), 'mean': statistics.fmean(defined) if defined else nan,
          'std': statistics.stdev(defined) if len(defined) > 1 else (0.0 if defined else nan),
          'min': min(defined, default=nan), 'max': max(defined, default=nan)}


def aggregate(groups: dict[str, list[Path]], keys: list[str]) -> dict:
  """{group: {key: describe(values)}}, values in run order."""
  out = {}
  for name, runs in groups.items():
    numbers = [run_numbers(r) for r in runs]
    out[name] = {}
    for key in keys:
      missing = [str(r) for r, n in zip(runs, numbers) if not isinstance(n.get(key), (int, float))]
      if missing:
        raise ValueError(f'group {name!r}: {key!r} is not a number in {", ".join(missing)}; '
                         'evaluate those runs first (python -m llm.eval) or drop the key')
      out[name][key] = describe([float(n[key]) for n in numbers])
  return out


def table(stats: dict, groups: dict[str, list[Path]], keys: list[str]) -> str:
  pct = lambda x: f'{100 * x:.1f}'
  looks_like_rate = lambda key: (('acc' in key or 'rate' in key or 'prob' in key)
                                 and all(0 <= v <= 1 for g in stats.values() for v in g[key]['values']
                                         if not math.isnan(v)))
  unit = {k: pct if looks_like_rate(k) else (lambda x: f'{x:.4g}') for k in keys}
  lines = ['| group | runs | ' + ' | '.join(f'{k}{" (%)" if unit[k] is pct else ""}: mean ± std [min, max]'
                                              for k in keys) + ' |',
           '|---|---|' + '---|' * len(keys)]
  for name, by_key in stats.items():
    cells = [f'{unit[k](s["mean"])} ± {unit[k](s["std"])} [{unit[k](s["min"])}, {unit[k](s["max"])}]'
             + (f' ({s["defined"]} of {len(s["values"])} defined)' if s['defined'] < len(s['values']) else '')
             for k, s in by_key.items()]
    lines.append(f'| {name} | {len(groups[name])} | ' + ' | '.join(cells) + ' |')
  lines += ['', '| group | run | ' + ' | '.join(keys) + ' |', '|---|---|' + '---|' * len(keys)]
  for name, runs in groups.items():
    for i, run in enumerate(runs):
      lines.append(f'| {name} | {run} | ' + ' | '.join(unit[k](stats[name][k]['values'][i]) for k in keys) + ' |')
  return '\n'.join(lines) + '\n'


def plot(stats: dict, key: str, path: Path) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(stats), 3.6))
  for i, (name, by_key) in enumerate(stats.items()):
    s = by_key[key]
    ax.bar(i, s['mean'], color='#9ecae1', width=0.6)
    ax.errorbar(i, s['mean'], yerr=s['std'], color='k', capsize=4)
    ax.scatter([i] * len(s['values']), s['values'], color='#08519c', zorder=3, s=14)
  ax.set_xticks(range(len(stats)), list(stats), rotation=20, ha='right', fontsize=8)
  ax.set_ylabel(key)
  ax.set_title(f'{key}: each seed, mean ± std', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  f = flags.FLAGS
  groups = dict(parse_group(g) for g in f.group)
  keys = [k for k in f.keys.split(',') if k]
  if not groups or not keys:
    raise app.UsageError('give at least one --group=NAME=RUN,... and --keys=KEY,...')
  out = files.check_writable(f.out) if f.out else None  # before the table is printed, not after
  stats = aggregate(groups, keys)
  text = table(stats, groups, keys)
  print(text)
  if out:
    (out / 'table.md').write_text(text)
    (out / 'stats.json').write_text(json.dumps(stats, indent=1) + '\n')
    plot(stats, keys[0], out / f'{keys[0]}.png')


if __name__ == '__main__':
  flags.DEFINE_multi_string('group', [], 'NAME=RUN[,RUN...]: one run per seed')
  flags.DEFINE_string('keys', '', 'comma-separated numbers to aggregate (summary.json and eval/*.json keys)')
  flags.DEFINE_string('out', '', 'folder for table.md, stats.json and <first key>.png (optional)')

  cli.run(main, 'llm.seeds')
