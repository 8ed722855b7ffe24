"""Data-loading benchmark: the grain training pipeline over a real token cache.

    python -m llm.bench --data     # over configs/pretrain_small.py's token cache; one JSON line

Yardstick, measured in the same run: plain numpy slicing of the same memory-mapped windows
(the least any loader must do). The loader only has to outrun the train step, whose
tokens/s `python -m llm.bench` prints.
"""
import time

import numpy as np


def run(config, batches: int = 2000) -> dict:
  from llm import hostinfo
  from llm.data import pipeline, prepare
  from llm.tasks.pretrain import cache_dir
  tc = config.train
  prepared = prepare(config, cache_dir(config))
  tokens = prepared.train_tokens
  it = iter(pipeline.train_dataset(tokens, tc.seq_len, tc.batch_size, config.data.seed))
  next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  grain_s = time.perf_counter() - start

  n_windows = pipeline.num_windows(len(tokens), tc.seq_len)
  ids = np.random.default_rng(0).permutation(n_windows)
  start = time.perf_counter()
  for b in range(batches):
    rows = ids[(b * tc.batch_size) % (n_windows - tc.batch_size):][:tc.batch_size]
    window = np.stack([tokens[i * tc.seq_len:i * tc.seq_len + tc.seq_len + 1] for i in rows]).astype(np.int32)
    _ = window[:, :-1], window[:, 1:]
  numpy_s = time.perf_counter() - start
  per_batch = tc.batch_size * tc.seq_len
  return {'impl': 'grain-pipeline', 'batch': tc.batch_size, 'seq': tc.seq_len,
          'tokens_per_s': round(batches * per_batch / grain_s),
          'numpy_slicing_tokens_per_s': round(batches * per_batch / numpy_s),
          'ratio_to_numpy': round(numpy_s / grain_s, 3), 'host': hostinfo.describe()}
