"""Generated conversations that copy numbers exactly: the skill every calculator call needs
(its operands come from the question) and that bases pretrained on a few million tokens lack
(llm/evals/copying.py measures it: they predict a repeated number no better than a fresh one).

    user: Copy the numbers in this sentence, in order: Sam paid $384 for 12 chairs and 57 lamps.
    assistant: 384 12 57

Numbers have 1 to 4 digits, 2 to 6 of them a conversation, in short sentences or bare lists.
"""
import random
from typing import Iterator

_ASKS = ('Copy the numbers in this text, in order: {text}',
         'Repeat these numbers exactly: {text}',
         'Which numbers appear here? {text}',
         'List the numbers, in order: {text}',
         '{text}\nWrite down the numbers above.')
_FRAMES = ('{name} paid ${0} for {1} chairs.', 'A train left at {0} and stopped {1} times.',
           'There are {0} red and {1} blue marbles.', '{name} read {0} pages on day {1}.',
           'Room {0} holds {1} books.', 'The box weighs {0} grams and costs ${1}.')
_NAMES = ('Sam', 'Maria', 'Leo', 'Nina', 'Omar', 'Ada', 'Ben', 'Lily', 'Kofi', 'Mei')


def _number(rng: random.Random) -> str:
  digits = rng.randint(1, 4)
  return str(rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10 ** digits))


def copy_conversation(rng: random.Random) -> list[dict]:
  """One conversation; its answer is the question's numbers in order, space separated."""
  numbers = []
  parts = []
  for _ in range(rng.randint(1, 3)):  # sentences of two numbers, or a bare list
    pair = [_number(rng), _number(rng)]
    numbers += pair
    parts.append(rng.choice(_FRAMES).format(*pair, name=rng.choice(_NAMES)) if rng.random() < 0.6
                 else ', '.join(pair))
  text = ' '.join(parts)
  return [{'role': 'user', 'content': rng.choice(_ASKS).format(text=text)},
          {'role': 'assistant', 'content': ' '.join(numbers)}]


def copy_numbers(data_dir, seed: int) -> Iterator[list[dict]]:
  """Endless."""
  del data_dir
  rng = random.Random(seed)
  while True:
    yield copy_conversation(rng)
