"""The reward hacking study's report: reward model accuracies, and gold and proxy against
d = sqrt(KL) for best-of-n and RL, with Gao et al.'s forms fitted to each gold curve.

    python -m llm.rl.hacking_report --rm=runs/rm_gold_1k,runs/rm_gold_4k \
        --bon=results/reward_hacking/bon_1k.json,results/reward_hacking/bon_4k.json \
        --rl=runs/rlhf_4k_b0.02,runs/rlhf_4k_b0 --out=results/reward_hacking

writes OUT/table.md, OUT/fits.json, OUT/bon.png and OUT/rl.png. Gold is taken relative to the
starting policy's (n = 1; the RL run's step 0), as the forms assume R(0) = 0. An RL run moves back
and forth in KL, so the table also gives its course by step: gold's best before the hacking
monitor first fired, the lowest gold after, and gold and proxy at the end.
"""
import json
import math
from pathlib import Path

from absl import flags
import numpy as np

from llm import cli, files
from llm.data import sources
from llm.rl import hacking


def bon_curve(path: Path) -> dict:
  data = files.read_json(path)
  rows = data.get('curve') if isinstance(data, dict) else None
  if not isinstance(rows, list) or not all(isinstance(r, dict) and {'d', 'gold', 'proxy'} <= r.keys() for r in rows):
    raise ValueError(f'--bon={path} holds no best-of-n curve (a "curve" of rows with d, gold and proxy): give the '
                     'JSON files python -m llm.rl.best_of_n --out=FILE writes')
  return {'name': Path(path).stem, 'd': [r['d'] for r in rows], 'gold': [r['gold'] for r in rows],
          'proxy': [r['proxy'] for r in rows]}


def rl_curve(workdir: Path) -> dict:
  """Held-out eval points of a task=rlhf run, in step order."""
  rows = list(sources.read_jsonl(Path(workdir) / 'metrics.jsonl', last_line_may_be_cut=True))
  by_step = {r['step']: r for r in rows if 'rlhf_gold' in r}  # a step evaluated again after a resume: the last
  points = [by_step[s] for s in sorted(by_step)]
  if not points or points[0]['step'] != 0:
    raise ValueError(f'{workdir}: no held-out evaluation at step 0 (train.eval_at_start) to measure gold from')
  return {'name': Path(workdir).name, 'steps': [p['step'] for p in points], 'd': [p['rlhf_d'] for p in points],
          'gold': [p['rlhf_gold'] for p in points], 'proxy': [p['rlhf_proxy'] for p in points],
          'hacking_steps': [p['step'] for p in points if p.get('rlhf_hacking')]}


def course(curve: dict) -> dict:
  """An RL run's course in a few numbers: gold's best before the monitor first fired (the peak
  that hacking then passes), the lowest gold after it, and gold and proxy at the end."""
  first = curve['hacking_steps'][0] if curve['hacking_steps'] else math.inf
  before = [i for i, s in enumerate(curve['steps']) if s < first]
  peak = max(before, key=lambda i: curve['gold'][i])
  after = [i for i, s in enumerate(curve['steps']) if s >= first]
  return {'peak_step': curve['steps'][peak], 'peak_kl': curve['d'][peak] ** 2, 'peak_gold': curve['gold'][peak],
          'first_hacking_step': None if first == math.inf else first,
          'lowest_gold_after': min(curve['gold'][i] for i in after) if after else None,
          'end_gold': curve['gold'][-1], 'start_proxy': curve['proxy'][0], 'end_proxy': curve['proxy'][-1],
          'max_kl': max(curve['d']) ** 2}


def fitted(form: str, curve: dict) -> dict:
  d, gold = np.asarray(curve['d']), np.asarray(curve['gold']) - curve['gold'][0]
  try:
    f = hacking.fit(form, d, gold)
  except RuntimeError as e:  # scipy found no fit: reported, not fatal
    return {'error': str(e)}
  best = int(np.argmax(curve['gold']))
  return {'alpha': f.alpha, 'beta': f.beta, 'fit_peak_d': f.peak_d, 'fit_peak_kl': f.peak_d ** 2, 'rmse': f.rmse,
          'measured_peak_d': float(d[best]), 'measured_peak_kl': float(d[best] ** 2),
          'peaks_inside': bool(0 < best < len(d) - 1), 'max_d': float(d.max())}


def plot(curves: list[dict], form: str, path: Path):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  f = {'bon': hacking.r_bon, 'rl': hacking.r_rl}[form]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, c in enumerate(curves):
    color = f'C{i}'
    ax.plot(c['d'], np.asarray(c['gold']) - c['gold'][0], marker='o', color=color, label=f"{c['name']} gold")
    ax.plot(c['d'], np.asarray(c['proxy']) - c['proxy'][0], ls=':', marker='.', color=color, label=f"{c['name']} proxy")
    if 'alpha' in c['fit']:
      grid = np.linspace(1e-3, max(c['d']), 100)
      ax.plot(grid, f(grid, c['fit']['alpha'], c['fit']['beta']), ls='--', color=color, alpha=0.6)
  ax.set_xlabel('d = sqrt(KL(pi || pi_init))')
  ax.set_ylabel('reward - reward of the initial policy')
  ax.set_title({'bon': 'best-of-n (dashed: d (alpha - beta d))', 'rl': 'RL (dashed: d (alpha - beta log d))'}[form])
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def rm_summary(run: Path) -> dict:
  """A task=reward_model run's summary.json."""
  s = files.read_json(Path(run) / 'summary.json')
  missing = [k for k in ('rm_train_pairs', 'rm_val_accuracy', 'rm_val_length_baseline') if k not in s]
  if missing:
    raise ValueError(f'--rm={run} is not a reward model run: its summary.json has no {", ".join(missing)}; give '
                     'task=reward_model runs (python -m llm.main --config=configs/reward_model_*.py)')
  return s


def table(rms: list[Path], bon: list[dict], rl: list[dict]) -> str:
  lines = ['| reward model | pairs | held-out accuracy | length-only baseline | held-out pairs, training topics '
           '(baseline) |', '|---|---|---|---|---|']
  for run in rms:
    s = rm_summary(run)
    seen = (f"{s['rm_val_seen_topics_accuracy']:.3f} ({s['rm_val_seen_topics_length_baseline']:.3f})"
            if 'rm_val_seen_topics_accuracy' in s else '')  # gold runs only
    lines.append(f"| {Path(run).name} | {s['rm_train_pairs']} | {s['rm_val_accuracy']:.3f} | "
                 f"{s['rm_val_length_baseline']:.3f} | {seen} |")
  for title, curves in (('best-of-n', bon), ('RL', rl)):
    lines += ['', f'| {title} | alpha | beta | fitted peak KL | measured peak KL | peaks inside | max KL | rmse |',
              '|---|---|---|---|---|---|---|---|']
    for c in curves:
      f = c['fit']
      if 'alpha' not in f:
        lines.append(f"| {c['name']} | no fit: {f['error']} | | | | | | |")
        continue
      lines.append(f"| {c['name']} | {f['alpha']:.3f} | {f['beta']:.3f} | {f['fit_peak_kl']:.3g} | "
                   f"{f['measured_peak_kl']:.3g} | {'yes' if f['peaks_inside'] else 'no'} | {f['max_d'] ** 2:.3g} | "
                   f"{f['rmse']:.3f} |")
  lines += ['', '| RL | gold at start | best gold before the monitor fires (step, KL) | monitor first fires | '
            'lowest gold after | gold at end | proxy start -> end | max KL |', '|---|---|---|---|---|---|---|---|']
  for c in rl:
    k = course(c)
    fmt = lambda x: '-' if x is None else f'{x:.3f}'
    lines.append(f"| {c['name']} | {c['gold'][0]:.3f} | {k['peak_gold']:.3f} (step {k['peak_step']}, KL "
                 f"{k['peak_kl']:.2f}) | {'never' if k['first_hacking_step'] is None else 'step %d' % k['first_hacking_step']} | "
                 f"{fmt(k['lowest_gold_after'])} | {k['end_gold']:.3f} | {k['start_proxy']:.2f} -> {k['end_proxy']:.2f} | "
                 f"{k['max_kl']:.3g} |")
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  f = flags.FLAGS
  split = lambda s: [x for x in s.split(',') if x]
  bon = [dict(c, fit=fitted('bon', c)) for c in map(bon_curve, split(f.bon))]
  rl = [dict(c, fit=fitted('rl', c)) for c in map(rl_curve, split(f.rl))]
  text = table(split(f.rm), bon, rl)
  print(text)
  out = Path(f.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / 'table.md').write_text(text)
  (out / 'fits.json').write_text(json.dumps({'bon': bon, 'rl': rl}, indent=1) + '\n')
  for curves, form in ((bon, 'bon'), (rl, 'rl')):
    if curves:
      plot(curves, form, out / f'{form}.png')
  print(f'wrote the report to {out}')


if __name__ == '__main__':
  flags.DEFINE_string('rm', '', 'comma-separated task=reward_model runs')
  flags.DEFINE_string('bon', '', 'comma-separated llm.rl.best_of_n JSON files')
  flags.DEFINE_string('rl', '', 'comma-separated task=rlhf runs')
  # No default: one left out would overwrite the committed study in results/reward_hacking.
  flags.DEFINE_string('out', None, 'folder for table.md, fits.json and the plots', required=True)

  cli.run(main, 'llm.rl.hacking_report')
