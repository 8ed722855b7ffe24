"""Fitting a prompt into a model's context before generating."""


def fit_prompt(ids: list[int], context: int, max_new_tokens: int) -> tuple[list[int], int, int]:
  """(ids, max_new_tokens, dropped): a prompt that leaves fewer than min(max_new_tokens,
  context // 2) positions free keeps its first token (bos) and its most recent tokens, `dropped`
  tokens fewer; max_new_tokens shrinks to the room left."""
  room = min(max_new_tokens, context // 2)
  dropped = max(len(ids) + room - context, 0)
  if dropped:
    ids = ids[:1] + ids[1 + dropped:]
  return ids, min(max_new_tokens, context - len(ids)), dropped
