"""Tasks for RL on verifiable rewards: problems to roll out on, and a verifier for the answers.

A task hands out an endless, seeded stream of training problems, a fixed held-out set that the
training stream never contains, and verify(), which reads the final number of a completion and
compares it with the reference answer. make_task() builds a task by name.

What verify() reads: the assistant's own text, as assistant_text() makes it from generated ids
(text parts joined; tool calls and tool results left out), so a number the calculator returned
counts only once the model has written it itself.
"""
import dataclasses
import fractions
import inspect
import random
import re
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

from llm import chat_template, tools
from llm.data import conversations, gsm8k


@dataclasses.dataclass(frozen=True)
class Problem:
  prompt_messages: list[dict]  # the conversation so far, ending with the user turn
  answer: str  # the reference final answer, normalised as conversations.extract_answer does
  meta: dict  # e.g. source, digits, ops: for logging and per-difficulty metrics


@runtime_checkable
class RLTask(Protocol):
  name: str

  def train_problems(self, seed: int) -> Iterator[Problem]:
    """Endless; the same seed gives the same problems in the same order."""

  def heldout(self, count: int) -> list[Problem]:
    """The first `count` of a fixed held-out set that train_problems never yields."""

  def verify(self, completion_text: str, problem: Problem) -> bool:
    """Whether the completion's final answer is the reference answer."""


# ---------------------------------------------------------------------------------------------
# Verifier
# ---------------------------------------------------------------------------------------------

def answers_match(predicted: str | None, reference: str) -> bool:
  """Whether the last number in `predicted` equals the last number in `reference`, exactly.

  Both go through conversations.extract_answer, so '1,234' matches '1234', '$12.50' matches
  '12.5', '5.0' matches '5', '3/4' matches '0.75', and 'The answer is 42.' matches '42'. No
  tolerance, not even for decimals: every reference is a whole number, and one within a relative
  1e-6 would let 1000000.5 pass for 1000000. None, or text without a number, is never a match.
  """
  guess = conversations.extract_answer(predicted) if predicted is not None else None
  truth = conversations.extract_answer(reference)
  if guess is None or truth is None:
    return False
  return fractions.Fraction(guess) == fractions.Fraction(truth)


def assistant_text(tokenizer, ids: list[int]) -> str:
  """What the model wrote in a generated assistant turn (ids after <|assistant|>): its text
  parts joined, without tool calls or tool results; stops at <|end|>."""
  return ''.join(part['text'] for part in chat_template.parse_assistant(tokenizer, ids)
                 if part['type'] == 'text')


def _user_prompt(question: str) -> list[dict]:
  return [{'role': 'user', 'content': question}]


def question_of(problem: Problem) -> str:
  """The text of the problem's last (user) turn."""
  return problem.prompt_messages[-1]['content']


# ---------------------------------------------------------------------------------------------
# Arithmetic: generated problems of chosen difficulty
# ---------------------------------------------------------------------------------------------

PHRASINGS = ('mixed', 'word', 'plain')
# Seeds of their own, far from the integer seeds of the SFT generator (random.Random(seed)) and
# of llm.evals.heldout.arithmetic (random.Random(10_000 + seed)). A str seed is hashed with
# SHA-512, so these streams are the same on every machine and in every process.
_HELDOUT_SEED = 'rl/arithmetic/heldout'
_TRAIN_SEED = 'rl/arithmetic/train/{seed}'
# Repeats in a row after which the held-out set is judged to have used up the problem space.
_MAX_REPEATS_IN_A_ROW = 10_000
# A plain question writes the operation out between two numbers ('12 + 5', '(3 * 4) - 2',
# '12 divided by 4'); a word problem never does.
_WRITTEN_OUT = re.compile(r'\d\)? (?:[-+*/]|plus|minus|times|divided by) \(?\d')
_THREE_OP_QUESTIONS = ('What is {expression}?', 'Compute {expression}.',
                       'Calculate {expression}.', 'Please work out {expression}.')


def _phrasing(question: str) -> str:
  return 'plain' if _WRITTEN_OUT.search(question) else 'word'


def _three_op_problem(rng: random.Random, digits: int) -> tuple[str, str, str]:
  """(question, expression, answer) like conversations.arithmetic_problem, for three
  operations: plain arithmetic only (there are no three-step story templates), no division."""
  numbers = [rng.randrange(10 ** (digits - 1), 10 ** digits) for _ in range(4)]
  operators = [rng.choice('+-*') for _ in range(3)]
  expression = ' '.join([str(numbers[0])] + [f'{op} {n}' for op, n in zip(operators, numbers[1:])])
  question = rng.choice(_THREE_OP_QUESTIONS).format(expression=expression)
  return question, expression, conversations.calculated(expression)


class ArithmeticTask:
  """Arithmetic problems from conversations.arithmetic_problem, the generator SFT trained on.

  Knobs: digits (allowed operand lengths), ops (allowed numbers of operations, 1 to 3; 3 is
  plain arithmetic only), phrasing ('mixed' as in SFT, about 60% word problems; 'word'; 'plain').
  Each problem draws its digits and ops uniformly from the allowed ones. The held-out set is
  heldout_size distinct problems of the same difficulty, drawn from a seed of its own; the
  training stream skips any problem whose question is in it.
  """
  name = 'arithmetic'

  def __init__(self, digits=(2, 3), ops=(1, 2), phrasing: str = 'mixed',
               heldout_size: int = 500):
    self.digits, self.ops, self.phrasing = tuple(digits), tuple(ops), phrasing
    if not self.digits or min(self.digits) < 1:
      raise ValueError(f'digits={digits}: need one or more operand lengths, each >= 1')
    if not self.ops or not set(self.ops) <= {1, 2, 3}:
      raise ValueError(f'ops={ops}: need one or more numbers of operations, each 1, 2 or 3')
    if phrasing not in PHRASINGS:
      raise ValueError(f'phrasing={phrasing!r}; choose one of {PHRASINGS}')
    longest = tools.MAX_DIGITS // (max(self.ops) + 1)  # a product of every operand stays within the calculator
    if max(self.digits) > longest:
      raise ValueError(f'digits={digits} with ops={ops}: operands of at most {longest} digits keep every '
                       f'answer within the calculator (1e{tools.MAX_DIGITS})')
    if phrasing == 'word' and 3 in self.ops:
      raise ValueError('three-operation problems are plain arithmetic only; drop 3 from ops or '
                       "choose phrasing 'mixed' or 'plain'")
    self._heldout = self._distinct_problems(random.Random(_HELDOUT_SEED), heldout_size)
    self._heldout_questions = {question_of(p) for p in self._heldout}

  def train_problems(self, seed: int) -> Iterator[Problem]:
    rng = random.Random(_TRAIN_SEED.format(seed=seed))
    while True:
      problem = self._draw(rng)
      if question_of(problem) not in self._heldout_questions:
        yield problem

  def heldout(self, count: int) -> list[Problem]:
    if count > len(self._heldout):
      raise ValueError(f'{count} held-out problems asked for, the task holds '
                       f'heldout_size={len(self._heldout)}; raise heldout_size')
    return self._heldout[:count]

  def verify(self, completion_text: str, problem: Problem) -> bool:
    return answers_match(completion_text, problem.answer)

  def _draw(self, rng: random.Random) -> Problem:
    digits, ops = rng.choice(self.digits), rng.choice(self.ops)
    while True:  # redraw until the phrasing is the one asked for (about 2 draws at most)
      if ops == 3:
        question, expression, answer = _three_op_problem(rng, digits)
      else:
        question, expression, answer = conversations.arithmetic_problem(rng, digits, ops)
      phrasing = _phrasing(question)
      if self.phrasing in ('mixed', phrasing):
        break
    meta = dict(source=self.name, digits=digits, ops=ops, phrasing=phrasing,
                expression=expression)
    return Problem(_user_prompt(question), conversations.extract_answer(answer), meta)

  def _distinct_problems(self, rng: random.Random, count: int) -> list[Problem]:
    by_question, repeats = {}, 0
    while len(by_question) < count:
      problem = self._draw(rng)
      question = question_of(problem)
      if question not in by_question:
        by_question[question], repeats = problem, 0
        continue
      repeats += 1
      if repeats > _MAX_REPEATS_IN_A_ROW:
        raise ValueError(f'digits={self.digits}, ops={self.ops}, phrasing={self.phrasing!r} '
                         f'give too few distinct problems for heldout_size={count}; lower it')
    return list(by_question.values())


# ---------------------------------------------------------------------------------------------
# GSM8K: grade-school word problems; train on the train split, hold out the test split
# ---------------------------------------------------------------------------------------------

def _gsm8k_problems(data_dir: Path, split: str) -> list[Problem]:
  return [Problem(_user_prompt(item.question), conversations.extract_answer(item.final_answer),
                  dict(source='gsm8k', split=split, index=index))
          for index, item in enumerate(gsm8k.read(data_dir, split))]


class GSM8KTask:
  """GSM8K questions as user turns (as SFT saw them); the answer is the number after '####'.
  Training shuffles the train split anew each epoch; held out is the test split, in file order
  (the two splits share no question)."""
  name = 'gsm8k'

  def __init__(self, data_dir):
    self._train = _gsm8k_problems(data_dir, 'train')
    self._test = _gsm8k_problems(data_dir, 'test')

  def train_problems(self, seed: int) -> Iterator[Problem]:
    rng = random.Random(seed)
    order = list(range(len(self._train)))
    while True:
      rng.shuffle(order)
      yield from (self._train[i] for i in order)

  def heldout(self, count: int) -> list[Problem]:
    if count > len(self._test):
      raise ValueError(f'{count} held-out problems asked for; GSM8K test has {len(self._test)}')
    return self._test[:count]

  def verify(self, completion_text: str, problem: Problem) -> bool:
    return answers_match(completion_text, problem.answer)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

_TASKS = {'arithmetic': ArithmeticTask, 'gsm8k': GSM8KTask}  # a task that reads data takes data_dir
READS = {'gsm8k': gsm8k.FOLDER}  # what such a task reads under the data dir


def make_task(name: str, data_dir, **knobs) -> RLTask:
  """The task called `name`, built with its knobs (e.g. digits=(2,), ops=(1, 2, 3)): its
  constructor's parameters but data_dir."""
  if name not in _TASKS:
    raise ValueError(f'RL task {name!r} is unknown; choose one of {sorted(_TASKS)}')
  params = inspect.signature(_TASKS[name]).parameters
  takes = [p for p in params if p != 'data_dir']
  unknown = sorted(set(knobs) - set(takes))
  if unknown:  # e.g. arithmetic's task_options left in a config switched to gsm8k
    raise ValueError(f'RL task {name!r} has no knobs {unknown} (grpo.task_options); it takes '
                     f'{takes or "none"}')
  return _TASKS[name](**knobs, **({'data_dir': data_dir} if 'data_dir' in params else {}))
