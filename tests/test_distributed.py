"""Multi-process training: two JAX processes on this machine (CPU, gloo collectives, one device
each) train as one job on a 2-device mesh, and match one process holding both devices."""
import json
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import ROOT, losses_by_step, xla_flags
from llm import checkpoint
from llm.data import pipeline
from llm.kernels import cpu_attention

TIMEOUT_S = 300  # a hung collective or barrier fails the test instead of blocking CI (not 120: two JAX processes compiling on a loaded 2-core host took longer)


class _RecordingTokens:
  """A token stream that remembers which windows were read from it."""

  def __init__(self, tokens, seq_len):
    self._tokens, self._seq_len, self.windows_read = tokens, seq_len, set()

  def __len__(self):
    return len(self._tokens)

  def __getitem__(self, where):
    self.windows_read.add(where.start // self._seq_len)
    return self._tokens[where]


def test_each_process_reads_only_its_rows_of_each_batch():
  seq_len, batch, steps = 8, 8, 10  # 10 (+ prefetched) batches stay inside the first epoch
  tokens = np.arange(2000, dtype=np.uint16)  # window i starts with token i * seq_len

  def batches(process_index, process_count):
    stream = _RecordingTokens(tokens, seq_len)
    it = iter(pipeline.train_dataset(stream, seq_len, batch, 0, process_index, process_count))
    windows = [next(it)['inputs'][:, 0] // seq_len for _ in range(steps)]
    return windows, stream.windows_read

  whole, _ = batches(0, 1)
  (rows0, read0), (rows1, read1) = batches(0, 2), batches(1, 2)
  for step in range(steps):
    np.testing.assert_array_equal(np.concatenate([rows0[step], rows1[step]]), whole[step])
  given0, given1 = set(np.concatenate(rows0)), set(np.concatenate(rows1))
  assert given0 <= read0 and given1 <= read1
  assert not read0 & given1 and not read1 & given0


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start(workdir, env, log, *overrides):
  cmd = [sys.executable, '-m', 'llm.main', f'--config={ROOT}/tests/tiny_config.py', f'--workdir={workdir}',
         '--config.train.steps=6', '--config.train.checkpoint_every=3', *overrides]
  return subprocess.Popen(cmd, env=env, stdout=log.open('w'), stderr=subprocess.STDOUT)


def _wait_all(procs: dict):
  deadline = time.monotonic() + TIMEOUT_S
  try:
    for name, (proc, log) in procs.items():
      rc = proc.wait(timeout=max(deadline - time.monotonic(), 1))
      assert rc == 0, f'{name} exited {rc}:\n{log.read_text()[-3000:]}'
  finally:
    for proc, _ in procs.values():
      if proc.poll() is None:
        proc.kill()
        proc.wait()


_AGREE = '''
import json, os, sys
from pathlib import Path
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from llm.kernels import cpu_attention
kernel_ms = {0: 1.0, 1: 3.0}[jax.process_index()]  # process 0 timed the kernel faster, process 1 slower
(Path(os.environ['LLM_CACHE_DIR']) / 'kernels' / 'choices.json').write_text(
    json.dumps({cpu_attention.choice_key('causal', (2, 32, 4, 2, 16)): [kernel_ms, 2.0]}))
print(json.dumps(cpu_attention.faster_than_xla((2, 32, 4, 16), (2, 32, 2, 16))))
'''


def test_processes_that_timed_the_attention_kernel_differently_take_process_zeros_choice(tmp_path, python_env):
  """Otherwise they would compile different programs for one SPMD job (and hang or diverge)."""
  if cpu_attention._compiler() is None:
    pytest.skip('no C++ compiler here')
  address = f'localhost:{_free_port()}'
  procs = []
  for i in (0, 1):
    (tmp_path / str(i) / 'kernels').mkdir(parents=True)
    env = dict(python_env, LLM_CACHE_DIR=str(tmp_path / str(i)), XLA_FLAGS=xla_flags(1))
    procs.append(subprocess.Popen([sys.executable, '-c', _AGREE, address, str(i)], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
  outs = [proc.communicate(timeout=TIMEOUT_S)[0] for proc in procs]
  assert [out.strip().splitlines()[-1] for out in outs] == ['true', 'true'], outs


def test_two_processes_train_like_one_process_with_two_devices(tmp_path, subprocess_env, cache_dir):
  pair, single = tmp_path / 'pair', tmp_path / 'single'
  # One attention implementation for both layouts: `auto` would time the CPU kernel once per
  # cache directory, and these use two, so they could choose differently.
  attention = f"--config.model.attention={'cpu_kernel' if cpu_attention._compiler() else 'xla'}"
  # A cache of its own, empty: the two processes would race to build the tokenizer and token
  # caches, unless process 0 builds them first.
  pair_env = dict(subprocess_env, LLM_CACHE_DIR=str(tmp_path / 'cache'), JAX_NUM_PROCESSES='2',
                  JAX_COORDINATOR_ADDRESS=f'localhost:{_free_port()}',
                  XLA_FLAGS=xla_flags(1))
  single_env = dict(subprocess_env, LLM_CACHE_DIR=str(cache_dir),
                    XLA_FLAGS=xla_flags(2))
  procs = {f'process {i}': (_start(pair, dict(pair_env, JAX_PROCESS_ID=str(i)), tmp_path / f'{i}.log', attention),
                            tmp_path / f'{i}.log') for i in (0, 1)}
  procs['single process'] = (_start(single, single_env, tmp_path / 'single.log', attention), tmp_path / 'single.log')
  _wait_all(procs)

  # Process 0 alone writes the run's files: one line per logged step, one summary.
  rows = [json.loads(l) for l in (pair / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == [0, 1, 2, 3, 4, 5, 6, 6]  # eval at 0, steps, final eval
  assert sorted(p.name for p in pair.iterdir()) == sorted(p.name for p in single.iterdir())
  assert len(list((pair / 'tensorboard').iterdir())) == 1
  assert len(list((tmp_path / 'cache' / 'tokenizers').glob('*.model'))) == 1
  summaries = [json.loads((run / 'summary.json').read_text()) for run in (pair, single)]
  assert summaries[0]['devices'] == summaries[1]['devices'] == 2

  # The two layouts run the same program, and its only cross-device reductions are sums of two
  # values (gradients, loss): a + b is the same float whichever device or process adds it, so
  # losses and parameters agree to the bit. Meshes of more devices may sum in another order.
  a, b = losses_by_step(pair), losses_by_step(single)
  assert sorted(a) == list(range(1, 7))
  assert [a[s] for s in range(1, 7)] == [b[s] for s in range(1, 7)]
  assert a[6] < a[1]
  assert summaries[0]['val_loss'] == summaries[1]['val_loss']
  params = []
  for run in (pair, single):
    assert sorted(p.name for p in (run / 'checkpoints').iterdir()) == ['3', '6']
    ckpt = checkpoint.Checkpointer(run / 'checkpoints', keep=3)
    params.append(ckpt.restore_raw(6)['params'])
    ckpt.close()
  jax.tree.map(np.testing.assert_array_equal, params[0], params[1])
  # Each process saved its own position in the data.
  assert sorted(p.name for p in (pair / 'checkpoints' / '3' / 'data').glob('process_*')) == [
      'process_0-of-2.json', 'process_1-of-2.json']

  # Lose the last checkpoint, as a job killed after step 3 would: both processes resume from
  # step 3, each from its own data position, and redo steps 4-6 exactly.
  shutil.rmtree(pair / 'checkpoints' / '6')
  (pair / 'summary.json').unlink()
  _wait_all({f'resumed process {i}': (_start(pair, dict(pair_env, JAX_PROCESS_ID=str(i)), tmp_path / f'r{i}.log',
                                             attention),
                                      tmp_path / f'r{i}.log') for i in (0, 1)})
  assert 'resuming' in (tmp_path / 'r0.log').read_text()
  resumed = losses_by_step(pair)
  assert [resumed[s] for s in range(1, 7)] == [b[s] for s in range(1, 7)]
  assert json.loads((pair / 'summary.json').read_text())['val_loss'] == summaries[1]['val_loss']
