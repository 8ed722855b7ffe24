"""Batches of packed token windows from a token cache, as grain datasets.

Packing: the cached stream is documents joined by bos, cut into windows of seq_len + 1 tokens
with stride seq_len (window i = tokens[i*T : i*T + T + 1]); inputs = window[:-1] and
targets = window[1:]. Every token of the stream is an input exactly once per epoch, except a
tail shorter than a window. Attention crosses document boundaries; bos marks them.
"""
import dataclasses
from typing import Callable

import grain
import numpy as np

# Batches are small numpy slices of a memory-mapped file: two reader threads keep a few ready
# while the accelerator works, without holding much memory.
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


def num_windows(num_tokens: int, seq_len: int) -> int:
  return max(num_tokens - 1, 0) // seq_len


MIN_REPEAT = 8  # shortest span a repeated window repeats (tokens)


def repeat_lengths(window_ids: np.ndarray, fraction: float, window_len: int) -> np.ndarray:
  """Per window id, how many of its first tokens it repeats right after them (0: none). A fixed
  pseudo-random share of ids repeat (Knuth's multiplicative hash), so a resumed run repeats the
  same ones, each its own length in [MIN_REPEAT, window_len // 2] (a second hash): with one fixed
  length the model learned to attend that many positions back, which copies nothing at any other
  distance (a base trained so scored no better on llm/evals/copying.py than one without repeats),
  while varied lengths leave copying by content (induction heads) as the only way to predict them."""
  ids = np.asarray(window_ids).astype(np.uint64)
  chosen = ids * np.uint64(2654435761) % np.uint64(2 ** 32) < fraction * 2 ** 32
  spread = np.uint64(window_len // 2 - MIN_REPEAT + 1)
  lengths = MIN_REPEAT + (ids * np.uint64(0x9E3779B97F4A7C15) >> np.uint64(40)) % spread
  return np.where(chosen, lengths, 0).astype(np.int64)


def random_span(tokens: np.ndarray, window_id: int, length: int, pool: np.ndarray | None = None) -> np.ndarray:
  """`length` tokens drawn from random positions of the stream (its unigram distribution, so no
  token the data never holds), or uniformly from `pool`; the same for a window id in every epoch
  and after a resume."""
  rng = np.random.default_rng(int(window_id))
  if pool is not None:
    return pool[rng.integers(0, len(pool), size=length)]
  return tokens[rng.integers(0, len(tokens), size=length)]


def copy_task_window(window_id: int, width: int, pool: np.ndarray, alphabet_min: int = 0) -> np.ndarray:
  """The induction task as one window of `width` tokens: tokens drawn uniformly from `pool`, then
  its first L again starting at a random distance (L in [MIN_REPEAT, width // 2), no fixed offset
  predicts the copy), so nothing but copying by content predicts anything beyond the unigram.
  With alphabet_min > 0 the window draws from its own alphabet: a log-uniform number in
  [alphabet_min, len(pool)] of the pool's tokens. Over a large pool every token stays unique within a
  window, and copying by the current token alone suffices; a small alphabet repeats tokens, as
  digits and text do, so the copy must be found by the tokens before it too.
  The same for a window id after a resume; train_dataset numbers windows across epochs, so each
  epoch draws new ones. Measured in README, "The SFT recipe across bases"
  (results/sft_recipe/copy_task_loss.py)."""
  rng = np.random.default_rng(int(window_id))
  if alphabet_min:
    size = int(np.exp(rng.uniform(np.log(alphabet_min), np.log(len(pool) + 1))))
    pool = rng.choice(pool, size=min(size, len(pool)), replace=False)
  window = pool[rng.integers(0, len(pool), size=width)]
  length = int(rng.integers(MIN_REPEAT, width // 2))
  start = int(rng.integers(length, width + 1 - length))
  window[start:start + length] = window[:length]
  return window


def copy_task_chosen(window_ids: np.ndarray, fraction: float) -> np.ndarray:
  """Per window id, whether it is a copy_task window: a fixed pseudo-random share of ids (a hash
  of its own, independent of repeat_lengths' choice), the same in every epoch and after a resume."""
  ids = np.asarray(window_ids).astype(np.uint64)
  return (ids * np.uint64(0xD1B54A32D192ED03) >> np.uint64(32)) % np.uint64(2 ** 32) < fraction * 2 ** 32


def frequent_tokens(tokens: np.ndarray, count: int) -> np.ndarray:
  """The stream's `count` most frequent token ids, most frequent first; fewer where the stream holds
  fewer distinct ones (ids it never holds, <pad> or the chat tokens, are no text to draw)."""
  counts = np.bincount(tokens)
  ids = np.argsort(-counts, kind='stable')[:count]
  return ids[counts[ids] > 0].astype(tokens.dtype)


def _read_windows(tokens: np.ndarray, window_ids: np.ndarray, seq_len: int, repeat_fraction: float = 0.0,
                  repeat_random: bool = False, pool: np.ndarray | None = None, copy_task: float = 0.0,
                  epoch: int = 0, copy_alphabet_min: int = 0) -> dict:
  windows = np.stack([tokens[i * seq_len:(i + 1) * seq_len + 1] for i in window_ids]).astype(np.int32)
  task = copy_task_chosen(window_ids, copy_task)
  for row in np.flatnonzero(task):
    # Fresh tokens every epoch (a window's number in the whole stream): the same ones each epoch
    # are memorised instead of copied once a small corpus repeats (README, "The SFT recipe across bases").
    windows[row] = copy_task_window(window_ids[row] + epoch * num_windows(len(tokens), seq_len), seq_len + 1, pool,
                                   copy_alphabet_min)
  if repeat_fraction:
    # A chosen window's first tokens come again right after them: those targets can only be
    # predicted by copying from the context, which teaches the in-context copying (induction
    # heads) that a few million tokens of books do not (llm/evals/copying.py measures it).
    # With repeat_random the span is random tokens, whose second copy nothing but copying
    # predicts (text's is half predictable without it). Neither formed copying in pretrain_small
    # within 2,100 steps (README, "The SFT recipe across bases").
    for row, length in enumerate(repeat_lengths(window_ids, repeat_fraction, windows.shape[1])):
      if task[row]:
        continue
      if length and repeat_random:
        windows[row, :length] = random_span(tokens, window_ids[row], length, pool)
      windows[row, length:2 * length] = windows[row, :length]
  return {'inputs': np.ascontiguousarray(windows[:, :-1]),
          'targets': np.ascontiguousarray(windows[:, 1:])}


def train_dataset(tokens: np.ndarray, seq_len: int, global_batch: int, seed: int,
                  process_index: int = 0, process_count: int = 1, repeat_fraction: float = 0.0,
                  repeat_random: bool = False, repeat_vocab: int = 0, copy_task: float = 0.0,
                  copy_alphabet_min: int = 0) -> grain.IterDataset:
  """Endless shuffled batches {'inputs', 'targets'}: int32[global_batch // process_count, seq_len].
  A repeat_fraction share of windows repeat their first tokens right after them (repeat_lengths);
  with repeat_random those first tokens are first replaced by a random_span, drawn uniformly from
  the repeat_vocab most frequent tokens when repeat_vocab > 0. A copy_task share of windows
  (copy_task_chosen) is instead a copy_task_window over the repeat_vocab most frequent tokens
  (at 1.0 the text only sets that pool and the number of windows an epoch has), each from its own
  alphabet of at least copy_alphabet_min of them when that is > 0; which windows are copy_task ones
  is fixed per window id, their tokens are new every epoch.

  Each epoch visits every window once in its own seeded order; the windows left over after the
  last full batch of an epoch (fewer than global_batch) are skipped in that epoch only. Process
  p gets rows [p*local, (p+1)*local) of each global batch, the layout that
  jax.make_array_from_process_local_data expects.

  Resuming: `it = iter(ds)`; `it.get_state()` / `it.set_state(state)` continue with exactly the
  next batch. In an orbax CheckpointManager, register `grain.checkpoint.CheckpointHandler()` as
  the item handler of the iterator's item and save / restore it with
  `ocp.args.Composite(..., data=grain.checkpoint.CheckpointSave(it))` and
  `ocp.args.Composite(..., data=grain.checkpoint.CheckpointRestore(it))`; restore sets the
  state of `it` in place. Each process writes its own file, process_<i>-of-<n>.json.
  """
  windows = num_windows(len(tokens), seq_len)
  if windows < global_batch:
    raise ValueError(f'{len(tokens)} training tokens make {windows} windows of seq_len '
                     f'{seq_len} + 1, fewer than one batch of {global_batch}; lower '
                     'train.seq_len or train.batch_size, or use more data')
  if not 0.0 <= copy_task <= 1.0:
    raise ValueError(f'data.copy_task={copy_task} is a share of windows; give a value in [0, 1]')
  if copy_task and repeat_vocab < 2:
    raise ValueError(f'data.copy_task draws its tokens from the data.repeat_vocab most frequent ones, '
                     f'which is {repeat_vocab}; set --config.data.repeat_vocab (e.g. 255)')
  # The shortest windows their spans fit in: a copy_task_window's span of L in [MIN_REPEAT, width // 2)
  # and its copy, a repeat's first L in [MIN_REPEAT, window_len // 2] tokens and their repeat.
  for name, share, shortest in (('copy_task', copy_task, 2 * MIN_REPEAT + 1),
                                ('repeat_fraction', repeat_fraction, 2 * MIN_REPEAT - 1)):
    if share and seq_len < shortest:
      raise ValueError(f'data.{name}={share} repeats spans of {MIN_REPEAT} tokens or more, which windows of '
                       f'train.seq_len={seq_len} have no room for; give train.seq_len >= {shortest}')
  if copy_alphabet_min and not 2 <= copy_alphabet_min <= repeat_vocab:
    raise ValueError(f'data.copy_alphabet_min={copy_alphabet_min} is the smallest alphabet a copy_task window '
                     f'draws from the data.repeat_vocab={repeat_vocab} tokens; give 0 (off) or 2..{repeat_vocab}')
  pool = frequent_tokens(tokens, repeat_vocab) if (repeat_random or copy_task) and repeat_vocab else None
  needed = max(copy_alphabet_min, 2)  # a copy_task window's smallest alphabet; a random span's tokens to vary
  if pool is not None and len(pool) < needed:
    raise ValueError(f'data.repeat_vocab={repeat_vocab} draws from the most frequent tokens, but the training text holds '
                     f'{len(pool)} distinct ones, fewer than the {needed} data.copy_alphabet_min or a random span needs; '
                     'train on more text or lower data.copy_alphabet_min')
  read = lambda ids, epoch: _read_windows(tokens, ids, seq_len, repeat_fraction, repeat_random, pool, copy_task, epoch,
                                          copy_alphabet_min)
  return shuffled_batches(windows, read, global_batch, seed, process_index, process_count)


@dataclasses.dataclass(frozen=True)
class EpochWindows:
  """`count` windows trained on every token, one segment each, whose tokens change with the epoch:
  read(rows, epoch) -> int32 windows_NxW of rows (each in [0, count)) in that epoch, the same after a resume."""
  count: int
  read: Callable[[np.ndarray, int], np.ndarray]
  about: str = ''  # what, besides the run's seed, decides which windows they are (a run's data record keeps it)
  source: str = ''  # what they are read from, e.g. a corpus's fingerprint (kept beside about)


def masked_windows_dataset(windows_NxW: np.ndarray, mask_NxW: np.ndarray, global_batch: int, seed: int,
                           process_index: int = 0, process_count: int = 1,
                           segments_NxW: np.ndarray | None = None,
                           epoch_windows: EpochWindows | None = None) -> grain.IterDataset:
  """Like train_dataset, over prebuilt windows (e.g. packed conversations, see
  pack_conversations) with a loss mask: batches {'inputs', 'targets', 'loss_mask'}, and with
  segments_NxW also the inputs' 'segment_ids' and 'positions' (segment_batch). The same windows
  every epoch, shuffled among epoch_windows' when given (e.g. llm/data/replay.py's)."""
  fixed = len(windows_NxW)
  total = fixed + (epoch_windows.count if epoch_windows else 0)
  if total < global_batch:
    raise ValueError(f'{total} packed windows are fewer than one batch of {global_batch}; '
                     'lower train.batch_size or add data')

  def read(ids, epoch):
    new = ids >= fixed
    windows = np.empty((len(ids), windows_NxW.shape[1]), np.int32)
    mask, segments = np.ones_like(windows), np.ones_like(windows)
    windows[~new], mask[~new] = windows_NxW[ids[~new]], mask_NxW[ids[~new]]
    if segments_NxW is not None:
      segments[~new] = segments_NxW[ids[~new]]
    if new.any():
      windows[new] = epoch_windows.read(ids[new] - fixed, epoch)
    batch = {'inputs': windows[:, :-1], 'targets': windows[:, 1:], 'loss_mask': mask[:, 1:]}
    return batch if segments_NxW is None else {**batch, **segment_batch(segments[:, :-1])}

  return shuffled_batches(total, read, global_batch, seed, process_index, process_count)


def shuffled_batches(num_windows_: int, read, global_batch: int, seed: int, process_index: int,
                     process_count: int) -> grain.IterDataset:
  """Endless batches read(ids, epoch) of this process's rows of each global batch of item ids, each
  epoch in its own seeded order; resumable through the iterator's state (see train_dataset)."""
  if global_batch % process_count:
    raise ValueError(f'global batch {global_batch} does not split evenly over {process_count} '
                     'processes; make train.batch_size a multiple of the process count')
  local_batch = global_batch // process_count
  rows = slice(process_index * local_batch, (process_index + 1) * local_batch)
  batches_per_epoch = num_windows_ // global_batch
  return (grain.MapDataset.range(num_windows_)
          .shuffle(seed=seed)
          .batch(global_batch, drop_remainder=True, batch_fn=np.asarray)  # window ids
          .repeat()  # a new shuffle each epoch
          .map_with_index(lambda i, window_ids: read(window_ids[rows], i // batches_per_epoch))
          .to_iter_dataset(_READ_OPTIONS))


def first_fit(lengths: list[int], width: int) -> list[tuple[int, int]]:
  """Where each sequence of lengths goes in windows of width tokens, first fit: (window, offset)
  of its first token. Only the last 64 windows opened are tried, so packing stays linear."""
  too_long = [n for n in lengths if n > width]
  if too_long:
    raise ValueError(f'{len(too_long)} sequences are longer than seq_len + 1 = {width} tokens '
                     f'(longest {max(too_long)}); fit them first (llm.data.conversations.fit)')
  places, free, open_windows = [], [], []  # free[i]: tokens left in window i
  for n in lengths:
    slot = next((i for i in open_windows if free[i] >= n), None)
    if slot is None:
      free.append(width)
      slot = len(free) - 1
      open_windows.append(slot)
      if len(open_windows) > 64:
        open_windows.pop(0)
    places.append((slot, width - free[slot]))
    free[slot] -= n
  return places


def pack_conversations(rendered: list[tuple[list[int], list[int]]], seq_len: int, pad_id: int,
                       places: list[tuple[int, int]] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Packs whole (ids, mask) sequences into windows of seq_len + 1 tokens, first fit.

  A conversation is never split across windows (its second half would lose the question it
  answers); the unused tail of a window is pad with mask 0. Compared with one conversation per
  window this wastes far less compute on padding. segments_NxW numbers the conversations of
  each window 1, 2, ... (0 = padding): with them the model can keep each conversation's
  attention to itself (segment_batch); without, attention crosses from one to the next.
  places: first_fit's placement, for a caller that needs it too (computed here when None).
  Returns (windows_NxW, mask_NxW, segments_NxW), W = seq_len + 1.
  """
  width = seq_len + 1
  if places is None:
    places = first_fit([len(ids) for ids, _ in rendered], width)
  count = max((window for window, _ in places), default=-1) + 1
  tokens_NxW = np.full((count, width), pad_id, np.int32)
  mask_NxW = np.zeros((count, width), np.int8)
  segments_NxW = np.zeros((count, width), np.int32)
  for (window, offset), (ids, mask) in zip(places, rendered):
    tokens_NxW[window, offset:offset + len(ids)] = ids
    mask_NxW[window, offset:offset + len(ids)] = mask
    segments_NxW[window, offset:offset + len(ids)] = segments_NxW[window, max(offset - 1, 0)] + 1
  return tokens_NxW, mask_NxW, segments_NxW


def segment_batch(segments_BxT: np.ndarray) -> dict:
  """{'segment_ids', 'positions'} of packed inputs: each token's segment and its position counted
  from the start of its segment, so a packed sequence sees the positions it would see alone."""
  B, T = segments_BxT.shape
  index_BxT = np.broadcast_to(np.arange(T), (B, T))
  starts_BxT = np.ones((B, T), bool)
  starts_BxT[:, 1:] = segments_BxT[:, 1:] != segments_BxT[:, :-1]
  start_index_BxT = np.maximum.accumulate(np.where(starts_BxT, index_BxT, 0), axis=1)
  return {'segment_ids': segments_BxT.astype(np.int32), 'positions': (index_BxT - start_index_BxT).astype(np.int32)}


def eval_batches(tokens: np.ndarray, seq_len: int, batch_size: int,
                 max_batches: int | None = None, byte_fixes: np.ndarray | None = None) -> list[dict]:
  """The first windows in order, as whole batches (at most max_batches; None = all); with
  byte_fixes (cache.load_byte_fixes: positions in tokens and bytes), each batch's 'byte_fix' holds
  them at their targets (llm.losses.target_bytes)."""
  windows = num_windows(len(tokens), seq_len)
  count = windows // batch_size
  if not count:
    raise ValueError(f'{len(tokens)} validation tokens make {windows} windows of seq_len '
                     f'{seq_len} + 1, fewer than one batch of {batch_size}; lower train.seq_len '
                     'or the batch size, or raise data.val_fraction')
  if max_batches is not None:
    count = min(count, max_batches)
  ids = np.arange(count * batch_size).reshape(count, batch_size)
  batches = [_read_windows(tokens, batch_ids, seq_len) for batch_ids in ids]
  if byte_fixes is not None:
    fix_NxT = np.zeros((count * batch_size, seq_len), np.int32)
    window, column = np.divmod(byte_fixes[:, 0] - 1, seq_len)  # window i's targets: tokens i*seq_len+1 on
    inside = window < len(fix_NxT)
    fix_NxT[window[inside], column[inside]] = byte_fixes[inside, 1]
    for batch, fix_BxT in zip(batches, np.split(fix_NxT, count)):
      batch['byte_fix'] = fix_BxT
  return batches
