"""HellaSwag, zero-shot: which of four endings continues a context; the ending the model finds
least surprising wins.

- hellaswag_acc: the lowest sum of the ending's token losses;
- hellaswag_acc_norm: the lowest loss per UTF-8 byte of the ending (the standard length
  normalisation, lm-evaluation-harness's acc_norm: per character there, per byte here);
- hellaswag_centered: (acc - 0.25) / 0.75, chance at 0 and perfect at 1, as CORE (DCLM) centres
  its tasks.

The file (../shared/data/hellaswag_val/hellaswag_val_full.txt.bz2) is bzip2 text, six lines an
item: 'activity label: context', the gold ending's index (0-3), then the four endings. Each
row is [bos] + context + ' ' + ending, the ending being the tokens after the context's; a row longer
than the model's context keeps its most recent tokens. An ending longer than the context is scored
on the tokens that fit, per byte over those tokens' bytes; hellaswag_endings_truncated counts them.
"""
import bz2
import dataclasses
from pathlib import Path

import numpy as np

from llm.data import sources

PATH = 'hellaswag_val/hellaswag_val_full.txt.bz2'


@dataclasses.dataclass(frozen=True)
class Item:
  context: str
  endings: tuple[str, ...]
  label: int


def read(path: Path) -> list[Item]:
  path = sources.require(path, 'HellaSwag validation items')
  lines = bz2.decompress(path.read_bytes()).decode('utf-8').split('\n')
  if lines and not lines[-1]:
    lines.pop()
  if len(lines) % 6 or not all(lines[i].strip() in ('0', '1', '2', '3') for i in range(1, len(lines), 6)):
    raise ValueError(f'{path} is not six lines an item (context, gold index 0-3, four endings); '
                     'restore it from the shared data')
  return [Item(lines[i], tuple(lines[i + 2:i + 6]), int(lines[i + 1])) for i in range(0, len(lines), 6)]


def choose(ctx, items: list[Item]) -> tuple[np.ndarray, np.ndarray, int]:
  """(by_sum, by_byte, truncated): the ending each item's lowest summed / per-byte loss picks, and
  how many endings were longer than the context, so only their last tokens were scored."""
  tok = ctx.tokenizer
  # Each row is its whole text encoded at once, the ending its tokens after the context's (as
  # lm-evaluation-harness does): the ending encoded alone as ' ' + ending would carry a second space
  # with a tokenizer that puts one before every text (SentencePiece's dummy prefix, Llama 2's).
  contexts = tok.encode_batch([it.context for it in items])
  wholes = tok.encode_batch([f'{it.context} {e}' for it in items for e in it.endings])
  endings = [whole[len(contexts[k // 4]):] for k, whole in enumerate(wholes)]
  rows = []
  for whole in wholes:
    row = [tok.bos_id] + whole
    rows.append(row[:1] + row[1:][-(ctx.max_len - 1):])
  losses = ctx.score(rows)
  sums = np.array([loss_T[max(len(loss_T) - len(e), 0):].sum() for loss_T, e in zip(losses, endings)])
  # The ending's own bytes, not the space scored before it (lm-evaluation-harness's acc_norm); of
  # an ending whose head fell out of the window, the bytes of the tail that was scored.
  n_bytes = np.array([len(e.encode()) for it in items for e in it.endings])
  cut = [k for k, (loss_T, e) in enumerate(zip(losses, endings)) if len(e) > len(loss_T)]
  if cut:
    token_bytes_V = tok.token_bytes()
    for k in cut:
      n_bytes[k] = token_bytes_V[endings[k][-len(losses[k]):]].sum()
  by_byte = (sums / n_bytes).reshape(len(items), 4).argmin(1)
  return sums.reshape(len(items), 4).argmin(1), by_byte, len(cut)


def evaluate(ctx) -> dict:
  items = read(ctx.data_dir(PATH) / PATH)[:ctx.count(10**9)]
  by_sum, by_byte, truncated = choose(ctx, items)
  labels = np.array([it.label for it in items])
  acc, acc_norm = float((by_sum == labels).mean()), float((by_byte == labels).mean())
  return {'hellaswag_acc': acc, 'hellaswag_acc_norm': acc_norm, 'hellaswag_centered': (acc - 0.25) / 0.75,
          'hellaswag_items': len(items), 'hellaswag_endings_truncated': truncated}
