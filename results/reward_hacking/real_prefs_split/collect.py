"""The table (table.md) and plot (accuracy.png) of real_prefs_split/run.sh's reward models: held-out
accuracy and the length-only baseline per source, split and seed, from each run's summary.json
(copied here as summaries/NAME.json, so the table rebuilds without the runs).

    python -m results.reward_hacking.real_prefs_split.collect RUNS/rm_real_*   # or no arguments: the copies
"""
import json
import re
import shutil
import sys
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
NAME = re.compile(r'rm_real_(hh|alpaca)_(old|new)_s(\d+)$')


def main(argv):
  folders = [Path(a) for a in argv[1:]]
  bad = [f for f in folders if not NAME.search(f.name) or not (f / 'summary.json').is_file()]
  if bad:
    sys.exit(f'collect: {bad[0]} is not a finished rm_real_SOURCE_SPLIT_sSEED run (no summary.json)')
  (HERE / 'summaries').mkdir(exist_ok=True)
  for f in folders:
    shutil.copyfile(f / 'summary.json', HERE / 'summaries' / f'{f.name}.json')
  rows = []
  for path in sorted((HERE / 'summaries').glob('rm_real_*.json')):
    source, split, seed = NAME.search(path.stem).groups()
    s = json.loads(path.read_text())
    rows.append((source, split, int(seed), s['rm_val_pairs'], s['rm_val_accuracy'], s['rm_val_length_baseline']))
  if not rows:
    sys.exit('collect: no runs given and no summaries/ here; give the rm_real_* run folders')
  lines = ['| source | split | seed | held-out pairs | accuracy | length alone |', '|---|---|---|---|---|---|']
  lines += [f'| {src} | {split} | {seed} | {n} | {acc:.1%} | {length:.1%} |' for src, split, seed, n, acc, length in rows]
  (HERE / 'table.md').write_text('\n'.join(lines) + '\n')
  fig, ax = plt.subplots(figsize=(6, 3.2))
  for i, (src, split, seed, _, acc, length) in enumerate(rows):
    ax.bar(i, acc, color='tab:blue' if split == 'new' else 'tab:gray')
    ax.plot([i - 0.4, i + 0.4], [length, length], color='tab:red')
  ax.set_xticks(range(len(rows)), [f'{r[0]}\n{r[1]} s{r[2]}' for r in rows], fontsize=7)
  ax.set_ylabel('held-out accuracy')
  ax.set_title('reward models, split by pair (old, grey) and by prompt (new, blue); red: length alone', fontsize=8)
  fig.tight_layout()
  fig.savefig(HERE / 'accuracy.png', dpi=120)
  print('\n'.join(lines))


if __name__ == '__main__':
  main(sys.argv)
