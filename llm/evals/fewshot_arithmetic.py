"""fewshot_arith_acc: held-out 2- and 3-digit arithmetic word problems (llm/evals/heldout.py),
prompted with three solved examples; right when the first line's last number is the answer."""
from llm.data import conversations
from llm.evals import fewshot, heldout
from llm.evals.context import mean

SHOTS = [('What is 23 + 45?', '68'), ('Compute 12 * 11.', '132'), ('What is 90 - 37?', '53')]
TEMPLATE = 'Question: {q}\nAnswer: {a}'
DEFAULT_COUNT = 200


def accuracy(ctx, problems: list[tuple[str, str]]) -> float:
  lines = fewshot.first_lines(ctx, [fewshot.prompt(SHOTS, q, TEMPLATE) for q, _ in problems], 12)
  return mean(line is not None and conversations.extract_answer(line) == a for line, (_, a) in zip(lines, problems))


def evaluate(ctx) -> dict:
  problems = heldout.arithmetic(ctx.count(DEFAULT_COUNT), ctx.config.seed, heldout.training_questions(ctx.config))
  return {'fewshot_arith_acc': accuracy(ctx, problems)}
