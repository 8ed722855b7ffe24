"""GSM8K, grade-school math word problems: reading the shared files and parsing their solutions.

Each line of gsm8k/{train,test}.jsonl is {"question": ..., "answer": ...}. The answer is a worked
solution that ends with the final answer on a line of its own; every calculator step carries an
annotation '<<expression=result>>', and the prose repeats the result right after it:

    Natalia sold 48/2 = <<48/2=24>>24 clips in May. ... #### 72

SFT turns a solution into a tool-using conversation (conversations.gsm8k_conversation); GRPO
keeps the question and the final answer (rl.tasks.GSM8KTask). Both read the files through read().
"""
import dataclasses
import math
import re
from pathlib import Path
from typing import Iterator

from llm.data import sources

FOLDER = 'gsm8k'  # under the data dir: {split}.jsonl
SPLITS = ('train', 'test')

_ANNOTATION = re.compile(r'<<(.*?)>>')
# The number a solution repeats right after an annotation ('<<48/2=24>>24'), maybe with commas.
_REPEATED_NUMBER = re.compile(r'-?(?:\d[\d,]*)?\.?\d+')
# 'x' between operands means times in GSM8K's prose ('0.2 x 50'); a calculator wants '*'.
_TIMES_X = re.compile(r'(?<=[\d)\s])[x\u00d7](?=[\s\d(])')


@dataclasses.dataclass(frozen=True)
class Item:
  question: str  # the word problem, stripped
  solution: str  # the worked steps before '####', annotations and all
  final_answer: str  # what follows '####', without commas: '1,080' -> '1080'


@dataclasses.dataclass(frozen=True)
class Annotation:
  expression: str  # what the step computes, 'x' for times written '*': '0.2 * 50'
  result: str  # the result the annotation states: '10'
  start: int  # where '<<' starts in the solution
  end: int  # past the number the prose repeats after '>>' (just past '>>' when it repeats none)


def same_number(a: str, b: str) -> bool:
  """Whether two numerals are the same number ('24' and '24.0'); False when either is none."""
  try:
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
  except ValueError:  # e.g. a calculator's 'error: ...', or an annotation that is no number
    return False


def parse(question: str, answer: str) -> Item | None:
  """An item from a record's two fields; None when the answer has no final '#### N' line."""
  solution, marker, final = answer.rpartition('####')
  if not marker:
    return None
  return Item(question.strip(), solution, final.strip().replace(',', ''))


def annotations(solution: str) -> list[Annotation] | None:
  """The solution's calculator steps in order; None when one has no '=' (so states no result)."""
  steps = []
  for match in _ANNOTATION.finditer(solution):
    expression, equals, result = match.group(1).rpartition('=')
    if not equals:
      return None
    end = match.end()
    repeated = _REPEATED_NUMBER.match(solution, end)
    if repeated and same_number(repeated.group().replace(',', ''), result):
      end = repeated.end()
    steps.append(Annotation(_TIMES_X.sub('*', expression.strip()), result, match.start(), end))
  return steps


def read(data_dir: Path, split: str) -> Iterator[Item]:
  """The items of gsm8k/{split}.jsonl under data_dir, in file order."""
  if split not in SPLITS:
    raise ValueError(f'GSM8K split {split!r} is unknown; use one of {SPLITS}')
  path = sources.require(Path(data_dir) / FOLDER / f'{split}.jsonl', f'the GSM8K {split} split')
  for number, record in enumerate(sources.read_jsonl(path), 1):
    question, answer = record.get('question'), record.get('answer')
    item = parse(question, answer) if isinstance(question, str) and isinstance(answer, str) else None
    if item is None:
      raise ValueError(f'{path}: record {number} is no GSM8K item (it needs a string question '
                       "and an answer ending in '#### N'); restore the file from the shared data")
    yield item
