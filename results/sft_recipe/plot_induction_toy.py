"""Plots induction_toy.py logs: the second copy's loss against the step, one line a log.

    python results/sft_recipe/plot_induction_toy.py results/sft_recipe/toy_h200/*.log --out=results/sft_recipe/toy_h200/curves.png
"""
import argparse
import re
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument('logs', nargs='+')
ap.add_argument('--out', required=True)
a = ap.parse_args()
fig, ax = plt.subplots(figsize=(7, 4))
for log in a.logs:
  points = [(int(m[1]), float(m[2])) for m in re.finditer(r'step (\d+): second-copy loss ([\d.]+)', Path(log).read_text())]
  ax.plot(*zip(*points), label=Path(log).stem)
ax.axhline(5.54, color='gray', ls=':', label='chance (255 tokens)')
ax.set(xlabel='step', ylabel='second-copy loss (nats)', title='induction toy, pretrain_small shape, 4,096-way head')
ax.legend()
fig.tight_layout()
fig.savefig(a.out, dpi=120)
print(a.out)
