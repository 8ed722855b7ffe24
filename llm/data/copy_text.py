"""Generated conversations that repeat a passage of book text exactly: the skill every python
tool call of python_letters needs (the question's word copied into the code, llm/data/letters.py),
practised on every kind of token rather than on words alone.

    user: Repeat this exactly: the old man had gone down to the river
    assistant: the old man had gone down to the river

Trained on python_letters alone, the model copied training words and miswrote held-out ones
(" necessary" -> " fort", results/security/tools.md): the token of a one-token word it never
wrote in code was never an output there. Passages are 3 to 12 consecutive words of the books
python_letters reads, never one holding a probe word (letters.PROBE_WORDS), so the probes still
ask about words the model never wrote.
"""
import functools
import random
import re
from pathlib import Path
from typing import Iterator

from llm.data import letters, sources

WORDS_PER_BOOK = 20_000  # the first words of each book (after the Gutenberg header): ~1M words in all
_ASKS = ('Repeat this exactly: {text}', 'Copy the following text: {text}', 'Say back exactly what I write: {text}',
         '{text}\nRepeat the line above word for word.', 'Echo this: {text}')
_PROBES = frozenset(letters.PROBE_WORDS)


@functools.cache
def book_words(data_dir: Path) -> tuple[str, ...]:
  """The books' words (whitespace-separated, punctuation kept), book after book."""
  folder = sources.require(Path(data_dir) / letters.BOOKS, "source 'copy_text'")
  words = []
  for path in sorted(folder.rglob('*.txt'))[::letters.BOOK_STRIDE]:
    text = sources.strip_gutenberg(path.read_text(encoding='utf-8', errors='replace'))
    words += text.split()[:WORDS_PER_BOOK]
  return tuple(words)


def holds_a_probe_word(passage: str) -> bool:
  return any(w in _PROBES for w in re.findall(r'[a-z]+', passage.lower()))


def copy_conversation(rng: random.Random, words: tuple[str, ...]) -> list[dict]:
  """One conversation: a passage without a probe word, asked back and repeated."""
  while True:
    n = rng.randint(3, 12)
    start = rng.randrange(len(words) - n)
    passage = ' '.join(words[start:start + n])
    if not holds_a_probe_word(passage):
      return [{'role': 'user', 'content': rng.choice(_ASKS).format(text=passage)},
              {'role': 'assistant', 'content': passage}]


def copy_text(data_dir: Path, seed: int) -> Iterator[list[dict]]:
  """Endless."""
  words = book_words(Path(data_dir))
  rng = random.Random(seed)
  while True:
    yield copy_conversation(rng, words)
