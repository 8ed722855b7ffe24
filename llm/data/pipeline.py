"""Batches of packed token windows from a token cache, as grain datasets.

Packing: the cached stream is documents joined by bos, cut into windows of seq_len + 1 tokens
with stride seq_len (window i = tokens[i*T : i*T + T + 1]); inputs = window[:-1] and
targets = window[1:]. Every token of the stream is an input exactly once per epoch, except a
tail shorter than a window. Attention crosses document boundaries; bos marks them.
"""
import grain
import numpy as np

# Batches are small numpy slices of a memory-mapped file: two reader threads keep a few ready
# while the accelerator works, without holding much memory.
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


def num_windows(num_tokens: int, seq_len: int) -> int:
  return max(num_tokens - 1, 0) // seq_len


def _read_windows(tokens: np.ndarray, window_ids: np.ndarray, seq_len: int) -> dict:
  windows = np.stack([tokens[i * seq_len:(i + 1) * seq_len + 1] for i in window_ids])
  windows = windows.astype(np.int32)
  return {'inputs': np.ascontiguousarray(windows[:, :-1]),
          'targets': np.ascontiguousarray(windows[:, 1:])}


def train_dataset(tokens: np.ndarray, seq_len: int, global_batch: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """Endless shuffled batches {'inputs', 'targets'}: int32[global_batch // process_count, seq_len].

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
  if global_batch % process_count:
    raise ValueError(f'global batch {global_batch} does not split evenly over {process_count} '
                     'processes; make train.batch_size a multiple of the process count')
  local_batch = global_batch // process_count
  windows = num_windows(len(tokens), seq_len)
  if windows < global_batch:
    raise ValueError(f'{len(tokens)} training tokens make {windows} windows of seq_len '
                     f'{seq_len} + 1, fewer than one batch of {global_batch}; lower '
                     'train.seq_len or train.batch_size, or use more data')
  rows = slice(process_index * local_batch, (process_index + 1) * local_batch)
  return (grain.MapDataset.range(windows)
          .shuffle(seed=seed)
          .batch(global_batch, drop_remainder=True, batch_fn=np.asarray)  # window ids
          .map(lambda window_ids: _read_windows(tokens, window_ids[rows], seq_len))
          .repeat()  # a new shuffle each epoch
          .to_iter_dataset(_READ_OPTIONS))


def eval_batches(tokens: np.ndarray, seq_len: int, batch_size: int,
                 max_batches: int | None = None) -> list[dict]:
  """The first windows in order, as whole batches (at most max_batches; None = all)."""
  windows = num_windows(len(tokens), seq_len)
  count = windows // batch_size
  if not count:
    raise ValueError(f'{len(tokens)} validation tokens make {windows} windows of seq_len '
                     f'{seq_len} + 1, fewer than one batch of {batch_size}; lower train.seq_len '
                     'or the batch size, or raise data.val_fraction')
  if max_batches is not None:
    count = min(count, max_batches)
  ids = np.arange(count * batch_size).reshape(count, batch_size)
  return [_read_windows(tokens, batch_ids, seq_len) for batch_ids in ids]
