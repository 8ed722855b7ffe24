"""The table of copy_base_chain.sh: per base, its copying suite, and the gold reward model trained
on it: held-out accuracy on the training topics, on the pairs whose gold gap is mostly repetition,
and the length-only baseline.

    python results/sft_recipe/copy_base_table.py runs/copy_base
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from results.reward_hacking.errors_by_component import breakdown  # noqa: E402

runs = Path(sys.argv[1])
print('| base | seed | copy_digits_prob | copy_tokens_prob | RM accuracy, training topics | on repetition pairs | length alone |')
print('|---|---|---|---|---|---|---|')
for rm in sorted(runs.glob('rm_*_s*')):
  kind, seed = rm.name.split('_')[1], rm.name.rsplit('_s', 1)[1]
  copying = json.loads((runs / f'base_{kind}_s{seed}' / 'eval' / 'copying.json').read_text())
  summary = json.loads((rm / 'summary.json').read_text())
  _, rows = breakdown(str(rm))
  repetition = [(n, accuracy) for (part, _), (n, accuracy) in rows.items() if part == 'repetition']
  pairs = sum(n for n, _ in repetition)
  on_repetition = sum(n * a for n, a in repetition) / pairs if pairs else float('nan')
  print(f"| {kind} | {seed} | {copying['copy_digits_prob']:.4f} | {copying['copy_tokens_prob']:.4f} | "
        f"{summary['rm_val_seen_topics_accuracy']:.3f} | {on_repetition:.3f} ({pairs} pairs) | "
        f"{summary['rm_val_seen_topics_length_baseline']:.3f} |")
