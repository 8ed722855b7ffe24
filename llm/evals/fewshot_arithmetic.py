"""fewshot_arith_acc: held-out 2- and 3-digit arithmetic word problems (llm/evals/heldout.py),
prompted with three solved examples; right when the first line's last number is the answer.
fewshot_arith_fitted counts the prompts that fit the context, the only ones scored."""
from llm.data import conversations
from llm.evals import fewshot, heldout

SHOTS = [('What is 23 + 45?', '68'), ('Compute 12 * 11.', '132'), ('What is 90 - 37?', '53')]
TEMPLATE = 'Question: {q}\nAnswer: {a}'
DEFAULT_COUNT = 200


def answers_right(ctx, problems: list[tuple[str, str]]) -> list[bool | None]:
  """Per problem, whether the first line's last number is its answer; None where the prompt did not fit."""
  lines = fewshot.first_lines(ctx, [fewshot.prompt(SHOTS, q, TEMPLATE) for q, _ in problems], 12)
  return [None if line is None else conversations.extract_answer(line) == a for line, (_, a) in zip(lines, problems)]


def accuracy(ctx, problems: list[tuple[str, str]]) -> float:
  return fewshot.accuracy('fewshot_arith', answers_right(ctx, problems))['fewshot_arith_acc']


def evaluate(ctx) -> dict:
  problems = heldout.arithmetic(ctx.count(DEFAULT_COUNT), ctx.config.seed, heldout.training_questions(ctx.config))
  return fewshot.accuracy('fewshot_arith', answers_right(ctx, problems))
