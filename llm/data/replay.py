"""Pretraining text replayed during SFT: windows of the base run's own training stream mixed among
the packed conversations, the loss on every token as in pretraining, so that fine-tuning keeps what
the base learnt from that text instead of wearing it away (InstructGPT's pretraining mix, arXiv
2203.02155 section 3.5, applied to SFT).

config.sft.replay is the number of replay windows per conversation window (0.5: a third of every
epoch's windows are the base's text). The text is the base run's (config.init_from) training split,
prepared exactly as that run prepared it (its data config, tokenizer and token cache), so replay
repeats documents the base already saw and never adds new ones: every document's share of what the
model has read stays as it was (the honesty experiment's exposure buckets depend on that). For that
each epoch replays the next windows of seeded passes over the whole stream, not the same ones again:
one fixed slice replayed every epoch would raise the share of the documents in it alone.
"""
import dataclasses
import functools
from pathlib import Path

from absl import logging
import numpy as np

from llm import inference, tokenizer as tokenizer_lib
from llm.data import Prepared, pipeline, prepare


def base_text(base: Path, cache_dir: Path) -> Prepared:
  """The pretraining run base's data, prepared as it prepared it: its training token stream
  ([bos] + document tokens, ...) and the fingerprint of the corpus it came from."""
  config = inference.read_config(base)
  if config.get('task', 'pretrain') != 'pretrain':
    raise ValueError(f'sft.replay replays the pretraining text of init_from, but {base} is a {config.task!r} run; '
                     'start SFT from a pretraining run or set --config.sft.replay=0')
  config.tokenizer.path = str(tokenizer_lib.run_file(base))  # the ids the base (and so this SFT run) uses
  return prepare(config, cache_dir)


@functools.lru_cache(maxsize=4)  # an epoch reads from one or two passes, batch after batch
def _pass(available: int, seed: int, index: int) -> np.ndarray:
  """The window order of pass `index` over the stream: its own permutation, so any pass is drawn without
  the ones before it (a resumed run starts mid-way). Pass 0 is default_rng(seed)'s first permutation."""
  return np.random.default_rng([seed, index]).permutation(available)


def stream_window_ids(available: int, seed: int, positions: np.ndarray) -> np.ndarray:
  """The windows at `positions` of the endless sequence of seeded passes over the stream's
  `available` windows: no window twice before every window once."""
  passes, offsets = np.divmod(np.asarray(positions, np.int64), available)
  ids = np.empty_like(offsets)
  for index in np.unique(passes):
    ids[passes == index] = _pass(available, seed, int(index))[offsets[passes == index]]
  return ids


def windows(tokens: np.ndarray, count: int, seq_len: int, seed: int) -> pipeline.EpochWindows:
  """count windows of seq_len + 1 tokens of the stream per epoch, each at a multiple of seq_len as
  pretraining reads them, for pipeline.masked_windows_dataset: epoch e's row r is position
  e x count + r of stream_window_ids, so the epochs read on through the whole stream, the same
  ones for a seed after a resume."""
  available = pipeline.num_windows(len(tokens), seq_len)
  if not available:
    raise ValueError(f'the base run\'s training text ({len(tokens)} tokens) is shorter than one window of '
                     f'seq_len + 1 = {seq_len + 1}; lower train.seq_len or set --config.sft.replay=0')

  def read(rows: np.ndarray, epoch: int) -> np.ndarray:
    ids = stream_window_ids(available, seed, epoch * count + np.asarray(rows))
    return np.stack([tokens[i * seq_len:(i + 1) * seq_len + 1] for i in ids]).astype(np.int32)

  return pipeline.EpochWindows(count, read,
                               about=f'{count} per epoch of the {available} windows of a {len(tokens)}-token stream')


def mix(conversation_windows: int, base: Path, weight: float, seq_len: int, seed: int,
        cache_dir: Path) -> pipeline.EpochWindows | None:
  """round(weight x conversation_windows) replay windows of base's text per epoch (windows()), for the
  dataset to shuffle in among the conversation windows; None when that is none."""
  if weight < 0:
    raise ValueError(f'sft.replay={weight} must be >= 0 (replay windows per conversation window)')
  count = round(weight * conversation_windows)
  if not count:
    return None
  logging.info('sft: %d windows of %s\'s pretraining text replayed per epoch beside %d conversation windows', count,
               base, conversation_windows)
  text = base_text(base, cache_dir)
  replayed = windows(text.train_tokens, count, seq_len, seed)
  # The corpus in what a run's data record keeps: a base corpus changed since the run started (same
  # length, other text) would replay other windows on resume.
  return dataclasses.replace(replayed, source=f'corpus {text.fingerprint}')
