"""The training loop end to end: learning, resume after a kill, sharding, and its errors."""
import asyncio
import builtins
import errno
import gc
import io
import itertools
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorstore

from conftest import (ROOT, SHARED_DATA, kill_then_resume, losses_by_step, tensorboard_scalars, tiny_config,
                      xla_flags)
from llm import checkpoint, train, workdir_lock


def read_metrics(workdir):
  return [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]


def test_tokens_per_s_of_a_task_that_makes_its_batches_counts_each_steps_own_making(tmp_path, cache_dir, monkeypatch):
  """RL rollouts take most of a step: with a clock that only their making moves (1 s a batch),
  every step's rate is one batch in 1 s. Fetched after the next batch's making, an evaluation
  step's window held none of it (0 s) and the step after it two."""
  import dataclasses
  from llm.tasks import pretrain
  clock = [0.0]

  def next_batch(data, setup, state, step):
    clock[0] += 1.0
    return next(data.train_iter), {}

  monkeypatch.setattr(pretrain, 'TASK', dataclasses.replace(pretrain.TASK, next_batch=next_batch))
  monkeypatch.setattr(train, 'time', types.SimpleNamespace(time=lambda: clock[0]))
  config = tiny_config(cache_dir, **{'train.steps': 7, 'train.eval_every': 2, 'train.log_every': 1,
                                     'train.checkpoint_every': 3})
  train.run(config, tmp_path)
  rates = {row['step']: row['tokens_per_s'] for row in read_metrics(tmp_path) if 'tokens_per_s' in row}
  assert rates == {step: 8 * 64 / 1.0 for step in range(2, 8)}  # batch 8 x 64 tokens; step 1 compiled


def test_where_the_data_is_and_what_makes_it_are_no_part_of_the_stream_a_resume_keeps():
  """data.dir, data.cache_dir and data.made_by (advice when data.dir is missing) may change on a
  resume; data.source and the rest of data decide the stream."""
  assert [train._in_data_stream(k) for k in ('data.dir', 'data.cache_dir', 'data.made_by')] == [False] * 3  # pylint: disable=protected-access
  assert train._in_data_stream('data.source') and train._in_data_stream('data.val_fraction')  # pylint: disable=protected-access


def test_loss_falls_and_run_dir_holds_the_contract(tmp_path, cache_dir):
  config = tiny_config(cache_dir, **{'train.steps': 40, 'train.eval_every': 20, 'train.checkpoint_every': 15,
                                     'train.keep_checkpoints': 2})
  summary = train.run(config, tmp_path)
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()) == [30, 40]  # of 15, 30 and the last
  losses = losses_by_step(tmp_path)
  assert sorted(losses) == list(range(1, 41))
  assert np.mean([losses[s] for s in range(36, 41)]) < np.mean([losses[s] for s in range(1, 6)]) - 0.7
  for name in ('config.json', 'metrics.jsonl', 'summary.json', 'tokenizer.model', 'checkpoints', 'tensorboard'):
    assert (tmp_path / name).exists(), name
  row = read_metrics(tmp_path)[-2]
  assert {'step', 'loss', 'lr', 'grad_norm', 'tokens_seen', 'tokens_per_s', 'mfu'} <= set(row)
  on_disk = json.loads((tmp_path / 'summary.json').read_text())
  assert on_disk == json.loads(json.dumps(summary))
  assert {'val_loss', 'val_bpb', 'tokens_seen', 'params', 'wall_s'} <= set(on_disk)
  assert on_disk['tokens_seen'] == 40 * 8 * 64
  assert json.loads((tmp_path / 'config.json').read_text())['train']['steps'] == 40
  # The same command again on the finished run: no step runs, its training figures stay.
  again = train.run(config, tmp_path)
  assert again['loss'] == losses[40] and again['wall_s'] == on_disk['wall_s']
  assert again['val_loss'] == pytest.approx(on_disk['val_loss'], rel=1e-5)
  assert json.loads((tmp_path / 'summary.json').read_text()) == json.loads(json.dumps(again))


def test_bits_per_byte_by_hand():
  """Uniform logits over 4 tokens: every target costs ln 4 nats = 2 bits. Targets 1, 2, 0, 3 with
  1, 2, 0 (a special token) and 3 bytes: 3 x 2 bits over 6 bytes = 1 bit per byte, while the loss
  per token counts all four."""
  from llm import sharding
  from llm.config import base_config

  class Uniform:
    def apply(self, variables, inputs):
      return jnp.zeros((*inputs.shape, 4))

  eval_step = jax.jit(train.make_eval_step(Uniform(), [0, 1, 2, 3]))
  batch = {'inputs': np.zeros((1, 4), np.int32), 'targets': np.array([[1, 2, 0, 3]], np.int32)}
  got = train.evaluate(eval_step, {}, {'val': [batch]}, sharding.make_mesh(base_config().mesh))
  assert got['val_bpb'] == pytest.approx(1.0, rel=1e-6)
  assert got['val_loss'] == pytest.approx(np.log(4), rel=1e-6)
  # SFT masks the prompt: with target 1 (1 byte) masked, 2 x 2 bits over the 2 + 3 bytes left.
  masked = dict(batch, loss_mask=np.array([[0, 1, 1, 1]], np.float32))
  got = train.evaluate(eval_step, {}, {'val': [masked]}, sharding.make_mesh(base_config().mesh))
  assert got['val_bpb'] == pytest.approx(4 / 5, rel=1e-6)
  assert got['val_loss'] == pytest.approx(np.log(4), rel=1e-6)


def _main(workdir, env, *overrides, devices=1):
  cmd = [sys.executable, '-m', 'llm.main', f'--config={ROOT}/tests/tiny_config.py', f'--workdir={workdir}',
         *overrides]
  if devices > 1:
    env = dict(env, XLA_FLAGS=xla_flags(devices))
  return cmd, env


def test_killed_run_resumes_to_the_same_result(tmp_path, subprocess_env):
  steps = ['--config.train.steps=60', '--config.train.checkpoint_every=7']
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  cmd, env = _main(straight, subprocess_env, *steps)
  subprocess.run(cmd, env=env, check=True, capture_output=True)

  cmd, env = _main(resumed, subprocess_env, *steps)
  kill_then_resume(cmd, env, resumed, kill_after_checkpoint=14, total=60)

  a, b = losses_by_step(straight), losses_by_step(resumed)
  assert sorted(b) == list(range(1, 61))  # nothing lost, nothing logged twice
  assert [a[s] for s in range(1, 61)] == [b[s] for s in range(1, 61)]
  params = []
  for run in (straight, resumed):
    ckpt = checkpoint.Checkpointer(run / 'checkpoints', keep=3)
    assert ckpt.latest_step() == 60
    params.append(ckpt.restore_raw(60)['params'])
    ckpt.close()
  jax.tree.map(np.testing.assert_array_equal, params[0], params[1])


def test_tensorboard_keeps_the_steps_up_to_the_checkpoint_a_killed_run_resumes_from(tmp_path, subprocess_env):
  """The run dies the moment its checkpoint of step 7 is complete (os._exit: no buffer flushed, no
  exit handler run, as under SIGKILL); the resumed one logs steps 8 on, so TensorBoard's steps 1-7
  must be on disk before that checkpoint."""
  cmd, env = _main(tmp_path, subprocess_env, '--config.train.steps=10', '--config.train.checkpoint_every=7')
  dies_after_step_7 = (
      'import os, runpy\n'
      'from llm import checkpoint\n'
      'save = checkpoint.Checkpointer.save\n'
      'def save_then_die(self, step, *args, **kwargs):\n'
      '  save(self, step, *args, **kwargs)\n'
      '  if step == 7:\n'
      '    self.wait()\n'
      '    os._exit(9)\n'
      'checkpoint.Checkpointer.save = save_then_die\n'
      'runpy.run_module("llm.main", run_name="__main__", alter_sys=True)\n')
  flags = cmd[3:]  # after python -m llm.main
  killed = subprocess.run([sys.executable, '-c', dies_after_step_7, *flags], env=env, cwd=ROOT, capture_output=True)
  assert killed.returncode == 9 and (tmp_path / 'checkpoints' / '7').is_dir(), killed.stderr[-2000:]
  subprocess.run(cmd, env=env, check=True, capture_output=True)
  assert [step for step, _ in tensorboard_scalars(tmp_path / 'tensorboard', 'loss')] == list(range(1, 11))


def test_eight_devices_data_by_fsdp_match_one_device(tmp_path, subprocess_env):
  """Also the MFU of each: its tokens/s at the tiny model's FLOPs per token over the peak of all its
  devices, 6 x (non-embedding + lm-head params) + 6 x layers x seq_len x dim = 6 x (2 x (4 x 64^2 +
  2 x 64 x 256 + 2 x 64) + 64 + 512 x 64) + 6 x 2 x 64 x 64."""
  flops_per_token, peak_per_device = 837_504, 1e12
  common = ['--config.train.steps=6', '--config.train.lr=1e-2',
            f'--config.train.peak_flops_per_device={peak_per_device}']
  runs = {'one': [], 'eight': ['--config.mesh.data=2', '--config.mesh.fsdp=4']}
  losses = {}
  for name, extra in runs.items():
    devices = 8 if name == 'eight' else 1
    cmd, env = _main(tmp_path / name, subprocess_env, *common, *extra, devices=devices)
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    losses[name] = losses_by_step(tmp_path / name)
    summary = json.loads((tmp_path / name / 'summary.json').read_text())
    assert summary['devices'] == devices and summary['flops_per_token'] == flops_per_token
    rates = [row for row in read_metrics(tmp_path / name) if 'mfu' in row]
    assert len(rates) == 5  # every step but the first, which compiles
    for row in rates:
      assert row['mfu'] == pytest.approx(row['tokens_per_s'] * flops_per_token / (devices * peak_per_device), rel=1e-9)
  np.testing.assert_allclose([losses['one'][s] for s in range(1, 7)],
                             [losses['eight'][s] for s in range(1, 7)], rtol=1e-4)
  assert losses['one'][6] < losses['one'][1]


@pytest.mark.parametrize('override, message', [
    ('--config.train.stepz=3', 'stepz'),
    ('--config.data.dir=/nonexistent/corpus', '/nonexistent/corpus'),
    ('--config.data.source=no_such_folder', 'no_such_folder'),
    ('--config.model.num_kv_heads=3', 'num_kv_heads'),
    ('--config.train.steps=0', 'train.steps=0: a run needs at least one optimizer step'),
    ('--config.train.keep_checkpoints=0', 'train.keep_checkpoints=0 must be at least 1'),
    ('--config.train.eval_every=0', 'train.eval_every=0 must be at least 1'),
    ('--config.train.batch_size=0', 'train.batch_size=0 must be at least 1'),
    ('--config.train.eval_batches=-1', 'train.eval_batches=-1 must be at least 0'),
    ('--config.train.lr=-1', 'train.lr=-1.0 must be at least 0'),
    ('--config.train.b2=1.5', 'train.b2=1.5 must be in [0, 1)'),
])
def test_bad_input_gives_one_clear_line(tmp_path, subprocess_env, override, message):
  cmd, env = _main(tmp_path / 'run', subprocess_env, override)
  result = subprocess.run(cmd, env=env, capture_output=True, text=True)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('llm: ') and message in last, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('fraction', [0.0, -0.1, 1.5])
def test_a_wsd_decay_fraction_outside_0_to_1_is_refused(fraction):
  """0 (or less) decayed in one step anyway, and more than 1 failed only later, as leaving no room for warmup."""
  from llm import optim
  tc = tiny_config().train
  tc.update(dict(schedule='wsd', decay_fraction=fraction))
  message = f"train.decay_fraction={fraction} must be in (0, 1] with schedule='wsd'"
  with pytest.raises(ValueError, match=re.escape(message)):
    optim.check_settings(tc)
  tc.decay_fraction = 1.0
  optim.check_settings(tc)  # decays over the whole run: allowed
  tc.update(dict(schedule='cosine', decay_fraction=fraction))
  optim.check_settings(tc)  # cosine has no decay_fraction to check


@pytest.mark.parametrize('case', ['workdir_is_a_file', 'one_document_corpus', 'negative_max_docs'])
def test_bad_input_without_data_gives_one_clear_line(tmp_path, python_env, case):
  (tmp_path / 'corpus').mkdir()
  (tmp_path / 'corpus' / 'book.txt').write_bytes('Caf\xe9 na\xefve\n\nr\xe9sum\xe9\n'.encode('latin-1') * 500)
  (tmp_path / 'a_file').write_text('not a run')
  workdir, overrides, message = {
      'workdir_is_a_file': (tmp_path / 'a_file', [], 'is a file'),
      'one_document_corpus': (tmp_path / 'run', [f'--config.data.dir={tmp_path}', '--config.data.source=corpus',
                                                 '--config.data.format=text_folder'], 'one document'),
      'negative_max_docs': (tmp_path / 'run', [f'--config.data.dir={tmp_path}', '--config.data.source=corpus',
                                               '--config.data.format=text_folder', '--config.data.max_docs=-1'],
                            'config.data.max_docs=-1 must be at least 0 (0: every document)'),
  }[case]
  cmd, env = _main(workdir, python_env, *overrides)
  result = subprocess.run(cmd, env=env, capture_output=True, text=True)
  last = result.stderr.strip().splitlines()[-1]
  assert result.returncode == 1 and last.startswith('llm: ') and message in last, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  assert (tmp_path / 'a_file').read_text() == 'not a run'


def test_resuming_with_another_model_or_data_is_refused_before_anything_is_written(tmp_path, cache_dir):
  short = {'train.steps': 2, 'train.warmup_steps': 1}
  train.run(tiny_config(cache_dir, **short), tmp_path)
  files = ('config.json', 'tokenizer.model', 'metrics.jsonl', 'summary.json')
  before = {name: (tmp_path / name).read_bytes() for name in files}
  with pytest.raises(ValueError, match=r'another model \(model\.dim=64 -> 32; model\.mlp_dim=256 -> 128; params'):
    train.run(tiny_config(cache_dir, **{**short, 'train.steps': 4, 'model.dim': 32, 'model.mlp_dim': 128}), tmp_path)
  assert {name: (tmp_path / name).read_bytes() for name in files} == before
  # Another tokenizer of the same size (trained on less text): the shapes agree, the ids do not.
  with pytest.raises(ValueError, match=r'trained with the tokenizer .*tokenizer.model, and this run.s data settings '
                                       r'give another'):
    train.run(tiny_config(cache_dir, **{**short, 'train.steps': 4, 'tokenizer.train_chars': 200_000}), tmp_path)
  assert {name: (tmp_path / name).read_bytes() for name in files} == before
  # Other batches, or another shuffle, than the ones the checkpoint's data position (a batch index) counts in.
  with pytest.raises(ValueError, match=r'resumes from step 2 with other data settings \(data\.seed=0 -> 1; '
                                       r'train\.batch_size=8 -> 4; train\.seq_len=64 -> 32\)'):
    train.run(tiny_config(cache_dir, **{**short, 'train.steps': 4, 'train.batch_size': 4, 'train.seq_len': 32,
                                        'data.seed': 1}), tmp_path)
  assert {name: (tmp_path / name).read_bytes() for name in files} == before
  # Fewer steps than the checkpoint holds: the summary would claim 1 step of a 2-step model.
  with pytest.raises(ValueError, match=r'holds step 2, beyond train.steps=1'):
    train.run(tiny_config(cache_dir, **{**short, 'train.steps': 1}), tmp_path)
  assert {name: (tmp_path / name).read_bytes() for name in files} == before
  # An optimizer state of another shape (no clipping: no clip state in the chain), which only the restore
  # finds: config.json was overwritten with the refused settings, and summary.json deleted; and the
  # good checkpoint was called damaged, to be moved out.
  with pytest.raises(ValueError, match=r'holds a checkpoint of another optimizer \(train\.grad_clip=1\.0 -> 0\.0\): '
                                       r'resume with the run.s own optimizer settings, or give a new --workdir$'):
    train.run(tiny_config(cache_dir, **{**short, 'train.steps': 4, 'train.grad_clip': 0.0}), tmp_path)
  assert {name: (tmp_path / name).read_bytes() for name in files} == before
  # A second process on the same directory (here: its lock held) is refused.
  with workdir_lock.held(tmp_path), pytest.raises(ValueError, match=rf'{tmp_path} is in use by pid {os.getpid()}'):
    train.run(tiny_config(cache_dir, **{**short, 'train.steps': 4}), tmp_path)
  assert {name: (tmp_path / name).read_bytes() for name in files} == before
  # The run's tokenizer.model as a host with 5 cores wrote it (SentencePiece records the thread
  # count): the same tokenizer as the one trained here.
  from sentencepiece import sentencepiece_model_pb2 as model_pb2
  kept = model_pb2.ModelProto.FromString((tmp_path / 'tokenizer.model').read_bytes())
  kept.trainer_spec.num_threads = 5
  (tmp_path / 'tokenizer.model').write_bytes(kept.SerializeToString())
  # The run resumes as it was, extended, with other evaluation, checkpoint and optimizer settings.
  train.run(tiny_config(cache_dir, **{**short, 'train.steps': 4, 'train.eval_every': 3, 'train.checkpoint_every': 3,
                                      'train.lr': 1e-3}), tmp_path)
  assert sorted(losses_by_step(tmp_path)) == [1, 2, 3, 4]
  assert [row['step'] for row in read_metrics(tmp_path) if 'val_loss' in row] == [0, 2, 3, 4]


def test_another_stage_or_a_start_from_itself_in_a_runs_workdir_is_refused_before_anything_is_written(
    tmp_path, cache_dir):
  """SFT with --workdir=P --config.init_from=P on a finished pretraining run P trained on from P's
  checkpoint and deleted its summary.json; a stage goes in a folder of its own."""
  import tiny_config
  seq_128 = {'model.max_seq_len': 128, 'train.seq_len': 128, 'train.warmup_steps': 1}
  train.run(tiny_config.tiny_config(cache_dir, **seq_128, **{'train.steps': 2}), tmp_path)
  files = ('config.json', 'tokenizer.model', 'metrics.jsonl', 'summary.json')
  before = {name: (tmp_path / name).read_bytes() for name in files}
  for config, message in (
      (tiny_config.tiny_sft_config(cache_dir, init_from=str(tmp_path), **{'train.steps': 4}),
       rf'{tmp_path} holds a task=pretrain run, and this config trains task=sft; train in a new --workdir with '
       rf'--config.init_from={tmp_path}'),
      (tiny_config.tiny_sft_config(cache_dir, **{'train.steps': 4}),
       rf'{tmp_path} holds a task=pretrain run, and this config trains task=sft'),
      (tiny_config.tiny_config(cache_dir, init_from=f'{tmp_path}/.', **seq_128, **{'train.steps': 4}),
       rf'init_from={tmp_path}/\. is the --workdir itself; train in a new --workdir with --config.init_from={tmp_path}')):
    with pytest.raises(ValueError, match=message):
      train.run(config, tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in files} == before
    assert not (tmp_path / 'init_from.json').exists()


def test_a_damaged_latest_checkpoint_is_one_line_naming_the_one_before_and_the_run_resumes_from_it(
    tmp_path, subprocess_env):
  """Array files deleted from the newest checkpoint (a disk fault, a copy cut short): the resume
  ended in pages of TensorStore specs; now one line names the folder and the step to fall back
  to, and once the folder is moved the run resumes from that step with nothing logged twice."""
  cmd, env = _main(tmp_path, subprocess_env, '--config.train.steps=10', '--config.train.checkpoint_every=5')
  subprocess.run(cmd, env=env, check=True, capture_output=True)
  checkpoints = tmp_path / 'checkpoints'
  for f in (checkpoints / '10' / 'state').glob('ocdbt.process_*/d/*'):
    f.unlink()
  result = subprocess.run(cmd, env=env, capture_output=True, text=True)
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr and 'Exception ignored' not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(f'llm: Unreadable: {checkpoints / "10"} is unreadable, damaged or incomplete ('), last
  assert last.endswith(f'); move it out of {checkpoints} to load the checkpoint before it, step 5'), last
  (checkpoints / '10').rename(tmp_path / 'step_10_damaged')
  subprocess.run(cmd, env=env, check=True, capture_output=True)
  assert [row['step'] for row in read_metrics(tmp_path) if 'loss' in row] == list(range(1, 11))


def test_after_a_damaged_checkpoint_only_the_errors_of_abandoned_reads_are_dropped(monkeypatch):
  """orbax's reads catch BaseException around their await and raise an Exception instead, so the
  GeneratorExit of a read abandoned when another failed, collected later, printed a traceback; and
  a TensorStore read finishing after orbax's event loop closed printed 'Event loop is closed'."""
  reported = []
  monkeypatch.setattr(sys, 'unraisablehook', lambda u: reported.append(u.exc_value))
  monkeypatch.setattr(logging.getLogger('asyncio'), 'filters', [])

  async def read_as_orbax_does():
    try:
      await types.coroutine(lambda: (yield))()
    except BaseException as e:
      raise Exception('Encountered error while reading array index') from e

  async def wait_for(read):
    await read

  def finish_a_read_after_its_loop_closed():
    promise, read = tensorstore.Promise.new()
    loop = asyncio.new_event_loop()
    loop.create_task(wait_for(read))
    loop.run_until_complete(asyncio.sleep(0))  # the task now waits on the read
    loop.close()
    promise.set_result(0)  # TensorStore hands the result to the closed loop

  class BrokenDel:
    def __del__(self):
      raise RuntimeError('a real error')

  class HandsToAClosedLoop:  # the same error as a closed loop's, raised by Python code: not dropped
    def __del__(self):
      loop = asyncio.new_event_loop()
      loop.close()
      loop.call_soon_threadsafe(print)

  def abandon_reads_and_break_objects():
    read = read_as_orbax_does()
    read.send(None)  # now suspended at its await, as orbax's other reads are
    del read
    finish_a_read_after_its_loop_closed()
    BrokenDel()
    HandsToAClosedLoop()
    gc.collect()

  abandon_reads_and_break_objects()
  assert [(type(e), str(e)) for e in reported] == [  # what printed, before the fix
      (Exception, 'Encountered error while reading array index'), (RuntimeError, 'Event loop is closed'),
      (RuntimeError, 'a real error'), (RuntimeError, 'Event loop is closed')]
  reported.clear()
  checkpoint._drop_errors_of_abandoned_reads()
  abandon_reads_and_break_objects()
  assert [str(e) for e in reported] == ['a real error', 'Event loop is closed']


def test_after_a_damaged_checkpoint_asyncio_logs_only_unread_errors_of_others_than_reads(monkeypatch, caplog):
  """A read abandoned when another failed ends with its error never read: asyncio logged each,
  pages of them, around the one-line error."""
  monkeypatch.setattr(sys, 'unraisablehook', sys.__unraisablehook__)
  monkeypatch.setattr(logging.getLogger('asyncio'), 'filters', [])

  async def fails_here():
    raise RuntimeError('a real error')

  def collect_unread_errors():
    loop = asyncio.new_event_loop()
    read = loop.create_future()  # as TensorStore's thread sets a failed read's error: no Python frame raised it
    read.set_exception(ValueError('FAILED_PRECONDITION: Error reading "params.lm_head/0.0"'))
    task = loop.create_task(fails_here())
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    del read, task
    gc.collect()

  with caplog.at_level(logging.ERROR, logger='asyncio'):
    collect_unread_errors()
    assert [r.exc_info[1].args[0] for r in caplog.records] == [  # what printed, before the fix
        'FAILED_PRECONDITION: Error reading "params.lm_head/0.0"', 'a real error']
    caplog.clear()
    checkpoint._drop_errors_of_abandoned_reads()
    collect_unread_errors()
  assert [r.exc_info[1].args[0] for r in caplog.records] == ['a real error']


@pytest.mark.parametrize('surfaces_at', ['the next save', 'the wait at the end'])
def test_a_save_that_finds_the_disk_full_is_one_error_naming_the_checkpoint_and_orbax_logs_no_tracebacks(
    tmp_path, monkeypatch, caplog, surfaces_at):
  """A full disk failed the save of step 5 in orbax's threads, which logged it with its tracebacks
  (330 lines) before it reached the next save, or the wait, as a ValueError of 425 characters of
  TensorStore detail."""
  import grain
  from orbax.checkpoint._src.serialization import serialization

  async def no_space(replica_slices, spec, **kwargs):  # TensorStore's error for a write to a full disk
    folder = spec['kvstore']['base']['path']
    raise ValueError(f'RESOURCE_EXHAUSTED: Error writing "{spec["kvstore"]["path"]}/0" in OCDBT database at local '
                     f'file "{folder}": Failed writing: "{folder}d/4b1c": Failed to write 4096 bytes to file 8: No '
                     "space left on device [os_error_code='28']")

  monkeypatch.setattr(serialization, 'async_serialize_from_host', no_space)
  for logger in ('absl', 'asyncio'):
    monkeypatch.setattr(logging.getLogger(logger), 'filters', [])
  monkeypatch.setattr(sys, 'unraisablehook', sys.unraisablehook)  # put back after the test
  ckpt = checkpoint.Checkpointer(tmp_path, keep=3)
  state, data = {name: jnp.ones(4) for name in 'abc'}, iter(grain.MapDataset.range(8).to_iter_dataset())
  with caplog.at_level(logging.INFO), pytest.raises(OSError) as e:
    ckpt.save(5, state, data)
    ckpt.save(10, state, data) if surfaces_at == 'the next save' else ckpt.wait()
  assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(tmp_path / '5'))
  assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_resuming_on_a_mesh_that_cannot_split_the_model_is_one_line_and_leaves_the_run_as_it_was(
    tmp_path, subprocess_env):
  """model.num_kv_heads=2 over mesh.tensor=4: JAX refused the layout only at restore, which said the
  good checkpoint was damaged, after config.json had taken the new mesh (which sampling then read)."""
  short = ['--config.train.steps=2', '--config.train.warmup_steps=1']
  cmd, env = _main(tmp_path, subprocess_env, *short)
  subprocess.run(cmd, env=env, check=True, capture_output=True)
  names = ('config.json', 'tokenizer.model', 'metrics.jsonl', 'summary.json')
  before = {name: (tmp_path / name).read_bytes() for name in names}
  cmd, env = _main(tmp_path, subprocess_env, '--config.train.steps=4', '--config.train.warmup_steps=1',
                   '--config.mesh.data=2', '--config.mesh.tensor=4', devices=8)
  result = subprocess.run(cmd, env=env, capture_output=True, text=True)
  assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('llm: ValueError: model.num_kv_heads=2 is not divisible by mesh.tensor=4, over which '
                         "config.mesh.rules.kv_heads splits state.params['"), last
  assert last.endswith('; set --config.mesh.tensor to a divisor of 2'), last
  assert {name: (tmp_path / name).read_bytes() for name in names} == before
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['2']


@pytest.mark.parametrize('overrides, message', [
    (['--config.mesh.data=1', '--config.mesh.tensor=8'], 'model.num_kv_heads=2 is not divisible by mesh.tensor=8'),
    (['--config.train.batch_size=4'],
     'train.batch_size=4 is not divisible by mesh.data*mesh.fsdp=8, the devices each batch is split over: set '
     '--config.train.batch_size to a multiple of 8, or choose sizes of --config.mesh.data and --config.mesh.fsdp '
     'whose product divides 4'),
    # This one ran, each micro-batch of 4 rows split over 8 devices.
    (['--config.train.grad_accum=2', '--config.mesh.data=2', '--config.mesh.fsdp=-1'],
     'train.batch_size/train.grad_accum=8/2=4 rows per micro-batch is not divisible by mesh.data*mesh.fsdp=8, the '
     'devices each batch is split over: set --config.train.batch_size to a multiple of 16'),
])
def test_a_mesh_that_cannot_split_the_model_or_the_batch_is_refused_before_the_data_is_prepared(
    tmp_path, python_env, overrides, message):
  cache = tmp_path / 'cache'
  cmd, env = _main(tmp_path / 'run', python_env, f'--config.data.cache_dir={cache}', *overrides, devices=8)
  result = subprocess.run(cmd, env=env, capture_output=True, text=True)
  assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(f'llm: ValueError: {message}'), last
  assert not cache.exists() and not (tmp_path / 'run' / 'config.json').exists()


def test_a_vocabulary_the_mesh_cannot_split_is_named_before_anything_is_written(tmp_path, subprocess_env):
  """The tokenizer's size is known only once the data is prepared: checked then, still before the run's files."""
  cmd, env = _main(tmp_path, subprocess_env, '--config.tokenizer.vocab_size=500', '--config.model.num_heads=8',
                   '--config.model.num_kv_heads=8', '--config.mesh.data=1', '--config.mesh.tensor=8', devices=8)
  result = subprocess.run(cmd, env=env, capture_output=True, text=True)
  assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1] == (
      "llm: ValueError: the tokenizer's vocab_size=500 is not divisible by mesh.tensor=8, over which "
      "config.mesh.rules.vocab splits state.params['embed']['embedding']; set --config.mesh.tensor to a divisor of 500")
  assert not (tmp_path / 'config.json').exists()


_RESTORE_ONTO_EIGHT = '''
import sys
import grain, jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from llm import checkpoint
ckpt = checkpoint.Checkpointer(sys.argv[1], keep=1)
data = iter(grain.MapDataset.range(4).to_iter_dataset())
ckpt.save(1, {'w': np.zeros((2, 4), np.float32)}, data)
ckpt.wait()
rows_over_8 = NamedSharding(jax.make_mesh((8,), ('x',)), P('x'))
try:
  ckpt.restore(1, {'w': jax.ShapeDtypeStruct((2, 4), np.float32, sharding=rows_over_8)}, data)
except Exception as e:
  print(type(e).__name__)
'''


def test_a_whole_checkpoint_restored_onto_a_mesh_that_cannot_split_it_is_not_called_damaged(tmp_path, python_env):
  """2 rows over 8 devices: JAX's error, not the files', was reported as an unreadable checkpoint
  with advice to move it out of the run."""
  out = subprocess.run([sys.executable, '-c', _RESTORE_ONTO_EIGHT, str(tmp_path / 'checkpoints')],
                       env=dict(python_env, XLA_FLAGS=xla_flags(8)), cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().splitlines()[-1] == 'IndivisibleError'


def test_a_finished_run_extended_and_stopped_keeps_no_summary_of_its_shorter_run(tmp_path, cache_dir, monkeypatch):
  """llm.sweep, like a reader, takes a summary.json for a finished run: one of the 2 steps the run
  had must not outlive a rerun with train.steps=4 that stops (here: dies at its last checkpoint)."""
  short = {'train.steps': 2, 'train.warmup_steps': 1}
  train.run(tiny_config(cache_dir, **short), tmp_path)
  assert json.loads((tmp_path / 'summary.json').read_text())['steps'] == 2
  save = checkpoint.Checkpointer.save

  def killed_at_step_4(self, step, *args, **kwargs):
    if step == 4:
      raise RuntimeError('killed')
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpoint.Checkpointer, 'save', killed_at_step_4)
  with pytest.raises(RuntimeError, match='killed'):
    train.run(tiny_config(cache_dir, **{**short, 'train.steps': 4}), tmp_path)
  assert not (tmp_path / 'summary.json').exists()


def test_wall_time_counts_every_session_of_a_resumed_run(tmp_path, cache_dir, monkeypatch):
  """summary.json's wall_s, which llm.report adds up, is the whole run's: a first session that took
  10,000 s on the loop's clock and stopped at its checkpoint of step 2 counts in the run's time,
  in the second session's summary and, through the second's checkpoint, in a third's."""
  short = {'train.steps': 2, 'train.warmup_steps': 1}
  calls = itertools.count()
  with monkeypatch.context() as slow:  # every reading after the session's start is 10,000 s on
    slow.setattr(train, 'time', types.SimpleNamespace(time=lambda: time.time() + (10_000 if next(calls) else 0)))
    assert train.run(tiny_config(cache_dir, **short), tmp_path)['wall_s'] >= 10_000
  for steps in (4, 6):
    assert train.run(tiny_config(cache_dir, **{**short, 'train.steps': steps}), tmp_path)['wall_s'] >= 10_000


def test_a_restart_cut_short_while_writing_config_or_tokenizer_leaves_them_whole(tmp_path, cache_dir, monkeypatch):
  """Every start writes config.json and the tokenizer into the run again. Here the disk fills up
  (as a kill would stop it) right after a file of that name is opened for writing: the run's own
  file must survive whole, and the next start resume."""
  config = tiny_config(cache_dir, **{'train.steps': 2, 'train.warmup_steps': 1})
  train.run(config, tmp_path)
  kept = {name: (tmp_path / name).read_bytes() for name in ('config.json', 'tokenizer.model')}
  real_open = builtins.open

  def disk_full_when_writing(name):
    def open_(file, mode='r', *args, **kwargs):
      opened = real_open(file, mode, *args, **kwargs)  # 'w' has emptied it already
      if set(mode) & set('wax+') and Path(file).parent == tmp_path and name in Path(file).name:
        opened.close()
        raise OSError(errno.ENOSPC, 'No space left on device', str(file))
      return opened
    return open_

  for name in kept:
    with monkeypatch.context() as full:
      for module in (builtins, io):  # open() and pathlib's io.open()
        full.setattr(module, 'open', disk_full_when_writing(name))
      with pytest.raises(OSError, match='No space left'):
        train.run(config, tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in kept} == kept, name
  train.run(config, tmp_path)
  assert {name: (tmp_path / name).read_bytes() for name in kept} == kept


@pytest.mark.parametrize('names, file', [((), ''), (('.lock',), '.lock'), (('metrics.jsonl',), 'metrics.jsonl')])
def test_a_full_disk_ends_in_one_line_naming_the_file_to_free_space_and_rerun(tmp_path, subprocess_env, names, file):
  """The run's disk full from the start (which the writability check finds), or filling up when
  the lock or the metrics are written: each ended in a traceback of an OSError naming no file."""
  workdir = tmp_path / 'run'
  cmd, env = _main(workdir, subprocess_env, '--config.train.steps=2')
  fill_then_run = (f'import runpy, sys; from pathlib import Path; import full_disk; '
                   f'full_disk.fill(Path({str(workdir)!r}), {names!r}); sys.argv[0] = "llm.main"; '
                   'runpy.run_module("llm.main", run_name="__main__")')
  env = dict(env, PYTHONPATH=f'{ROOT}{os.pathsep}{ROOT / "tests"}')
  result = subprocess.run([sys.executable, '-c', fill_then_run, *cmd[3:]], env=env, capture_output=True, text=True)
  assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1] == (
      f'llm: no space left on device writing {workdir / file}: free space on that disk, then rerun the same '
      'command to resume from its last checkpoint')


def test_a_config_or_summary_that_is_not_json_is_named(tmp_path, cache_dir):
  """Cut short (empty) by a full disk: each start read the run's config.json, and a finished run
  rerun its summary.json, ending in json's bare 'Expecting value: line 1 column 1 (char 0)'."""
  config = tiny_config(cache_dir, **{'train.steps': 2, 'train.warmup_steps': 1})
  train.run(config, tmp_path / 'run')
  other_model = tiny_config(cache_dir, **{'train.steps': 2, 'train.warmup_steps': 1, 'model.mlp_dim': 128})
  (tmp_path / 'new').mkdir()
  for workdir, file, run_config in [('run', 'config.json', config), ('run', 'config.json', other_model),
                                    ('run', 'summary.json', config), ('new', 'config.json', config)]:
    path = tmp_path / workdir / file
    kept = path.read_text() if path.exists() else ''
    path.write_text('')
    with pytest.raises(ValueError, match=re.escape(f'{path} is not valid JSON (Expecting value: line 1 column 1); '
                                                   'remove it')):
      train.run(run_config, path.parent)
    path.write_text(kept)


def test_an_empty_or_unwritable_workdir_is_refused_before_training(tmp_path, cache_dir, monkeypatch):
  monkeypatch.chdir(tmp_path)  # where a run with an empty --workdir would have trained
  with pytest.raises(ValueError, match='--workdir is empty'):
    train.run(tiny_config(cache_dir, **{'train.steps': 1}), '')
  assert list(tmp_path.iterdir()) == []
  (tmp_path / 'a_file').write_text('')
  with pytest.raises(PermissionError, match='a_file/run cannot be written'):
    train.run(tiny_config(cache_dir, **{'train.steps': 1}), tmp_path / 'a_file' / 'run')


@pytest.mark.parametrize('schedule', ['cosine', 'wsd'])
def test_warmup_is_fitted_to_a_short_run(schedule):
  from llm import optim
  from llm.config import base_config
  tc = base_config().train
  tc.update(dict(steps=10, warmup_steps=100, schedule=schedule))
  optim.fit_warmup(tc)
  assert tc.warmup_steps == 1
  lr = optim.make_optimizer(tc)[1]
  assert float(lr(1)) == pytest.approx(tc.lr)
  tc.update(dict(steps=1000, warmup_steps=100))
  optim.fit_warmup(tc)
  assert tc.warmup_steps == 100  # a warmup the run holds is left alone


def _train_settings(**settings):
  from llm.config import base_config
  tc = base_config().train
  tc.update(settings)
  return tc


def test_wsd_schedule_warms_up_holds_and_decays_to_the_final_lr():
  """lr 2, 100 steps, 10 of warmup, the last 20% decaying to min_lr_ratio 0.1: counts 0-10 rise
  linearly from 0 to 2, 10-80 hold 2, 80-100 fall linearly to 0.2. Step s runs at count s - 1,
  so the last step runs at 2 - 1.8 x 19/20 = 0.29."""
  from llm import optim
  lr = optim.schedule(_train_settings(lr=2.0, steps=100, warmup_steps=10, schedule='wsd', decay_fraction=0.2,
                                      min_lr_ratio=0.1))
  by_hand = {0: 0.0, 5: 1.0, 10: 2.0, 45: 2.0, 80: 2.0, 90: 2.0 - 1.8 * 10 / 20, 99: 0.29, 100: 0.2}
  assert {count: float(lr(count)) for count in by_hand} == pytest.approx(by_hand)


def test_cosine_schedule_warms_up_then_follows_a_half_cosine_to_the_final_lr():
  """lr 2, 100 steps, 10 of warmup, min_lr_ratio 0.1: after the warmup,
  0.2 + 1.8 x (1 + cos(pi x (count - 10) / 90)) / 2, halfway (count 55) 1.1, at count 100 0.2."""
  from llm import optim
  lr = optim.schedule(_train_settings(lr=2.0, steps=100, warmup_steps=10, schedule='cosine', min_lr_ratio=0.1))
  cosine = lambda count: 0.2 + 1.8 * (1 + math.cos(math.pi * (count - 10) / 90)) / 2
  by_hand = {0: 0.0, 5: 1.0, 10: 2.0, 25: cosine(25), 55: 1.1, 99: cosine(99), 100: 0.2}
  assert {count: float(lr(count)) for count in by_hand} == pytest.approx(by_hand)


def test_the_optimizer_clips_the_global_gradient_norm_before_adamw():
  """Two steps, gradients of global norm 100 then 0.5, grad_clip 1: the first is scaled to norm 1
  by hand, the second left alone, and optax.adamw on those (weight decay on the matrix, not the
  norm scale) gives the updates the run's optimizer must. Adam's first step alone would not tell:
  it divides a gradient's scale out."""
  import optax
  from llm import optim
  tc = _train_settings(lr=0.1, steps=100, warmup_steps=0, schedule='wsd', grad_clip=1.0)
  params = {'w': jnp.ones((2, 3)), 'norm_scale': jnp.ones(4)}
  rng = np.random.default_rng(0)
  grads = []
  for norm in (100.0, 0.5):
    g = {'w': rng.normal(size=(2, 3)), 'norm_scale': rng.normal(size=4)}
    total = math.sqrt(sum(float(np.sum(v ** 2)) for v in g.values()))
    grads.append({k: jnp.asarray(v * norm / total, jnp.float32) for k, v in g.items()})
  clipped = [{k: v / 100.0 for k, v in grads[0].items()}, grads[1]]
  reference = optax.adamw(0.1, b1=tc.b1, b2=tc.b2, eps=tc.eps, weight_decay=tc.weight_decay,
                          mask={'w': True, 'norm_scale': False})
  tx = optim.make_optimizer(tc)[0]
  state, ref_state = tx.init(params), reference.init(params)
  for g, g_clipped in zip(grads, clipped):
    updates, state = tx.update(g, state, params)
    expected, ref_state = reference.update(g_clipped, ref_state, params)
    for k in params:
      np.testing.assert_allclose(updates[k], expected[k], rtol=1e-5, atol=1e-7)


def test_a_warmup_as_long_as_the_run_is_fitted_too():
  """warmup_steps == steps leaves no step past the warmup: fitted to a tenth, like a longer one."""
  from llm import optim
  tc = _train_settings(steps=10, warmup_steps=10)
  optim.fit_warmup(tc)
  assert tc.warmup_steps == 1


def test_grad_clip_zero_turns_clipping_off():
  """grad_clip=0 is off: the updates are optax.adamw's on the gradients as given (a clip to norm 0
  would zero them, leaving weight decay alone)."""
  import optax
  from llm import optim
  tc = _train_settings(lr=0.1, steps=100, warmup_steps=0, schedule='wsd', grad_clip=0.0)
  params, grads = {'w': jnp.ones((2, 3))}, {'w': jnp.full((2, 3), 0.5)}
  tx = optim.make_optimizer(tc)[0]
  reference = optax.adamw(0.1, b1=tc.b1, b2=tc.b2, eps=tc.eps, weight_decay=tc.weight_decay)
  updates, _ = tx.update(grads, tx.init(params), params)
  expected, _ = reference.update(grads, reference.init(params), params)
  np.testing.assert_allclose(updates['w'], expected['w'], rtol=1e-6)


def test_optimizer_settings_on_the_edges_of_their_ranges():
  """min_lr_ratio 1 (a constant lr after warmup) is allowed; b2 1 (no second-moment decay) is not."""
  from llm import optim
  optim.check_settings(_train_settings(min_lr_ratio=1.0, steps=10))
  with pytest.raises(ValueError, match=re.escape('train.b2=1.0 must be in [0, 1)')):
    optim.check_settings(_train_settings(b2=1.0, steps=10))


def _toy_train_step(grad_accum, lr_fn=lambda count: 0.0):
  """make_train_step on a one-weight model: per row the loss mask x (w x - y)^2, and an aux metric
  {'x': (sum of x, rows)}, under plain SGD at rate 1."""
  import optax

  def loss_fn(model, params, batch):
    del model
    err = (params['w'] * batch['x'] - batch['y']) ** 2
    return (err * batch['mask']).sum(), batch['mask'].sum(), {'x': (batch['x'].sum(), batch['x'].shape[0])}

  step = jax.jit(train.make_train_step(None, optax.sgd(1.0), lr_fn, loss_fn, grad_accum))
  params = {'w': jnp.float32(0.0)}
  return step, train.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optax.sgd(1.0).init(params))


def test_a_train_step_averages_aux_metrics_over_every_micro_batch_row_and_logs_the_lr_it_ran_at():
  """x = 1, 2, 3, 4: the aux metric is their mean 2.5 with or without accumulation; and the first
  step logs the lr of optimizer count 0 (here 0 x 0.1), the rate it ran at."""
  batch = {'x': jnp.array([1.0, 2.0, 3.0, 4.0]), 'y': jnp.zeros(4), 'mask': jnp.ones(4)}
  for accum in (1, 2):
    step, state = _toy_train_step(accum, lr_fn=lambda count: 0.1 * count)
    _, metrics = step(state, batch)
    assert (float(metrics['x']), float(metrics['lr'])) == (2.5, 0.0)


def test_a_batch_without_loss_tokens_is_a_step_of_zero_loss_not_nan():
  """Mask all 0 (say, every response cut off): the loss and the update are 0, not 0 / 0."""
  step, state = _toy_train_step(1)
  batch = {'x': jnp.array([1.0, 2.0]), 'y': jnp.array([5.0, 5.0]), 'mask': jnp.zeros(2)}
  state, metrics = step(state, batch)
  assert (float(metrics['loss']), float(state.params['w'])) == (0.0, 0.0)

def test_a_run_shorter_than_the_warmup_fits_the_warmup(tmp_path, cache_dir):
  """--config.train.steps=N sets a run's length whatever the config's warmup (5 here)."""
  train.run(tiny_config(cache_dir, **{'train.steps': 3}), tmp_path)
  assert json.loads((tmp_path / 'config.json').read_text())['train']['warmup_steps'] == 0
  assert sorted(losses_by_step(tmp_path)) == [1, 2, 3]


def test_an_mfu_above_one_warns_once_that_the_peak_is_too_low(tmp_path, cache_dir, caplog):
  """A CPU peak measured while other jobs ran is too low; the MFU it gives is impossible."""
  config = tiny_config(cache_dir, **{'train.steps': 3, 'train.log_every': 1, 'train.peak_flops_per_device': 1.0})
  with caplog.at_level('WARNING'):
    train.run(config, tmp_path)
  rates = [row for row in read_metrics(tmp_path) if 'loss' in row]
  assert 'mfu' not in rates[0]  # step 1 compiles: no rate, rather than 0 tokens/s
  assert all(row['mfu'] > 1 for row in rates[1:])
  assert sum('python -m llm.bench --peak' in r.getMessage() for r in caplog.records) == 1


def test_empty_corpus_is_named(tmp_path, cache_dir):
  (tmp_path / 'corpus').mkdir()
  (tmp_path / 'corpus' / 'empty.txt').write_text('\n\n   \n')
  config = tiny_config(cache_dir, **{'data.dir': str(tmp_path), 'data.source': 'corpus',
                                     'data.format': 'text_folder'})
  with pytest.raises(ValueError, match='empty'):
    train.run(config, tmp_path / 'run')


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, cache_dir):
  config = tiny_config(cache_dir, **{'train.lr': 1e9, 'train.grad_clip': 0.0, 'train.warmup_steps': 1,
                                     'train.checkpoint_every': 1, 'train.steps': 30})
  with pytest.raises(FloatingPointError, match=r'at step \d+') as error:
    train.run(config, tmp_path)
  ckpt = checkpoint.Checkpointer(tmp_path / 'checkpoints', keep=3)
  last = ckpt.latest_step()
  assert f'checkpoint is step {last}' in str(error.value)
  params = ckpt.restore_raw(last)['params']
  ckpt.close()
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_gpt2_124m_config_runs_shrunk_on_eight_fsdp_devices(tmp_path, subprocess_env):
  """The GPU/TPU config as it is (bf16, remat, FSDP over all devices), only smaller and on local data."""
  shrink = ['--config.model.num_layers=2', '--config.model.dim=64', '--config.model.num_heads=4',
            '--config.model.num_kv_heads=4', '--config.model.mlp_dim=256', '--config.model.max_seq_len=64',
            '--config.train.seq_len=64', '--config.train.batch_size=16', '--config.train.grad_accum=2',
            '--config.train.steps=4', '--config.train.warmup_steps=1', '--config.train.eval_batches=1',
            '--config.tokenizer.vocab_size=512', '--config.tokenizer.train_chars=400000',
            f'--config.data.dir={SHARED_DATA}', '--config.data.source=tinyshakespeare/input.txt',
            '--config.data.format=text_file', '--config.data.val_fraction=0.05', '--config.train.progress_bar=False',
            '--config.train.log_every=1']
  cmd = [sys.executable, '-m', 'llm.main', f'--config={ROOT}/configs/pretrain_gpt2_124m.py',
         f'--workdir={tmp_path}', *shrink]
  env = dict(subprocess_env, XLA_FLAGS=xla_flags(8))
  subprocess.run(cmd, env=env, check=True, capture_output=True)
  summary = json.loads((tmp_path / 'summary.json').read_text())
  config = json.loads((tmp_path / 'config.json').read_text())
  assert summary['devices'] == 8 and np.isfinite(summary['val_loss'])
  assert config['model']['dtype'] == 'bfloat16' and config['mesh']['fsdp'] == -1
  assert sorted(losses_by_step(tmp_path)) == [1, 2, 3, 4]


@pytest.mark.parametrize('text, message', [
    ('def get_config(:\n', 'bad.py:1: SyntaxError: invalid syntax'),
    ('x = 1\n', 'the --config file defines no get_config()'),
])
def test_a_config_file_that_cannot_be_loaded_is_named_in_one_line(tmp_path, python_env, text, message):
  (tmp_path / 'bad.py').write_text(text)
  result = subprocess.run([sys.executable, '-m', 'llm.main', f'--config={tmp_path / "bad.py"}',
                           f'--workdir={tmp_path / "run"}'], env=python_env, cwd=ROOT, capture_output=True, text=True)
  assert result.returncode != 0 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1].startswith('llm: ') and message in result.stderr
  assert not (tmp_path / 'run').exists()


# Every config file but sft_hf.py, whose argument is a directory (an imported run's).
CONFIGS_WITH_CHECKED_ARGS = sorted(p.stem for p in (ROOT / 'configs').glob('*.py') if p.stem != 'sft_hf')


@pytest.mark.parametrize('name', CONFIGS_WITH_CHECKED_ARGS)
def test_every_config_refuses_an_argument_it_does_not_take(name):
  """configs/pretrain_small.py:foo ran the whole job as if no argument were given, and so did the
  configs built on it (sft_small.py:seed=1 trained seed 0)."""
  import importlib
  with pytest.raises(ValueError):
    importlib.import_module(f'configs.{name}').get_config('foo=1')  # a key no config takes


def test_rlhf_hh_takes_rlhf_golds_beta_and_refuses_its_proxy():
  """rlhf_hh's proxy is runs/rm_hh: rlhf_gold's proxy= was taken and then replaced."""
  from configs import rlhf_hh
  with pytest.raises(ValueError, match=r"config argument 'proxy=rm_x': write beta=F"):
    rlhf_hh.get_config('proxy=rm_x')
  c = rlhf_hh.get_config('beta=0.1')
  assert (c.grpo.beta, c.rlhf.proxy) == (0.1, 'runs/rm_hh')


def test_a_config_argument_the_config_does_not_take_is_one_line_before_anything_is_written(tmp_path, python_env):
  result = subprocess.run([sys.executable, '-m', 'llm.main', '--config=configs/sft_small.py:seed=1',
                           f'--workdir={tmp_path / "run"}'], env=python_env, cwd=ROOT, capture_output=True, text=True)
  assert result.returncode != 0 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == (
      "llm: flag --config=configs/sft_small.py:seed=1: Error whilst parsing config file: ValueError: config argument "
      "'seed=1': this config takes none; set a field with --config.KEY=VALUE")
  assert not (tmp_path / 'run').exists()



def test_a_run_refused_at_its_start_leaves_no_folder_it_made_and_keeps_one_it_was_given(tmp_path):
  """Missing data: the run ends before writing anything. The folder it made (and its lock) goes;
  one that was there before stays, as do the folders above the new one."""
  config = tiny_config(tmp_path / 'cache', **{'data.dir': str(tmp_path), 'data.source': 'nope.txt'})
  new = tmp_path / 'runs' / 'new'
  with pytest.raises(FileNotFoundError, match='nope.txt'):
    train.run(config, new)
  assert not new.exists() and (tmp_path / 'runs').is_dir()
  given = tmp_path / 'given'
  given.mkdir()
  with pytest.raises(FileNotFoundError, match='nope.txt'):
    train.run(config, given)
  assert given.is_dir()


def test_resuming_warns_of_changed_sections_and_not_of_fields_the_code_gained_since(tmp_path, caplog):
  """A run started before data.made_by existed logged 'a changed config (sections ['data'])' on every
  first resume, though nothing of its own had changed."""
  config = tiny_config(tmp_path, **{'data.made_by': 'python -m llm.honesty.world --out=runs/world'})
  saved = json.loads(config.to_json_best_effort())
  del saved['data']['made_by']
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  with caplog.at_level(logging.WARNING):
    train._write_config(config, tmp_path)
  assert 'changed config' not in caplog.text
  assert json.loads((tmp_path / 'config.json').read_text())['data']['made_by'] == config.data.made_by
  config.train.lr *= 2
  config.data.val_fraction = 0.5
  with caplog.at_level(logging.WARNING):
    train._write_config(config, tmp_path)
  assert "changed config (sections ['data', 'train'])" in caplog.text
