"""SFT with the base's pretraining text replayed (llm/data/replay.py, config.sft.replay): the replay
windows are the base run's own training stream read as pretraining reads it, trained on every token,
and mixed in at the configured rate."""
import json

import numpy as np
import pytest

from llm import inference
from llm.data import prepare, replay
from llm.tasks import sft
from tiny_config import tiny_sft_config


def test_windows_are_aligned_slices_of_the_stream_drawn_without_repeats():
  stream = np.arange(1000, dtype=np.uint16)  # a token's value is its position: a window shows where it came from
  windows_NxW, mask_NxW, segments_NxW = replay.windows(stream, count=20, seq_len=16, seed=3)
  assert windows_NxW.shape == (20, 17) and windows_NxW.dtype == np.int32
  starts = windows_NxW[:, 0]
  assert (windows_NxW == starts[:, None] + np.arange(17)).all()  # contiguous
  assert (starts % 16 == 0).all() and len(set(starts)) == 20  # at window boundaries, no window twice
  assert (mask_NxW == 1).all() and (segments_NxW == 1).all()
  again, _, _ = replay.windows(stream, count=20, seq_len=16, seed=3)
  other, _, _ = replay.windows(stream, count=20, seq_len=16, seed=4)
  assert (again == windows_NxW).all() and not (other == windows_NxW).all()
  # more windows than the stream holds (62 here): every window drawn, some twice
  many, _, _ = replay.windows(stream, count=100, seq_len=16, seed=0)
  assert len(many) == 100 and set(many[:, 0] // 16) == set(range(62))


def test_sft_trains_on_the_bases_text_at_the_configured_rate(pretrained, cache_dir):
  config = tiny_sft_config(cache_dir, **{'sft.replay': 0.5})
  config.init_from = str(pretrained)
  data = sft.data(config, None)
  total, replayed = data.facts['sft_windows_per_epoch'], data.facts['sft_replay_windows']
  conversation_windows = total - replayed
  assert replayed == round(0.5 * conversation_windows) > 0

  stream = prepare(inference.read_config(pretrained), cache_dir).train_tokens.astype(np.int32)
  seq_len, batch = config.train.seq_len, config.train.batch_size
  aligned_NxW = np.lib.stride_tricks.sliding_window_view(stream, seq_len + 1)[::seq_len]  # as pretraining reads it
  found = 0
  for _ in range(total // batch):  # one epoch
    b = next(data.train_iter)
    for inputs, targets, mask in zip(b['inputs'], b['targets'], b['loss_mask']):
      if not mask.all():
        continue  # a conversation window: its bos and user turns carry no loss
      found += 1
      window = np.concatenate([inputs, targets[-1:]])
      assert (aligned_NxW == window).all(axis=1).any(), 'a replay window that is not a window of the base stream'
  assert replayed - batch <= found <= replayed  # the epoch's last partial batch is dropped


def test_replay_refuses_a_base_that_is_not_a_pretraining_run(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps({'task': 'sft'}))
  with pytest.raises(ValueError, match="is a 'sft' run; start SFT from a pretraining run or set --config.sft.replay=0"):
    replay.base_stream(tmp_path, tmp_path)
