"""Pretraining text replayed during SFT: windows of the base run's own training stream mixed among
the packed conversations, the loss on every token as in pretraining, so that fine-tuning keeps what
the base learnt from that text instead of wearing it away (InstructGPT's pretraining mix, arXiv
2203.02155 section 3.5, applied to SFT).

config.sft.replay is the number of replay windows per conversation window (0.5: a third of every
epoch's windows are the base's text). The text is the base run's (config.init_from) training split,
prepared exactly as that run prepared it (its data config, tokenizer and token cache), so replay
repeats documents the base already saw and never adds new ones: every document's share of what the
model has read stays as it was (the honesty experiment's exposure buckets depend on that).
"""
from pathlib import Path

from absl import logging
import numpy as np

from llm import inference, tokenizer as tokenizer_lib
from llm.data import pipeline, prepare


def base_stream(base: Path, cache_dir: Path) -> np.ndarray:
  """The training token stream ([bos] + document tokens, ...) of the pretraining run base."""
  config = inference.read_config(base)
  if config.get('task', 'pretrain') != 'pretrain':
    raise ValueError(f'sft.replay replays the pretraining text of init_from, but {base} is a {config.task!r} run; '
                     'start SFT from a pretraining run or set --config.sft.replay=0')
  config.tokenizer.path = str(tokenizer_lib.run_file(base))  # the ids the base (and so this SFT run) uses
  return prepare(config, cache_dir).train_tokens


def windows(tokens: np.ndarray, count: int, seq_len: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """count windows of seq_len + 1 tokens of the stream, each at a multiple of seq_len as pretraining
  reads them, in seeded passes over the stream (no window twice before every window once), as (windows_NxW, mask_NxW,
  segments_NxW) for pipeline.masked_windows_dataset: mask 1 on every token, one segment per window
  (pretraining windows attend across their documents too)."""
  available = pipeline.num_windows(len(tokens), seq_len)
  if not available:
    raise ValueError(f'the base run\'s training text ({len(tokens)} tokens) is shorter than one window of '
                     f'seq_len + 1 = {seq_len + 1}; lower train.seq_len or set --config.sft.replay=0')
  rng = np.random.default_rng(seed)
  ids = np.concatenate([rng.permutation(available) for _ in range(-(-count // available))])[:count]
  windows_NxW = np.stack([tokens[i * seq_len:(i + 1) * seq_len + 1] for i in ids]).astype(np.int32)
  return windows_NxW, np.ones_like(windows_NxW, np.int8), np.ones_like(windows_NxW, np.int32)


def mix(packed: tuple[np.ndarray, np.ndarray, np.ndarray], base: Path, weight: float, seq_len: int, seed: int,
        cache_dir: Path) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], int]:
  """packed conversation (windows, mask, segments) with round(weight x their count) replay windows of
  base's text appended (the dataset shuffles them in), and that count."""
  if weight < 0:
    raise ValueError(f'sft.replay={weight} must be >= 0 (replay windows per conversation window)')
  count = round(weight * len(packed[0]))
  if not count:
    return packed, 0
  replayed = windows(base_stream(base, cache_dir), count, seq_len, seed)
  logging.info('sft: %d windows of %s\'s pretraining text replayed beside %d conversation windows', count, base,
               len(packed[0]))
  return tuple(np.concatenate([a, b.astype(a.dtype)]) for a, b in zip(packed, replayed)), count
