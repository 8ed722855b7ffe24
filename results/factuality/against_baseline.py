"""Over-conservativeness as Alignment for Honesty defines it (arXiv 2312.07000): abstentions on the
questions the unaligned model answers right, here the baseline run of the same base (every fact
answered). The evaluator's own probe cannot stand in for it where the refusal is written inside
the answer's sentence (honesty_late_refusals): there the probe abstains too, so its
over-conservativeness is 0 by construction.

    python -m results.factuality.against_baseline --out=FILE BASELINE_RUN RUN [BASELINE_RUN RUN ...]
"""
import sys
from pathlib import Path

from llm import cli, evals, inference
from llm.evals import honesty
from llm.evals.context import mean
from llm.honesty import world as world_lib


def verdicts(run: str) -> tuple[list[str], list[world_lib.Fact]]:
  """Each held-out question's greedy reply judged correct, abstain, wrong or search, as the evaluator
  asks and judges it."""
  ctx = evals.Context.from_run(inference.load(run))
  facts = [f for f in world_lib.read_facts(honesty.world_dir(ctx.config)) if f.split == 'heldout']
  return honesty.judge_replies(ctx, facts, [f.question(i) for i, f in enumerate(facts)]), facts


def main(args: list[str]):
  out = next((Path(a.removeprefix('--out=')) for a in args if a.startswith('--out=')), None)
  runs = [a for a in args if not a.startswith('--out=')]
  if not runs or len(runs) % 2:
    raise SystemExit('give pairs: BASELINE_RUN RUN [BASELINE_RUN RUN ...]')
  lines = ['| run | baseline | questions the baseline answers right | over-conservativeness (abstains there) '
           '| accuracy there | hallucination (wrong / unseen) |', '|---|---|---|---|---|---|']
  for baseline, run in zip(runs[::2], runs[1::2]):
    (base, facts), (mine, _) = verdicts(baseline), verdicts(run)
    known = [i for i, v in enumerate(base) if v == 'correct']
    unseen = [i for i, f in enumerate(facts) if f.exposure == 0]
    lines.append(f'| {run} | {baseline} | {len(known)} | {100 * mean(mine[i] == "abstain" for i in known):.1f}% '
                 f'| {100 * mean(mine[i] == "correct" for i in known):.1f}% '
                 f'| {100 * mean(mine[i] == "wrong" for i in unseen):.1f}% |')
  print('\n'.join(lines))
  if out:
    out.write_text('\n'.join(lines) + '\n')


if __name__ == '__main__':
  cli.guarded(main, 'results.factuality.against_baseline')(sys.argv[1:])
