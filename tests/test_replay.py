"""SFT with the base's pretraining text replayed (llm/data/replay.py, config.sft.replay): the replay
windows are the base run's own training stream read as pretraining reads it, trained on every token,
and mixed in at the configured rate."""
import json
from pathlib import Path

import numpy as np
import pytest

from llm import inference
from llm.data import pipeline, prepare, replay
from llm.tasks import sft
from tiny_config import tiny_sft_config


def test_windows_are_aligned_slices_of_the_stream_drawn_without_repeats():
  stream = np.arange(1000, dtype=np.uint16)  # a token's value is its position: a window shows where it came from
  replayed = replay.windows(stream, count=20, seq_len=16, seed=3)
  windows_NxW = replayed.read(np.arange(20), 0)
  assert replayed.count == 20 and windows_NxW.shape == (20, 17) and windows_NxW.dtype == np.int32
  starts = windows_NxW[:, 0]
  assert (windows_NxW == starts[:, None] + np.arange(17)).all()  # contiguous
  assert (starts % 16 == 0).all() and len(set(starts)) == 20  # at window boundaries, no window twice
  again = replay.windows(stream, count=20, seq_len=16, seed=3).read(np.arange(20), 0)
  other = replay.windows(stream, count=20, seq_len=16, seed=4).read(np.arange(20), 0)
  assert (again == windows_NxW).all() and not (other == windows_NxW).all()
  # more windows than the stream holds (62 here): every window drawn, some twice
  many = replay.windows(stream, count=100, seq_len=16, seed=0).read(np.arange(100), 0)
  assert len(many) == 100 and set(many[:, 0] // 16) == set(range(62))


def test_each_epoch_replays_the_next_windows_of_the_stream():
  """Epochs read on through the base's text, as pretraining would: 20 replay windows an epoch of a
  stream of 62 read 60 different ones in three epochs and all 62 in four, not the same 20 again."""
  stream = np.arange(1000, dtype=np.uint16)
  conversations_NxW = np.full((10, 17), 5000, np.int32)  # no position of the stream
  mask_NxW = np.zeros((10, 17), np.int8)
  dataset = lambda: iter(pipeline.masked_windows_dataset(
      conversations_NxW, mask_NxW, global_batch=5, seed=0,
      epoch_windows=replay.windows(stream, count=20, seq_len=16, seed=3)))
  data = dataset()
  epochs = []
  for _ in range(4):
    batches = [next(data) for _ in range(6)]  # 30 windows an epoch: 10 conversations, 20 replayed
    starts = [int(b['inputs'][row, 0]) for b in batches for row in range(5) if b['loss_mask'][row].all()]
    assert len(starts) == 20 and all(start % 16 == 0 for start in starts)
    epochs.append(set(starts))
  assert len(epochs[0] | epochs[1] | epochs[2]) == 60
  assert len(set.union(*epochs)) == 62

  # a resumed iterator reads the same windows: they follow from the seed and the epoch alone
  straight = dataset()
  for _ in range(7):
    next(straight)
  resumed = dataset()
  resumed.set_state(straight.get_state())
  for _ in range(10):
    a, b = next(straight), next(resumed)
    assert all((a[key] == b[key]).all() for key in a)


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
    replay.base_text(tmp_path, tmp_path)


def test_the_replay_record_names_the_base_corpus_so_the_same_length_of_other_text_is_seen(tmp_path, pretrained,
                                                                                             cache_dir):
  """The data record kept the replay's window count and stream length only: a base corpus edited
  since the SFT run started (two documents swapped: the same tokens, in another order) would have
  the resumed run replay other windows unnoticed."""
  import shutil
  from llm import tokenizer as tokenizer_lib
  config = json.loads((pretrained / 'config.json').read_text())
  text = (Path(config['data']['dir']) / config['data']['source']).read_text()
  base = tmp_path / 'base'
  base.mkdir()
  shutil.copy(tokenizer_lib.run_file(pretrained), base)
  config['data']['dir'] = str(tmp_path / 'data')
  (base / 'config.json').write_text(json.dumps(config))
  corpus = tmp_path / 'data' / config['data']['source']
  corpus.parent.mkdir(parents=True)
  corpus.write_text(text)
  windows = np.zeros((1, 17), np.int32)
  about = lambda: sft._record({}, windows, replay.mix(100, base, 0.5, 16, 0, cache_dir))  # pylint: disable=protected-access
  stream_length = lambda: len(replay.base_text(base, cache_dir).train_tokens)
  before, before_tokens = about(), stream_length()
  documents = text.split('\n\n')
  documents[1], documents[2] = documents[2], documents[1]
  corpus.write_text('\n\n'.join(documents))
  assert stream_length() == before_tokens  # the same length of text
  assert about() != before
  corpus.write_text(text)
  assert about() == before
