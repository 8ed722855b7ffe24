"""The talks' demonstrations of what a language model cannot do in its head, one key each
(share right, greedy), with the calculator available (`_tool`) or the python tool (`_python`)
where it could help:

- probe_count_letter, probe_count_letter_python: 'How many times does the letter r appear in
  strawberry?' (tokens hide letters; the calculator cannot count them, python can);
- probe_spell, probe_spell_python: 'Spell the word strawberry letter by letter.' (the letters, in
  order, in the reply's own text). The words are held out of the python_letters SFT source
  (llm/data/letters.py), with and without the tool alike;
- probe_compare_decimals, probe_compare_decimals_tool: 'Which is larger, 9.11 or 9.9?' (the reply's
  last number is the larger one);
- probe_multistep_direct, probe_multistep_steps, probe_multistep_tool: a two-step word problem
  answered at once ('answer with the number only'), step by step, and step by step with the
  calculator ("models need tokens to think").
"""
import random
import re

from llm.data import conversations, letters as letters_data
from llm.evals import heldout
from llm.evals.context import assistant_text, mean

WORDS = letters_data.PROBE_WORDS
DECIMALS = (('9.11', '9.9'), ('3.8', '3.75'), ('2.15', '2.5'), ('7.09', '7.1'), ('0.45', '0.5'), ('12.3', '12.25'),
            ('5.6', '5.55'), ('1.01', '1.1'), ('8.7', '8.65'), ('4.125', '4.2'))
DEFAULT_COUNT = 32
MAX_NEW_TOKENS = 96


def letter_items(count: int) -> list[tuple[str, str]]:
  """(question, count as text): each word with each of its letters, in a fixed order."""
  items = [(f'How many times does the letter {letter} appear in the word {word}?', str(word.count(letter)))
           for word in WORDS for letter in sorted(set(word))]
  random.Random(0).shuffle(items)
  return items[:count]


# A run of single letters, each apart from the next by spaces, commas, hyphens or quotes: a word
# spelled out ('b a n a n a', 'B-A-N-A-N-A', "'b', 'a', ..."). Maximal: it starts at the first such
# letter and takes every one that follows.
_SPELLED_RUN = re.compile(r"(?<![a-z])[a-z](?![a-z])(?:[\s,'\"-]+[a-z](?![a-z]))+")


def spelled(word: str, reply: str) -> bool:
  """Whether the reply spells the word letter by letter: one of its runs of single letters is
  exactly the word (saying the word, or spelling it with letters to spare, is not)."""
  return any(re.sub(r'[^a-z]', '', run) == word for run in _SPELLED_RUN.findall(reply.lower()))


def decimal_items(count: int) -> list[tuple[str, str]]:
  items = []
  for a, b in DECIMALS:
    for first, second in ((a, b), (b, a)):
      items.append((f'Which is larger, {first} or {second}?', max(a, b, key=float)))
  return items[:count]


_NUMBER = r'(\d*\.?\d+)'
_COMPARATIVE = r'(larger|bigger|greater|higher|smaller|less|lower)'
_LARGER = ('larger', 'bigger', 'greater', 'higher')


def chosen_decimal(reply: str, first: str, second: str) -> str | None:
  """Which of the two numbers a reply to 'Which is larger, first or second?' picks: the one after
  'answer is' where it says so; else the one it calls larger ('9.9 is larger than 9.11', 'the
  larger is 9.9'), or the other of the one it calls smaller; else the only one it names. None
  when it names neither, or both without saying which."""
  def candidate(number: str) -> str | None:
    return next((c for c in (first, second) if float(c) == float(number)), None)

  def picked(number: str, comparative: str) -> str | None:
    c = candidate(number)
    return c if c is None or comparative.lower() in _LARGER else {first: second, second: first}[c]

  if m := re.search(r'answer is:?\s*\$?' + _NUMBER, reply, re.I):
    return candidate(m[1])
  if m := re.search(_NUMBER + r'\s+is\s+(?:the\s+)?' + _COMPARATIVE, reply, re.I):
    return picked(m[1], m[2])
  if m := re.search(_COMPARATIVE + r'(?:\s+(?:one|number|value))?\s+is:?\s+' + _NUMBER, reply, re.I):
    return picked(m[2], m[1])
  named = {c for c in map(candidate, re.findall(_NUMBER, reply)) if c}
  return named.pop() if len(named) == 1 else None


def _right(answers: list[str], gold: list[str]) -> float:
  return mean(conversations.extract_answer(a) == conversations.extract_answer(g) for a, g in zip(answers, gold))


def evaluate(ctx) -> dict:
  tok, n = ctx.tokenizer, ctx.count(DEFAULT_COUNT)
  ask = lambda questions, tools=False: [assistant_text(tok, c) for c in ctx.chat(questions, MAX_NEW_TOKENS, tools)]
  out = {}
  letters, words = letter_items(n), WORDS[:n]
  for suffix, tools in (('', False), ('_python', 'python')):
    out[f'probe_count_letter{suffix}'] = _right(ask([q for q, _ in letters], tools), [a for _, a in letters])
    replies = ask([f'Spell the word {w} letter by letter.' for w in words], tools)
    out[f'probe_spell{suffix}'] = mean(spelled(w, a) for w, a in zip(words, replies))
  decimals = decimal_items(n)
  for suffix, tools in (('', False), ('_tool', True)):
    replies = ask([q for q, _ in decimals], tools)
    out[f'probe_compare_decimals{suffix}'] = mean(chosen_decimal(reply, *re.findall(r'\d+\.\d+', q)) == a
                                                  for reply, (q, a) in zip(replies, decimals))
  problems = [(q, a) for q, a in heldout.arithmetic(2 * n, ctx.config.seed, heldout.training_questions(ctx.config))
              if len(re.findall(r'\d+', q)) >= 3][:n]  # two-step: three numbers
  gold = [a for _, a in problems]
  for key, suffix, tools in (('direct', ' Answer with the number only.', False),
                             ('steps', ' Work it out step by step, then give the answer.', False),
                             ('tool', ' Work it out step by step, then give the answer.', True)):
    out[f'probe_multistep_{key}'] = _right(ask([q + suffix for q, _ in problems], tools), gold)
  return out
