"""The copying-base study over seeds: each seed's llm.rl.hacking_report folder (copy_base_study.sh's
OUT) in one table, the mean first and each seed after it, and every seed's RL gold and proxy by step
on one plot. Run names differ only in their seed suffix (_sN), which is dropped to line seeds up.

    python -m results.reward_hacking.copy_base_seeds --out=results/reward_hacking/copy_base_seeds \
        results/reward_hacking/copy_base_s0 results/reward_hacking/copy_base_s1
    python -m results.reward_hacking.copy_base_seeds --out=results/reward_hacking/copy_base_seeds_endfix \
        results/reward_hacking/copy_base_s0_endfix results/reward_hacking/copy_base_s1_endfix

writes OUT.md and OUT.png.
"""
import argparse
import json
import re
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from llm.rl.hacking_report import course  # noqa: E402


def unseeded(name: str) -> str:
  """The name without its seed: 'rlhf_copy_1k_b0.02_s1' and a redo's 'rlhf_copy_1k_b0.02_s1_endfix'
  (copy_base_study.sh's TAG) line up with the other seeds'."""
  return re.sub(r'_s\d+(?=$|_)', '', name)


def reward_models(folder: Path) -> dict:
  """The reward-model rows of the report's table.md: name -> (held-out topics, training topics)."""
  rows = {}
  for line in (folder / 'table.md').read_text().splitlines():
    cells = [c.strip() for c in line.strip('|').split('|')]
    if len(cells) == 5 and cells[1].isdigit():  # | name | pairs | accuracy | baseline | seen (baseline) |
      rows[unseeded(cells[0])] = (float(cells[2]), float(cells[4].split()[0]))
  if not rows:
    raise ValueError(f'{folder}/table.md has no reward-model rows; is it llm.rl.hacking_report output?')
  return rows


def per_seed(folder: Path) -> dict:
  fits = json.loads((folder / 'fits.json').read_text())
  return {'rm': reward_models(folder),
          'bon': {unseeded(c['name']): c for c in fits['bon']},
          'rl': {unseeded(c['name']): c for c in fits['rl']}}


def cell(values: list, fmt: str) -> str:
  """Mean (seed 0, seed 1, ...); a missing seed is '-', and the mean is over the present ones."""
  present = [v for v in values if v is not None]
  if not present:
    return '-'
  seeds = ', '.join('-' if v is None else format(v, fmt) for v in values)
  return f'{format(float(np.mean(present)), fmt)} ({seeds})'


def table(seeds: list[dict], names: list[str]) -> str:
  lines = [f"Seeds: {', '.join(names)}. Each cell: the mean, then each seed.", '',
           '| reward model | held-out topics | training topics |', '|---|---|---|']
  for rm in seeds[0]['rm']:
    got = [s['rm'].get(rm) for s in seeds]
    lines.append(f"| {rm} | {cell([g and g[0] for g in got], '.3f')} | {cell([g and g[1] for g in got], '.3f')} |")
  lines += ['', '| best-of-n | gold at n=1 | gold at the largest n | fitted peak KL, each seed | peaks inside |',
            '|---|---|---|---|---|']
  for b in seeds[0]['bon']:
    got = [s['bon'].get(b) for s in seeds]
    inside = ', '.join('-' if g is None else ('yes' if g['fit'].get('peaks_inside') else 'no') for g in got)
    # an extrapolation past the measured range, often far past it: its mean over seeds says nothing
    peaks = ', '.join('-' if g is None or 'fit_peak_kl' not in g['fit'] else f"{g['fit']['fit_peak_kl']:.3g}" for g in got)
    lines.append(f"| {b} | {cell([g and g['gold'][0] for g in got], '.3f')} | "
                 f"{cell([g and g['gold'][-1] for g in got], '.3f')} | "
                 f"{peaks} | {inside} |")
  lines += ['', '| RL | gold at start | best gold | its KL | peaks inside | monitor first fires (step) | gold at end | '
            'gold at end - best | proxy at end | max KL |', '|---|---|---|---|---|---|---|---|---|---|']
  for r in seeds[0]['rl']:
    cs = [s['rl'].get(r) for s in seeds]
    best = [None if c is None else int(np.argmax(c['gold'])) for c in cs]
    ks = [None if c is None else course(c) for c in cs]
    fires = ', '.join('-' if k is None else ('never' if k['first_hacking_step'] is None
                                             else str(k['first_hacking_step'])) for k in ks)
    inside = ', '.join('-' if c is None else ('yes' if c['fit'].get('peaks_inside') else 'no') for c in cs)
    lines.append(f"| {r} | {cell([c and c['gold'][0] for c in cs], '.3f')} | "
                 f"{cell([c and c['gold'][b] for c, b in zip(cs, best)], '.3f')} | "
                 f"{cell([c and c['d'][b] ** 2 for c, b in zip(cs, best)], '.2f')} | {inside} | {fires} | "
                 f"{cell([c and c['gold'][-1] for c in cs], '.3f')} | "
                 f"{cell([c and c['gold'][-1] - c['gold'][b] for c, b in zip(cs, best)], '+.3f')} | "
                 f"{cell([k and k['end_proxy'] for k in ks], '.2f')} | {cell([k and k['max_kl'] for k in ks], '.3g')} |")
  return '\n'.join(lines) + '\n'


def plot(seeds: list[dict], names: list[str], path: Path):
  """Gold and proxy by step (RL moves back and forth in KL; each seed's rl.png has them against d)."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
  for ax, key in zip(axes, ('gold', 'proxy')):
    for i, r in enumerate(seeds[0]['rl']):
      for s, (seed, name) in enumerate(zip(seeds, names)):
        c = seed['rl'].get(r)
        if c is not None:
          ax.plot(c['steps'], np.asarray(c[key]) - c[key][0], color=f'C{i}', ls=['-', '--', ':', '-.'][s % 4],
                  marker='o', ms=3, label=f'{r} ({name})')
    ax.set_xlabel('RL step')
    ax.set_ylabel(f'{key} - {key} of the initial policy')
    ax.set_title(f'{key} reward, RL against each proxy, every seed')
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--out', required=True, help='writes OUT.md and OUT.png')
  p.add_argument('folders', nargs='+', type=Path, help="each seed's hacking_report folder")
  a = p.parse_args()
  for f in a.folders:
    if not (f / 'fits.json').is_file():
      p.error(f'{f} has no fits.json; run results/reward_hacking/copy_base_study.sh with OUT={f} first')
  seeds = [per_seed(f) for f in a.folders]
  names = [f.name for f in a.folders]
  text = table(seeds, names)
  print(text)
  out = Path(a.out)
  out.with_suffix('.md').write_text(text)
  plot(seeds, names, out.with_suffix('.png'))


if __name__ == '__main__':
  main()
