"""Letter counting with the python tool on words the model never practised, per run:

    python -m results.security.letters RUN [RUN ...] > results/security/letters.md

- probe: the chat suite's probe_count_letter_python questions, all 83 (each of the 16 held-out
  words of llm/data/letters.py with each of its letters);
- unseen: 150 words of the books python_letters never reads (every 8th book from the second on),
  not in its word list, one letter each, asked the probe's way.
Greedy, the python tool offered. Prints a markdown table, then each run's misses with the call the
model wrote (a miss is almost always a word miscopied into the code).
"""
import collections
import random
import sys
from pathlib import Path

from llm import cli, evals, inference
from llm.data import conversations, letters, sources
from llm.evals import probes
from llm.evals.context import assistant_text, tool_calls

UNSEEN = 150
MAX_NEW_TOKENS = 96


def unseen_items(data_dir: Path) -> list[tuple[str, str]]:
  practised = set(letters.words_from_books(data_dir))
  counts = collections.Counter()
  for path in sorted((data_dir / letters.BOOKS).rglob('*.txt'))[1::letters.BOOK_STRIDE]:
    counts.update(letters._WORD.findall(sources.strip_gutenberg(path.read_text(encoding='utf-8', errors='replace'))))
  words = sorted(w for w, n in counts.items()
                 if n >= letters.MIN_COUNT and len(w) >= 4 and w not in practised and w not in letters.PROBE_WORDS)
  rng = random.Random(0)
  return [(f'How many times does the letter {letter} appear in the word {word}?', str(word.count(letter)))
          for word in rng.sample(words, UNSEEN) for letter in [rng.choice(sorted(set(word)))]]


def measure(workdir: str) -> tuple[dict, list[str]]:
  ctx = evals.Context.from_run(inference.load(workdir))
  scores, misses = {}, []
  for name, items in (('probe', probes.letter_items(1000)), ('unseen', unseen_items(ctx.data_dir()))):
    completions = ctx.chat([q for q, _ in items], MAX_NEW_TOKENS, 'python')
    right = 0
    for (question, answer), completion in zip(items, completions):
      if conversations.extract_answer(assistant_text(ctx.tokenizer, completion)) == answer:
        right += 1
      else:
        misses.append(f'{question.split()[-1][:-1]}: {tool_calls(ctx.tokenizer, completion)[:1]}')
    scores[name] = (right, len(items))
  return scores, misses


def main(workdirs: list[str]):
  if not workdirs:
    raise ValueError('no runs given: python -m results.security.letters RUN [RUN ...] > results/security/letters.md')
  rows, details = [], []
  for workdir in workdirs:
    scores, misses = measure(workdir)
    rows.append(f'| {workdir} | ' + ' | '.join(f'{100 * r / n:.1f}% ({r}/{n})' for r, n in scores.values()) + ' |')
    details += [f'\n{workdir} misses:\n'] + [f'- {m}' for m in misses]
  print('| run | probe words (16) | unseen book words (150) |\n|---|---|---|')
  print('\n'.join(rows + details))


if __name__ == '__main__':
  cli.guarded(main, 'results.security.letters')(sys.argv[1:])
