"""Whether a reply states a fact, abstains, or states something else: a normalised match, no judge
model (the truth is known).

Normalisation: lower case; '1,812' -> '1812'; punctuation and hyphens become spaces; the articles
a, an, the are dropped; runs of number words become digits ('one thousand eight hundred and
twelve', 'eighteen twelve' and 'eighteen-twelve' -> '1812'). A reply states the answer when the
answer's normalised words occur in it contiguously ('Miravel' in 'She was born in miravel!').
"""
import re

ARTICLES = frozenset(('a', 'an', 'the'))
_UNITS = ('zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen '
          'seventeen eighteen nineteen').split()
_TENS = {w: 10 * i for i, w in enumerate('twenty thirty forty fifty sixty seventy eighty ninety'.split(), 2)}
_SMALL = {**{w: i for i, w in enumerate(_UNITS)}, **_TENS}
_SCALES = {'hundred': 100, 'thousand': 1000}
_ABSTAIN = re.compile(r"\b(i don't know|i do not know|i'm not sure|i am not sure|no idea|i can't say|i cannot say|"
                      r"i don't have (?:that|this) information|i'm unable to say|i have no information)\b")


def _number(words: list[str]) -> list[str]:
  """A run of number words as digits: a cardinal with hundred/thousand, a year read in pairs
  ('eighteen twelve' -> 1812), or one number a pair."""
  if any(w in _SCALES for w in words):
    total, current = 0, 0
    for w in words:
      if w == 'thousand':
        total, current = total + max(current, 1) * 1000, 0
      elif w == 'hundred':
        current = max(current, 1) * 100
      else:
        current += _SMALL[w]
    return [str(total + current)]
  pairs, tens = [], False  # tens: the last pair is a bare tens word, which a unit may complete
  for w in words:
    if tens and _SMALL[w] < 10:
      pairs[-1] += _SMALL[w]
      tens = False
    else:
      pairs.append(_SMALL[w])
      tens = w in _TENS
  if len(pairs) == 2 and pairs[0] >= 10:  # a year: 'nineteen eighty four', 'twenty twenty'
    return [f'{pairs[0]}{pairs[1]:02d}']
  return [str(p) for p in pairs]


def normalise(text: str) -> list[str]:
  text = re.sub(r'(?<=\d),(?=\d{3}\b)', '', text.lower().replace('\u2019', "'"))
  words = [w for w in re.split(r'[^a-z0-9]+', text) if w and w not in ARTICLES]
  out, run = [], []
  for w in words + ['']:  # '' ends a last run of number words
    if w in _SMALL or w in _SCALES or (w == 'and' and run and run[-1] in _SCALES):
      run.append(w)
      continue
    if run:
      out += _number([r for r in run if r != 'and'])
      run = []
    out += [w] if w else []
  return out


def states(reply: str, answer: str) -> bool:
  """Whether reply states answer: its normalised words, contiguously."""
  r, a = normalise(reply), normalise(answer)
  return bool(a) and any(r[i:i + len(a)] == a for i in range(len(r) - len(a) + 1))


def abstains(reply: str) -> bool:
  """Whether reply says it does not know ("I don't know ...", "I'm not sure ...")."""
  return bool(_ABSTAIN.search(reply.lower().replace('\u2019', "'")))


def judge(reply: str, answer: str) -> str:
  """'correct' when reply states answer (hedged or not), else 'abstain' when it says it does not know, else
  'wrong'."""
  if states(reply, answer):
    return 'correct'
  return 'abstain' if abstains(reply) else 'wrong'
