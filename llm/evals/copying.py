"""In-context copying, the ability tool calls rely on: a sequence, a newline, then the same
sequence again. A model with working induction heads predicts the second copy from the first
(Olsson et al. 2022, "In-context learning and induction heads"); a base model that cannot copy
numbers here will not copy a question's operands into a calculator call after SFT either.

- copy_digits_prob: mean probability of each token of the second copy of 24 random 2- and
  3-digit numbers (digits are single tokens, split_digits), its first token left out;
- copy_digits_first_prob: the same on the first copy, where nothing can be copied (the floor);
- copy_tokens_prob: the same on 48 random vocabulary tokens (the classic induction score).
Scored with batched forward passes (Context.score).
"""
import random

import numpy as np

DEFAULT_COUNT = 64  # sequences of each kind
_SEED = 30_000


def _second_copy_prob(ctx, halves: list[list[int]]) -> tuple[float, float]:
  """(mean p of the second copy's tokens after its first, the same on the first copy)."""
  tok = ctx.tokenizer
  newline = tok.encode('\n')
  rows = [[tok.bos_id] + half + newline + half for half in halves]
  second, first = [], []
  for half, loss in zip(halves, ctx.score(rows)):
    p = np.exp(-loss)  # p[i] is the probability of row[i + 1]
    n = len(half)
    second.append(p[-(n - 1):].mean())
    first.append(p[1:n].mean())  # the first copy after its own first token
  return float(np.mean(second)), float(np.mean(first))


def _digit_half(rng: random.Random, tok, budget: int) -> list[int]:
  """Up to 24 random 2- and 3-digit numbers, as many as fit in `budget` tokens."""
  numbers, ids = [], []
  while len(numbers) < 24:
    candidate = numbers + [str(rng.randrange(10, 1000))]
    longer = tok.encode(' '.join(candidate))
    if len(longer) > budget:
      break
    numbers, ids = candidate, longer
  return ids


def evaluate(ctx) -> dict:
  rng = random.Random(_SEED + ctx.config.seed)
  tok = ctx.tokenizer
  count = ctx.count(DEFAULT_COUNT)
  budget = (ctx.max_len - 1 - len(tok.encode('\n'))) // 2  # both copies fit the context
  digits = [_digit_half(rng, tok, budget) for _ in range(count)]
  # Ordinary pieces: special tokens decode to nothing, lone bytes to U+FFFD.
  vocab = [i for i in range(tok.vocab_size) if tok.decode([i]).strip() and '\ufffd' not in tok.decode([i])]
  tokens = [[rng.choice(vocab) for _ in range(min(48, budget))] for _ in range(count)]
  digits_second, digits_first = _second_copy_prob(ctx, digits)
  tokens_second, _ = _second_copy_prob(ctx, tokens)
  return {'copy_digits_prob': digits_second, 'copy_digits_first_prob': digits_first,
          'copy_tokens_prob': tokens_second}
