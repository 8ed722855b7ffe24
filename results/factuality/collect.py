"""Table and plot of results/factuality/run.sh's runs: the honesty evaluator's rates for the baseline
(every fact answered), refusals and search, each with answers naming the person and short, and
accuracy and abstention by exposure, with what interrogation found the base knows. Given the run
folders of several bases (run.sh with SEED), each cell is the mean over them, each base's value
after it.

    python results/factuality/collect.py [--out=DIR] [--suffix=S] [RUNS ...]
        # RUNS=runs; writes DIR/{table.md,exposure.png} (DIR=results/factuality); S: the runs' names
        # end in it (run.sh's SUFFIX)
"""
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

NAMES = {'sft_answers': 'baseline (no refusals)', 'sft_honesty': 'refusals',
         'sft_answers_short': 'baseline, short answers', 'sft_honesty_short': 'refusals, short answers',
         'sft_late_refusals_short': 'refused at the value, short answers',
         'sft_honesty_search': 'search', 'sft_honesty_search_short': 'search, short answers',
         'sft_honesty_search_replay_short': 'search with world replay, short answers'}
ROWS = (('honesty_acc', 'accuracy, all questions'),
        ('honesty_hallucination_rate', 'hallucination rate (wrong / unseen facts)'),
        ('honesty_prudence', 'prudence (abstains where its probe is wrong)'),
        ('honesty_over_conservativeness', 'over-conservativeness (abstains where its probe is right)'),
        ('honesty_search_opened_rate', 'opens a search instead (asked without the tool)'),
        ('honesty_known_acc', 'accuracy on known facts (probe right)'),
        ('honesty_probe_known_rate', 'facts its probe knows'),
        ('honesty_new_phrasing_known_acc', '... asked in phrasings no training used'),
        ('honesty_reversal_forward_acc', 'reversal: forward accuracy (training phrasings)'),
        ('honesty_reversal_forward_new_phrasing_acc', 'reversal: forward accuracy, phrasings no training used'),
        ('honesty_reversal_backward_acc', 'reversal: backward accuracy (phrasings no training used)'),
        ('honesty_search_unseen_acc', 'with search: accuracy on unseen facts'),
        ('honesty_needless_search_rate', 'with search: needless searches (probe right)'),
        ('honesty_search_query_acc', 'with search: its query names the person (unseen facts it searched)'),
        ('honesty_search_read_acc', 'with search: accuracy on unseen facts, the right search and result given'),
        ('honesty_answer_auroc', 'AUROC, known vs unknown: P(starting the answer)'),
        ('honesty_value_auroc', 'AUROC, known vs unknown: P(the recollection)'),
        ('honesty_selective_acc', 'selective answering (half the people): accuracy, all questions'),
        ('honesty_selective_hallucination_rate', 'selective answering: hallucination rate'),
        ('honesty_selective_over_conservativeness', 'selective answering: over-conservativeness'),
        ('honesty_selective_search_unseen_acc', 'selective search (searches where selective answering abstains): '
                                                'accuracy on unseen facts'),
        ('honesty_selective_search_known_acc', 'selective search: accuracy on known facts'),
        ('honesty_forced_search_unseen_acc', 'every unseen fact searched, its own query: accuracy'))


def evaluation(folder: Path, name: str, suffix: str) -> dict | None:
  path = folder / (name + suffix) / 'eval' / 'honesty.json'
  return json.loads(path.read_text()) if path.exists() else None


def cell(values: list[float], key: str) -> str:
  """The mean, then each base's value: AUROCs as they are, rates in %; '-' for an evaluation made
  before the metric existed."""
  if any(v is None for v in values):
    return '-'
  show = (lambda v: f'{v:.2f}') if key.endswith('_auroc') else (lambda v: f'{100 * v:.1f}')
  mean = show(statistics.mean(values)) + ('' if key.endswith('_auroc') else '%')
  return mean if len(values) == 1 else f'{mean} ({" / ".join(map(show, values))})'


def table(results: dict[str, list[dict]]) -> list[str]:
  """The markdown table's lines: a row per metric, a column per run."""
  # the read-the-result probe by relation, after its total, for the relations the evaluations hold
  read = 'honesty_search_read_acc_'
  by_relation = [(k, '... ' + k.removeprefix(read)) for k in sorted({k for evals in results.values() for r in evals
                                                                    for k in r if k.startswith(read)})]
  at = next(i for i, (key, _) in enumerate(ROWS) if key == 'honesty_search_read_acc') + 1
  lines = ['| | ' + ' | '.join(NAMES[n] for n in results) + ' |', '|---|' + '---|' * len(results)]
  for key, label in (*ROWS[:at], *by_relation, *ROWS[at:]):
    lines.append(f'| {label} | ' + ' | '.join(cell([r.get(key) for r in evals], key) for evals in results.values())
                 + ' |')
  return lines


def shared_exposures(labels: list[dict], results: dict[str, list[dict]]) -> tuple[list[int], list[int]]:
  """The world's exposures that every evaluation reports, and those some evaluation does not: the
  evaluator reports only the exposures its held-out people's facts have, which in a small world
  (--people=20) are not all of the training people's."""
  every = sorted({r['exposure'] for r in labels})
  shared = [k for k in every if all(f'honesty_{m}_exposure_{k}' in r for evals in results.values() for r in evals
                                    for m in ('acc', 'abstain'))]
  return shared, [k for k in every if k not in shared]


def plot_exposure(path: Path, labels: list[dict], results: dict[str, list[dict]], bases: int) -> list[int]:
  """Accuracy and abstention by exposure, for the exposures every evaluation reports; returns
  those left out."""
  buckets, left_out = shared_exposures(labels, results)
  xs = range(len(buckets))
  fig, (acc, abstain) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
  acc.plot(xs, [100 * sum(r['known'] for r in labels if r['exposure'] == k) / sum(r['exposure'] == k for r in labels)
                for k in buckets], 'k:', label='interrogation: known (base, train people)')
  for name, evals in results.items():
    mean = lambda key: statistics.mean(r[key] for r in evals)
    acc.plot(xs, [100 * mean(f'honesty_acc_exposure_{k}') for k in buckets], 'o-', label=NAMES[name])
    abstain.plot(xs, [100 * mean(f'honesty_abstain_exposure_{k}') for k in buckets], 'o-', label=NAMES[name])
  of_bases = f', mean of {bases} bases' if bases > 1 else ''
  for ax, title in ((acc, 'correct answers'), (abstain, '"I don\'t know"')):
    ax.set(xticks=list(xs), xticklabels=[str(k) for k in buckets], xlabel='times the fact was stated in pretraining',
           title=f'{title}, held-out people (%){of_bases}')
  acc.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return left_out


def main(args: list[str]):
  outs = [a.removeprefix('--out=') for a in args if a.startswith('--out=')]
  suffix = ''.join(a.removeprefix('--suffix=') for a in args if a.startswith('--suffix='))
  folders = [Path(p) for p in args if not p.startswith(('--out=', '--suffix='))] or [Path('runs')]
  missing = [str(f) for f in folders if not f.is_dir()]  # '--help' too: never rewrite the table from nothing
  if missing:
    sys.exit(f'collect.py: {", ".join(missing)} is not a folder of runs; '
             'usage: python results/factuality/collect.py [--out=DIR] [--suffix=S] [RUNS ...]')
  # checked before table.md is rewritten, so a folder without its labels leaves the committed pair alone
  unlabelled = [f for f in folders if not (f / 'world' / 'labels.jsonl').is_file()]
  if unlabelled:
    sys.exit(f'collect.py: no {unlabelled[0] / "world" / "labels.jsonl"} (the plot\'s interrogation labels); '
             f'make it with python -m llm.honesty.interrogate --workdir={unlabelled[0] / "pretrain_world"} '
             f'--world={unlabelled[0] / "world"} (or bash results/factuality/run.sh with RUNS={unlabelled[0]})')
  out = Path(outs[-1] if outs else Path(__file__).parent)
  out.mkdir(parents=True, exist_ok=True)
  # {run name: one evaluation per base}, for the runs every base has
  results = {name: evals for name in NAMES
             if all(evals := [evaluation(f, name, suffix) for f in folders])}
  lines = table(results)
  (out / 'table.md').write_text('\n'.join(lines) + '\n')
  print('\n'.join(lines))
  labels = [json.loads(line) for f in folders for line in (f / 'world' / 'labels.jsonl').read_text().splitlines()]
  left_out = plot_exposure(out / 'exposure.png', labels, results, len(folders))
  if left_out:
    print(f'collect.py: exposure.png leaves out exposure {", ".join(map(str, left_out))}: some evaluation\'s '
          'held-out people have no fact seen that often (a small world)', file=sys.stderr)


if __name__ == '__main__':
  main(sys.argv[1:])
