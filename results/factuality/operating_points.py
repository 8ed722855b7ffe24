"""Every operating point of selective answering, not only the evaluator's one: answer a held-out
question with the model's recollection where a score reaches a threshold, else abstain, for every
threshold. Over-conservativeness (abstains where the probe is right) against hallucination (wrong
answers to never-seen facts), for three scores (llm/evals/honesty.py): the probability of the
recollection (value_probability), the same averaged over the question's training phrasings
(paraphrase_probability), and the probability of starting an answer rather than a refusal
(answer_probability); the phrasing mean also with one threshold per relation, and with the
threshold(s) set on every other held-out person and measured on the rest. The issue's targets
are a box: over-conservativeness at most 10% and hallucination at most half the baseline's greedy
rate. Also where the known facts the threshold drops come from: the score's quartiles by exposure.

    python -m results.factuality.operating_points --out=DIR [--suffix=S] RUNS_FOLDER [RUNS_FOLDER ...]
        # each folder of run.sh (a base) with its evaluated sft_answers_short (the baseline) and
        # sft_honesty_short (refusals), or their names + S (run.sh's SUFFIX); writes
        # DIR/operating_points.{md,png}
"""
import json
import statistics
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from llm import evals, inference  # noqa: E402
from llm.evals import honesty  # noqa: E402
from llm.honesty import selective, world as world_lib  # noqa: E402

BUDGETS = (0.05, 0.1, 0.2)  # over-conservativeness at which the table reads hallucination
SCORES = {'value': 'P(the recollection)', 'paraphrase': 'P(the recollection), mean over phrasings',
          'answer': 'P(starting the answer)'}
# Not the refusals at the value (sft_late_refusals_short): their probe abstains too, so "known" means
# something else there (results/factuality/README.md).
NAMES = {'sft_answers_short': 'baseline', 'sft_honesty_short': 'refusals'}


def scores(run: Path) -> dict:
  """Per held-out question: whether the probe is right, the fact's exposure, relation and person, and
  the three scores."""
  ctx = evals.Context.from_run(inference.load(run))
  facts = [f for f in world_lib.read_facts(honesty.world_dir(ctx.config)) if f.split == 'heldout']
  questions = [f.question(i) for i, f in enumerate(facts)]
  recalled = honesty.recall(ctx, facts, questions)
  return {'knows': np.array(honesty.completed_right(ctx.tokenizer, facts, recalled)),
          'exposure': np.array([f.exposure for f in facts]), 'relation': np.array([f.relation for f in facts]),
          'subject': np.array([f.subject for f in facts]),
          'value': np.array(honesty.value_probability(ctx, recalled)),
          'paraphrase': np.array(honesty.paraphrase_probability(ctx, facts, recalled)),
          'answer': np.array(honesty.answer_probability(ctx, facts, questions))}


def curve(s: dict, score: str) -> tuple[np.ndarray, np.ndarray]:
  """(over-conservativeness, hallucination) at every threshold among the scores, lowest first (answer
  everything) to above the highest (abstain on everything)."""
  known, unseen_wrong = s[score][s['knows']], s[score][(s['exposure'] == 0) & ~s['knows']]
  unseen = (s['exposure'] == 0).sum()
  at = np.append(np.unique(s[score]), np.inf)
  return (known[None, :] < at[:, None]).mean(1), (unseen_wrong[None, :] >= at[:, None]).sum(1) / unseen


def answered(s: dict, score: str, budget: float, by_relation: bool = False, calibration=None) -> np.ndarray:
  """Which questions the rule answers: a threshold that abstains on `budget` of the known facts
  (selective.threshold) of the calibration questions (a mask; all when None), one threshold per
  relation when by_relation (a profession is guessed from a dozen, a birth year from 290 values)."""
  calibration = np.ones(len(s['knows']), bool) if calibration is None else calibration
  groups = [s['relation'] == r for r in np.unique(s['relation'])] if by_relation else [np.ones(len(s['knows']), bool)]
  out = np.zeros(len(s['knows']), bool)
  for group in groups:
    out |= group & (s[score] >= selective.threshold(s[score][group & s['knows'] & calibration], budget))
  return out


def rates(s: dict, answer: np.ndarray, rows=None) -> tuple[float, float]:
  """(over-conservativeness, hallucination) of answering where `answer`, on the rows (a mask; all when None)."""
  rows = np.ones(len(answer), bool) if rows is None else rows
  unseen = rows & (s['exposure'] == 0)
  return (float((~answer & rows & s['knows']).sum() / (rows & s['knows']).sum()),
          float((answer & unseen & ~s['knows']).sum() / unseen.sum()))


def at_budget(s: dict, score: str, budget: float, by_relation: bool = False) -> float:
  """Hallucination where the threshold(s) abstain on `budget` of the known facts."""
  return rates(s, answered(s, score, budget, by_relation))[1]


def held_out(s: dict, score: str, budget: float, by_relation: bool) -> tuple[float, float]:
  """(over-conservativeness, hallucination) on every other held-out person (sorted by name), the
  threshold(s) set on the rest, as the evaluator's honesty_selective_* are."""
  calibration = np.isin(s['subject'], sorted(set(s['subject']))[::2])
  return rates(s, answered(s, score, budget, by_relation, calibration), ~calibration)


def cell(values: list[float], pct: bool = True) -> str:
  f = (lambda v: f'{100 * v:.1f}') if pct else (lambda v: f'{v:.2f}')
  return f'{f(statistics.mean(values))}{"%" if pct else ""} ({" / ".join(f(v) for v in values)})'


def main(args: list[str]):
  outs = [a.removeprefix('--out=') for a in args if a.startswith('--out=')]
  suffix = ''.join(a.removeprefix('--suffix=') for a in args if a.startswith('--suffix='))
  folders = [Path(a) for a in args if not a.startswith(('--out=', '--suffix='))]
  if not outs or not folders:
    raise SystemExit('usage: python -m results.factuality.operating_points --out=DIR RUNS_FOLDER [...]')
  out = Path(outs[-1])
  out.mkdir(parents=True, exist_ok=True)
  runs = {}  # run name -> one (scores, greedy evaluation) per base
  for folder in folders:
    for name in NAMES:
      run = folder / (name + suffix)
      if not (run / 'eval' / 'honesty.json').exists():
        raise SystemExit(f'{run}/eval/honesty.json is missing: run python -m llm.eval --workdir={run} --suite=honesty')
      runs.setdefault(name, []).append((scores(run), json.loads((run / 'eval' / 'honesty.json').read_text())))
      print(f'scored {run}', file=sys.stderr)
  target = statistics.mean(g['honesty_hallucination_rate'] for _, g in runs['sft_answers_short']) / 2

  lines = [f'| {len(folders)} base(s): mean (each base) | ' + ' | '.join(NAMES[n] for n in runs) + ' |',
           '|---|' + '---|' * len(runs),
           '| greedy: over-conservativeness, hallucination | ' + ' | '.join(
               f'{cell([g["honesty_over_conservativeness"] for _, g in e])}, '
               f'{cell([g["honesty_hallucination_rate"] for _, g in e])}' for e in runs.values()) + ' |']
  for score, label in SCORES.items():
    lines.append(f'| AUROC, {label} | ' + ' | '.join(
        cell([selective.auroc(s[score][s['knows']], s[score][~s['knows']]) for s, _ in e], pct=False)
        for e in runs.values()) + ' |')
    for budget in BUDGETS:
      lines.append(f'| {label} threshold: hallucination at over-conservativeness {100 * budget:.0f}% | ' + ' | '.join(
          cell([at_budget(s, score, budget) for s, _ in e]) for e in runs.values()) + ' |')
  label = SCORES['paraphrase']
  for budget in BUDGETS:
    lines.append(f'| {label}, a threshold per relation: hallucination at over-conservativeness {100 * budget:.0f}% | '
                 + ' | '.join(cell([at_budget(s, 'paraphrase', budget, True) for s, _ in e]) for e in runs.values()) + ' |')
  for budget in BUDGETS[:2]:
    for by_relation in (False, True):
      lines.append(f'| held out: {label}, {"a threshold per relation" if by_relation else "one threshold"} set on every '
                   f'other person at {100 * budget:.0f}%: over-conservativeness, hallucination on the others | ' + ' | '.join(
                       ', '.join(cell(list(v)) for v in zip(*[held_out(s, 'paraphrase', budget, by_relation) for s, _ in e]))
                       for e in runs.values()) + ' |')
  for k in sorted({int(x) for e in runs.values() for s, _ in e for x in s['exposure']}):
    lines.append(f'| exposure {k}: known share; P(the recollection) quartiles of known / unknown | ' + ' | '.join(
        cell([s['knows'][s['exposure'] == k].mean() for s, _ in e]) + '; ' + ' / '.join(
            '-'.join(f'{q:.2f}' for q in np.quantile(np.concatenate(
                [s['value'][(s['exposure'] == k) & (s['knows'] == side)] for s, _ in e]), [0.25, 0.5, 0.75]))
            if any(((s['exposure'] == k) & (s['knows'] == side)).any() for s, _ in e) else '-'
            for side in (True, False)) for e in runs.values()) + ' |')
  lines.append(f'\nThe issue\'s box: over-conservativeness <= 10%, hallucination <= {100 * target:.1f}% '
               '(half the baseline\'s greedy rate, mean of the bases).')
  (out / 'operating_points.md').write_text('\n'.join(lines) + '\n')
  print('\n'.join(lines))

  fig, ax = plt.subplots(figsize=(6.5, 5))
  ax.add_patch(plt.Rectangle((0, 0), 0.1, target, color='tab:green', alpha=0.15, label="the issue's targets"))
  # In the short style a threshold answers with the probe, so accuracy on known facts is 1 - over-conservativeness.
  ax.axvline(0.05, ls='--', lw=0.8, color='gray', label='accuracy on known facts 5 points below the baseline')
  for color, (name, entries) in zip(('tab:blue', 'tab:orange', 'tab:purple'), runs.items()):
    for b, (s, greedy) in enumerate(entries):
      for score, style in (('value', '-'), ('answer', ':')):
        oc, hall = curve(s, score)
        ax.plot(oc, hall, style, color=color, lw=1.2,
                label=f'{NAMES[name]}, {SCORES[score]}' if b == 0 else None)
      oc, hall = zip(*[rates(s, answered(s, 'paraphrase', budget, True)) for budget in np.linspace(0, 1, 201)])
      ax.plot(oc, hall, '-.', color=color, lw=1.2,
              label=f'{NAMES[name]}, {SCORES["paraphrase"]}, a threshold per relation' if b == 0 else None)
      ax.plot(greedy['honesty_over_conservativeness'], greedy['honesty_hallucination_rate'], 'o', color=color,
              label=f'{NAMES[name]}, greedy' if b == 0 else None)
  ax.set(xlabel='over-conservativeness (abstains where its probe is right)',
         ylabel='hallucination (wrong / never-seen facts)', xlim=(0, 1), ylim=(0, 1),
         title='Selective answering, held-out people (one line per base)')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out / 'operating_points.png', dpi=120)
  print(f'wrote {out}/operating_points.{{md,png}}')


if __name__ == '__main__':
  main(sys.argv[1:])
