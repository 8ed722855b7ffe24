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

copy_pieces repeats made-up words built from the tokenizer's own pieces, every word-like piece
of the vocabulary equally often, since copying learned on book text stayed token by token: at
2400 and 3600 steps the model still miswrote the three probe words whose tokens no copied
passage held (" necessary", " letter", " to"+"morrow"; results/security/letters.md). The pieces
of the probe words are left out here too, so the probes measure copying of tokens never copied.
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


def probe_pieces(tokenizer) -> frozenset[str]:
  """The pieces the probe words tokenize into, with and without the space before them."""
  return frozenset(tokenizer.id_to_piece(i) for w in letters.PROBE_WORDS for text in (w, ' ' + w)
                   for i in tokenizer.encode(text))


def word_pieces(tokenizer) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(word-initial pieces without their "▁", continuation pieces) of tokenizer's vocabulary:
  ASCII letters only, none of probe_pieces."""
  held_out = probe_pieces(tokenizer)
  pieces = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
  pieces = [p for p in pieces if p not in held_out and p.lstrip('▁').isalpha() and p.lstrip('▁').isascii()]
  return (tuple(p[1:] for p in pieces if p.startswith('▁') and len(p) > 1),
          tuple(p for p in pieces if not p.startswith('▁')))


def pieces_conversation(rng: random.Random, starts: tuple[str, ...], tails: tuple[str, ...]) -> list[dict]:
  """One conversation: 2 to 6 made-up words, each a word-initial piece and 0 to 2 continuations."""
  words = [rng.choice(starts) + ''.join(rng.choice(tails) for _ in range(rng.randint(0, 2)))
           for _ in range(rng.randint(2, 6))]
  passage = ' '.join(words)
  return [{'role': 'user', 'content': rng.choice(_ASKS).format(text=passage)},
          {'role': 'assistant', 'content': passage}]


def copy_pieces(data_dir: Path, seed: int, tokenizer) -> Iterator[list[dict]]:
  """Endless; reads only the tokenizer's vocabulary (data_dir unused). Pieces joined may tokenize
  differently ("c" + "at" -> "cat"); a passage whose tokens hold a probe piece is drawn again (~28%)."""
  del data_dir
  if tokenizer is None:
    raise ValueError("source 'copy_pieces' builds words from the tokenizer's pieces: load_mixture needs tokenizer=")
  held_out = probe_pieces(tokenizer)
  starts, tails = word_pieces(tokenizer)
  rng = random.Random(seed)
  while True:
    conversation = pieces_conversation(rng, starts, tails)
    if not any(tokenizer.id_to_piece(i) in held_out for i in tokenizer.encode(conversation[1]['content'])):
      yield conversation
