"""Generated conversations that count letters and spell words with the python tool (llm/sandbox):
what a model cannot do in its head, since tokens hide letters, and one line of code does.

    user: How many times does the letter r appear in the word strawberry?
    assistant: <|tool_call|>python: print(" strawberry".count("r"))<|/tool_call|>
               <|tool_result|>3<|/tool_result|>The letter r appears 3 times in strawberry.

The word in the code keeps the space that precedes it in the question (" strawberry"): with it
the word tokenizes exactly as in the question (without it, its first piece changes), so the model
copies tokens instead of re-spelling the word. The space changes no count, and .strip() drops it
for spelling.

Words are the lowercase words of a sample of the Gutenberg books, minus PROBE_WORDS: the words
the evaluation asks about (llm/evals/probes.py) never appear in training, so a probe measures the
skill on words the model has not practised. Half the words are invented instead, the head of one
book word spliced onto the tail of another ("garden" + "lantern" -> "gartern"): with real words
only, a 4M-parameter model learned each training word's spelling in code rather than to copy, and
wrote a held-out word as another one (" necessary" -> " talk", " committee" -> " commissure"; 52%
letter counting with the tool, results/security/tools.md). Invented words are never seen twice,
so copying the question's tokens is the only way to get them right.
"""
import collections
import functools
import random
import re
import string
from pathlib import Path
from typing import Iterator

from llm.data import sources

PROBE_WORDS = ('strawberry', 'banana', 'mississippi', 'bookkeeper', 'committee', 'balloon', 'address',
               'necessary', 'pepper', 'coffee', 'assessment', 'parallel', 'tomorrow', 'occurrence',
               'millennium', 'letter')
BOOKS = 'gutenberg_pd_books'
BOOK_STRIDE = 8  # every 8th book in sorted order: ~50 books, ~13k words, read in about a second
MIN_COUNT = 5  # a word must occur this often in those books (drops typos and rare forms)
_WORD = re.compile(r"(?<![\w'-])[a-z]{3,15}(?![\w'-])")  # lowercase: proper names mostly drop out

_INVENTED_SHARE = 0.5  # of conversations whose word is invented (splice_word) rather than a book word
_COUNT_SHARE = 0.6  # of conversations that count a letter; the others spell a word
_ABSENT_SHARE = 0.15  # of counting questions whose letter is not in the word (answer 0)
_COUNT_QUESTIONS = ('How many times does the letter {letter} appear in the word {word}?',  # the probe's
                    'How many times does {letter} occur in the word {word}?',
                    'Count the letter {letter} in the word {word}.',
                    "How many {letter}'s are there in the word {word}?",
                    'In the word {word}, how many times does the letter {letter} appear?',
                    'how many {letter} in {word}')
_SPELL_QUESTIONS = ('Spell the word {word} letter by letter.',  # the probe's
                    'How do you spell {word}?',
                    'Can you spell the word {word} for me?',
                    'What are the letters of the word {word}, one by one?',
                    'spell {word}')
_LEAD_INS = ('Let me check with Python.', "I'll count with code: letters are hard to see in tokens.",
             'Let me use Python for this.', '')


@functools.cache
def words_from_books(data_dir: Path) -> tuple[str, ...]:
  """Sorted words (3-15 lowercase letters) occurring MIN_COUNT times or more in every
  BOOK_STRIDE-th book of data_dir/gutenberg_pd_books, PROBE_WORDS excluded."""
  folder = sources.require(Path(data_dir) / BOOKS, "source 'python_letters'")
  counts = collections.Counter()
  for path in sorted(folder.rglob('*.txt'))[::BOOK_STRIDE]:
    counts.update(_WORD.findall(sources.strip_gutenberg(path.read_text(encoding='utf-8', errors='replace'))))
  return tuple(sorted(w for w, n in counts.items() if n >= MIN_COUNT and w not in PROBE_WORDS))


def splice_word(rng: random.Random, words: tuple[str, ...]) -> str:
  """The first 2+ letters of one of words followed by the last 2+ letters of another, 4 to 15
  letters long, and never one of PROBE_WORDS ("pepp" + "er" would be one)."""
  while True:
    head, tail = rng.choice(words), rng.choice(words)
    word = head[:rng.randint(2, len(head) - 1)] + tail[rng.randint(1, len(tail) - 2):]
    if 4 <= len(word) <= 15 and word not in PROBE_WORDS:
      return word


def pick_word(rng: random.Random, words: tuple[str, ...]) -> str:
  """A word of words, or with probability _INVENTED_SHARE an invented one (splice_word)."""
  return splice_word(rng, words) if rng.random() < _INVENTED_SHARE else rng.choice(words)


def count_call(word: str, letter: str) -> str:
  return f'python: print(" {word}".count("{letter}"))'


def spell_call(word: str) -> str:
  return f'python: print(*" {word}".strip())'


def letters_conversation(rng: random.Random, word: str) -> list[dict]:
  """One conversation about word: count a letter (with the share of absent letters above) or
  spell it. The tool result is what the call prints (tests run the calls)."""
  if rng.random() < _COUNT_SHARE:
    present = sorted(set(word))
    pool = present if rng.random() >= _ABSENT_SHARE else sorted(set(string.ascii_lowercase) - set(word))
    letter = rng.choice(pool)
    count = word.count(letter)
    question = rng.choice(_COUNT_QUESTIONS).format(letter=letter, word=word)
    call, result = count_call(word, letter), str(count)
    answer = f'The letter {letter} appears {count} time{"" if count == 1 else "s"} in {word}.'
  else:
    question = rng.choice(_SPELL_QUESTIONS).format(word=word)
    call, result = spell_call(word), ' '.join(word)
    answer = f'The word {word} is spelled {result}.'
  parts = [{'type': 'text', 'text': rng.choice(_LEAD_INS)}, {'type': 'tool_call', 'text': call},
           {'type': 'tool_result', 'text': result}, {'type': 'text', 'text': answer}]
  return [{'role': 'user', 'content': question}, {'role': 'assistant', 'content': [p for p in parts if p['text']]}]


def python_letters(data_dir: Path, seed: int) -> Iterator[list[dict]]:
  """Endless: letter counting and spelling with the python tool, over words_from_books and
  words spliced from them."""
  words = words_from_books(Path(data_dir))
  rng = random.Random(seed)
  while True:
    yield letters_conversation(rng, pick_word(rng, words))
