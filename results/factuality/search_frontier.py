"""How many needless searches does selective search need to reach the issue's 80% on unseen facts?
The evaluator reports selective search at one threshold (llm/evals/honesty.py, selective_search:
selective answering's, set on half the held-out people). Here every question of the other half is
searched as it would be (the reply opened with a search call; the model's own query, then its reading
of the result), so every threshold on the recollection's probability can be read off: searched below
it, answered from memory (the greedy reply) above it. The curve is read on the measured half itself,
a description of what the model can reach, not a threshold fixed in advance. The threshold fixed in
advance is set on the evaluator's calibration half, searched the same way: the lowest at which its
unseen facts reach the target plus a margin for the other half's sampling (selective.margin; aimed at
the target itself it lands under it half the time), then measured on the other half.

    python -m results.factuality.search_frontier --out=DIR [--run=sft_honesty_search_short] RUNS_FOLDER [...]
        # each folder of run.sh (a base) with its search arm; writes DIR/search_frontier.{md,png}
"""
import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from llm import cli, evals, inference, tools  # noqa: E402
from llm.evals import honesty  # noqa: E402
from llm.evals.context import assistant_text  # noqa: E402
from llm.honesty import selective, verify, world as world_lib  # noqa: E402

TARGET = 0.8  # the accuracy on facts only the search corpus holds


def per_question(run: Path) -> dict:
  """For every held-out question: the recollection's probability, whether the probe knows the fact,
  whether the fact is unseen, whether the greedy reply is right, whether searching is, and whether
  it is in the measured half (the rest set the evaluator's threshold)."""
  ctx = evals.Context.from_run(inference.load(run))
  tok, world = ctx.tokenizer, honesty.world_dir(ctx.config)
  registry = tools.make_registry(search_folder=world / 'search')
  facts = [f for f in world_lib.read_facts(world) if f.split == 'heldout']
  questions = [f.question(i) for i, f in enumerate(facts)]
  verdicts = honesty.judge_replies(ctx, facts, questions)
  recalled = honesty.recall(ctx, facts, questions)
  knows, value_p = honesty.completed_right(tok, facts, recalled), honesty.value_probability(ctx, recalled)
  at, rows = honesty.calibrated_threshold(facts, knows, value_p)
  calls = honesty.own_searches(ctx, questions)
  read = ctx.generate([honesty.searched_for(tok, registry, call, q) for q, call in zip(questions, calls)],
                      honesty.MAX_NEW_TOKENS, temperature=0.0, stop_ids=[tok.special_id('<|end|>'), tok.eos_id])
  return {'threshold': at, 'p': np.array(value_p), 'knows': np.array(knows),
          'unseen': np.array([f.exposure == 0 for f in facts]), 'measured': np.isin(np.arange(len(facts)), rows),
          'memory': np.array([v == 'correct' for v in verdicts]),
          'search': np.array([verify.states(assistant_text(tok, c), f.value) for f, c in zip(facts, read)])}


def half(q: dict, measured: bool) -> dict:
  keep = q['measured'] == measured
  return {k: v[keep] if isinstance(v, np.ndarray) else v for k, v in q.items()}


def curve(q: dict, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per threshold: needless searches (known facts searched), accuracy on unseen and on known facts."""
  below = q['p'][None, :] < thresholds[:, None]
  right = np.where(below, q['search'][None, :], q['memory'][None, :])
  return below[:, q['knows']].mean(1), right[:, q['unseen']].mean(1), right[:, q['knows']].mean(1)


def candidates(q: dict) -> np.ndarray:
  """Every threshold that splits q's questions differently, in increasing order."""
  return np.concatenate([[0.0], np.unique(q['p']), [np.inf]])


def reaching(q: dict, target: float) -> float:
  """The lowest threshold at which searching below it gets q's unseen facts to the target (searching
  everything where none does)."""
  thresholds = candidates(q)
  met = curve(q, thresholds)[1] >= target
  return thresholds[np.argmax(met)] if met.any() else np.inf


def fixed_in_advance(calibration: dict) -> float:
  """The threshold set on the calibration half: the lowest reaching TARGET plus selective.margin on
  its unseen facts, so that the measured half reaches TARGET with probability ~95%."""
  return reaching(calibration, TARGET + selective.margin(TARGET, int(calibration['unseen'].sum())))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--out', required=True)
  ap.add_argument('--run', default='sft_honesty_search_short')
  ap.add_argument('folders', nargs='+')
  a = ap.parse_args()
  out = Path(a.out)
  out.mkdir(parents=True, exist_ok=True)
  lines = ['| base | at the evaluator\'s threshold: needless; unseen; known | every question searched: unseen; known '
           f'| fewest needless searches reaching {TARGET:.0%} on unseen (its known accuracy) '
           f'| threshold set on the calibration half for {TARGET:.0%} and a margin: needless; unseen; known |', '|---|---|---|---|---|']
  for folder in a.folders:
    everyone = per_question(Path(folder) / a.run)
    q = half(everyone, measured=True)
    needless, unseen, known = curve(q, candidates(q))
    at = curve(q, np.array([q['threshold']]))
    reach = [k for k in np.argsort(needless, kind='stable') if unseen[k] >= TARGET]
    met = f'{needless[reach[0]]:.1%} ({known[reach[0]]:.1%})' if reach else 'never'
    fixed = curve(q, np.array([fixed_in_advance(half(everyone, measured=False))]))
    lines.append(f'| {Path(folder).name} | {at[0][0]:.1%}; {at[1][0]:.1%}; {at[2][0]:.1%} | {unseen[-1]:.1%}; '
                 f'{known[-1]:.1%} | {met} | {fixed[0][0]:.1%}; {fixed[1][0]:.1%}; {fixed[2][0]:.1%} |')
    plt.plot(needless, unseen, label=f'{Path(folder).name}: unseen facts')
    plt.plot(needless, known, '--', label=f'{Path(folder).name}: known facts')
    plt.scatter(at[0], at[1], marker='o')
    plt.scatter(fixed[0], fixed[1], marker='x')
  plt.axhline(TARGET, color='grey', lw=0.5)
  plt.xlabel('needless searches (known facts searched)')
  plt.ylabel('accuracy')
  plt.title('selective search: every threshold on the recollection\'s probability')
  plt.legend(fontsize=7)
  plt.savefig(out / 'search_frontier.png', dpi=120)
  (out / 'search_frontier.md').write_text('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  cli.guarded(main, 'results.factuality.search_frontier')()
