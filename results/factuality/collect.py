"""Table and plot of results/factuality/run.sh's runs: the honesty evaluator's rates for the baseline
(every fact answered), refusals and search, and accuracy and abstention by exposure, with what
interrogation found the base knows.

    python results/factuality/collect.py [RUNS]      # RUNS=runs; writes results/factuality/{table.md,exposure.png}
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

runs = Path(sys.argv[1] if len(sys.argv) > 1 else 'runs')
out = Path(__file__).parent
NAMES = {'sft_answers': 'baseline (no refusals)', 'sft_honesty': 'refusals', 'sft_honesty_search': 'search'}
ROWS = (('honesty_hallucination_rate', 'hallucination rate (wrong / unseen facts)'),
        ('honesty_prudence', 'prudence (abstains where its probe is wrong)'),
        ('honesty_over_conservativeness', 'over-conservativeness (abstains where its probe is right)'),
        ('honesty_known_acc', 'accuracy on known facts (probe right)'),
        ('honesty_new_phrasing_known_acc', '... asked in phrasings no training used'),
        ('honesty_reversal_forward_acc', 'reversal: forward accuracy'),
        ('honesty_reversal_backward_acc', 'reversal: backward accuracy'),
        ('honesty_search_unseen_acc', 'with search: accuracy on unseen facts'),
        ('honesty_needless_search_rate', 'with search: needless searches (probe right)'))

results = {name: json.loads((runs / name / 'eval' / 'honesty.json').read_text()) for name in NAMES
           if (runs / name / 'eval' / 'honesty.json').exists()}
lines = ['| | ' + ' | '.join(NAMES[n] for n in results) + ' |', '|---|' + '---|' * len(results)]
for key, label in ROWS:
  lines.append(f'| {label} | ' + ' | '.join(f'{100 * r[key]:.1f}%' for r in results.values()) + ' |')
(out / 'table.md').write_text('\n'.join(lines) + '\n')
print('\n'.join(lines))

labels = [json.loads(line) for line in (runs / 'world' / 'labels.jsonl').read_text().splitlines()]
buckets = sorted({r['exposure'] for r in labels})
xs = range(len(buckets))
fig, (acc, abstain) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
acc.plot(xs, [100 * sum(r['known'] for r in labels if r['exposure'] == k) / sum(r['exposure'] == k for r in labels)
              for k in buckets], 'k:', label='interrogation: known (base, train people)')
for name, r in results.items():
  acc.plot(xs, [100 * r[f'honesty_acc_exposure_{k}'] for k in buckets], 'o-', label=NAMES[name])
  abstain.plot(xs, [100 * r[f'honesty_abstain_exposure_{k}'] for k in buckets], 'o-', label=NAMES[name])
for ax, title in ((acc, 'correct answers'), (abstain, '"I don\'t know"')):
  ax.set(xticks=list(xs), xticklabels=[str(k) for k in buckets], xlabel='times the fact was stated in pretraining',
         title=f'{title}, held-out people (%)')
acc.legend(fontsize=8)
fig.tight_layout()
fig.savefig(out / 'exposure.png', dpi=120)
