"""Arithmetic in words the training generator never uses: the calculator test of llm/evals/
arithmetic.py on held-out *phrasings*, as a user would type them ("Tom has 17 apples and buys 25
more"), where arithmetic.py holds out only the numbers. A model that learned to copy operands
from the question passes both; one that learned the generator's templates fails here first.

Keys: phrasing_acc_tool, phrasing_acc_no_tool, phrasing_tool_call_rate, phrasing_copy_acc.
"""
import random

from llm.data import conversations
from llm.evals import arithmetic
from llm.tools import calculator

DEFAULT_COUNT = 100
_SEED_OFFSET = 20_000  # numbers drawn apart from the other held-out sets
# (expression, question): none of these sentences is a template of conversations.arithmetic
# (tests/test_evals.py checks that no question the generator makes matches one).
PHRASINGS = (
    ('{a} + {b}', '{name} has {a} apples and buys {b} more. How many apples does {name} have now?'),
    ('{a} - {b}', 'I had {a} dollars and gave {b} to my sister. How many dollars do I have left?'),
    ('{a} * {b}', 'What do you get if you multiply {a} by {b}?'),
    ('{a} / {b}', 'If {a} cookies are split evenly between {b} friends, how many does each friend get?'),
    ('{a} + {b}', 'Add {a} and {b}.'),
    ('{a} - {b}', 'Subtract {b} from {a}.'),
    ('{a} * {b}', 'A box holds {a} pens. How many pens are there in {b} boxes?'),
    ('{a} + {b}', 'There were {a} people at the park and {b} more arrived. How many people are there?'),
    ('{a} + {b} - {c}', '{name} had {a} cards, won {b} more and then lost {c}. How many cards are left?'),
    ('{a} * {b} - {c}', 'Each of {a} bags holds {b} apples and {c} apples are eaten. How many apples remain?'),
)
_NAMES = ('Tom', 'Anna', 'Raj', 'Chloe', 'Yusuf')  # not the generator's names either


def problems(count: int, seed: int) -> list[tuple[str, str]]:
  """(question, answer) pairs cycling through PHRASINGS on 2- and 3-digit numbers, each answer
  whole and not negative."""
  rng = random.Random(_SEED_OFFSET + seed)
  out = []
  for i in range(count):
    pattern, question = PHRASINGS[i % len(PHRASINGS)]
    digits = 2 + (i // len(PHRASINGS)) % 2
    while True:
      numbers = conversations.numbers_for(rng, pattern, digits)
      answer = calculator(pattern.format(**numbers))
      if not answer.startswith('-'):
        break
    out.append((question.format(**numbers, name=rng.choice(_NAMES)), answer))
  return out


def measure(ctx, count: int) -> dict:
  """The phrasing_* keys over count problems (SFT's end of run asks sft.eval_arithmetic of them)."""
  results = arithmetic.measure(ctx, problems(count, ctx.config.seed))
  return {key.replace('arith_', 'phrasing_'): value for key, value in results.items()}


def evaluate(ctx) -> dict:
  return measure(ctx, ctx.count(DEFAULT_COUNT))
