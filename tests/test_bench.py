"""The benchmarks' JSON: every result names the host it was measured on, and the decode
benchmark's ratios are ours over the yardstick's rate of the same round."""
import json
import subprocess
import sys
import types

import numpy as np
import pytest

from llm import bench, bench_data, bench_decode, bench_serve, hostinfo
from conftest import ROOT


def test_decode_ratios_are_each_rounds_rate_over_the_yardsticks_and_name_the_host(monkeypatch):
  yardstick = iter([100.0, 50.0])  # one rate per round, as the torch decoder's JSON gives it
  monkeypatch.setattr(bench_decode, '_reference',
                      lambda shape: {'decode_tokens_per_s': next(yardstick), 'dtype': 'float32'})
  # Each round times 4 tokens less 1 (differences below), then the prefill; the recompute
  # baseline takes the last time.
  differences, seconds = iter([0.4, 0.2]), iter([0.1, 0.1, 2.0])
  monkeypatch.setattr(bench_decode, 'median_difference_seconds',
                      lambda long, short, repeats=5: (long(), short(), next(differences))[-1])
  monkeypatch.setattr(bench_decode, 'median_seconds', lambda fn, repeats=3: (fn(), next(seconds))[1])
  config = bench.bench_config(layers=1, heads=2, dim=32, seq=16, batch=1, steps=1, warmup=0, dtype='bfloat16')
  result = bench_decode.run(config, vocab=64, batches=(2,), new_tokens=4, rounds=2, repeats=1)
  assert result['host'] == hostinfo.describe()
  assert (result['dtype'], result['torch_dtype']) == ('bfloat16', 'float32')
  # batch 2 x 3 tokens after the first, over 0.4 s and 0.2 s: 15 and 30 tokens/s.
  assert result['b2_rounds_tokens_per_s'] == [[15.0, 100.0], [30.0, 50.0]]
  assert result['b2_ratio_to_torch_rounds'] == [0.15, 0.6]
  medians = result['b2_kv_tokens_per_s'], result['b2_torch_tokens_per_s'], result['b2_ratio_to_torch']
  assert medians == (22.5, 75.0, 0.38)
  assert result['b2_recompute_tokens_per_s'] == 4.0  # 2 rows x 4 steps in 2 s


def test_a_decode_time_is_the_median_of_differences_of_calls_run_back_to_back(monkeypatch):
  """The VM slows down between the short and the long call of the third pair: the difference of
  the two medians would be 0.8 s, each pair's difference is 0.4 s but that one."""
  clock = [0.0]
  monkeypatch.setattr(bench_decode.time, 'perf_counter', lambda: clock[0])
  shorts, longs = iter([0, 0.1, 0.1, 0.1, 0.5, 0.5]), iter([0, 0.5, 0.5, 0.9, 0.9, 0.9])  # the first: compiling

  def call(times):
    clock[0] += next(times)

  seconds = bench_decode.median_difference_seconds(lambda: call(longs), lambda: call(shorts), repeats=5)
  assert seconds == pytest.approx(0.4)


def test_the_data_benchmark_names_the_host(monkeypatch, tmp_path):
  from configs import pretrain_small
  from llm import data
  config = pretrain_small.get_config()
  config.train.update(batch_size=2, seq_len=8)
  tokens = np.arange(10_000, dtype=np.uint16)
  monkeypatch.setattr(data, 'prepare', lambda config, cache: types.SimpleNamespace(train_tokens=tokens))
  monkeypatch.setenv('LLM_CACHE_DIR', str(tmp_path))
  result = bench_data.run(config, batches=5)
  assert result['host'] == hostinfo.describe()
  assert result['tokens_per_s'] > 0 and result['numpy_slicing_tokens_per_s'] > 0


def test_every_serving_level_names_the_host(monkeypatch, tmp_path):
  """bench_serve.run with its server and clients stood in for: the levels it prints carry the host."""
  httpx = pytest.importorskip('httpx')

  class _Server:
    returncode = None
    poll = staticmethod(lambda: None)
    terminate = staticmethod(lambda: None)
    wait = staticmethod(lambda timeout: 0)

  async def level(url, clients, rounds, max_tokens, temperature, seed0):
    return {'clients': clients, 'tokens_per_s': 10.0 * clients}

  monkeypatch.setattr(bench_serve.subprocess, 'Popen', lambda *a, **kw: _Server())
  monkeypatch.setattr(httpx, 'get', lambda *a, **kw: types.SimpleNamespace(status_code=200))
  monkeypatch.setattr(bench_serve, '_level', level)
  levels = bench_serve.run([1, 4], workdir=str(tmp_path))
  assert [r['tokens_per_s_vs_first'] for r in levels] == [1.0, 4.0]
  assert all(r['host'] == hostinfo.describe(bench_serve._SERVER_PLATFORM) for r in levels)


def test_a_train_step_result_says_what_it_timed(monkeypatch):
  monkeypatch.setattr(hostinfo, 'peak_flops_per_device', lambda: 1e9)  # no peak measured for the test
  config = bench.bench_config(layers=1, heads=2, dim=16, seq=8, batch=2, steps=1, warmup=1, dtype='bfloat16',
                              remat='full')
  result = bench.run_bench(config, vocab=32, steps=1, warmup=1)
  timed = {k: result.get(k) for k in ('dtype', 'remat', 'layers', 'heads', 'dim', 'seq', 'batch', 'vocab')}
  assert timed == {'dtype': 'bfloat16', 'remat': 'full', 'layers': 1, 'heads': 2, 'dim': 16, 'seq': 8, 'batch': 2,
                   'vocab': 32}


def test_a_train_step_mfu_above_one_warns_that_the_peak_is_too_low(monkeypatch, caplog):
  """As the training loop does: an MFU above 1 is impossible, the peak it divides by too low."""
  monkeypatch.setattr(hostinfo, 'peak_flops_per_device', lambda: 1.0)  # far below any real CPU's
  config = bench.bench_config(layers=1, heads=2, dim=16, seq=8, batch=2, steps=1, warmup=1)
  with caplog.at_level('WARNING'):
    result = bench.run_bench(config, vocab=32, steps=1, warmup=1)
  assert result['mfu'] > 1
  assert sum('python -m llm.bench --peak' in r.getMessage() for r in caplog.records) == 1


def test_rounds_run_ours_with_the_dtype_and_remat_asked_for(monkeypatch):
  from llm import bench_rounds
  commands = []

  def child(cmd, **kwargs):  # one of our runs: its command, and a JSON line as llm.bench prints it
    commands.append(cmd)
    return types.SimpleNamespace(stdout=json.dumps({'tokens_per_s': 100.0, 'host': {}}) + '\n')

  monkeypatch.setattr(bench_rounds.subprocess, 'run', child)
  shape = dict(layers=1, heads=2, dim=16, seq=8, batch=2, vocab=32, steps=1, warmup=0)
  summary = bench_rounds.run(1, shape, lambda shape: None, {'dtype': 'bfloat16', 'remat': 'full'})
  assert len(commands) == 2  # attention auto, then xla
  assert all('--dtype=bfloat16' in cmd and '--remat=full' in cmd for cmd in commands), commands
  assert (summary['dtype'], summary['remat'], summary['dim']) == ('bfloat16', 'full', 16)


def test_a_ratio_to_torch_names_both_precisions(monkeypatch, tmp_path):
  """On a CPU the yardstick runs fp32 whatever --dtype: a bfloat16 ratio must say it is one."""
  from llm import bench_rounds, torch_yardstick
  pytest.importorskip('torch')

  def child(cmd, **kwargs):  # our runs, and the yardstick script (its JSON line as it prints it)
    torch_run = str(cmd[1]).endswith('torch_gpt_reference.py')
    result = {'impl': 'torch-reference', 'tokens_per_s': 50.0} if torch_run else {'tokens_per_s': 100.0, 'host': {}}
    return types.SimpleNamespace(stdout=json.dumps(result) + '\n')

  monkeypatch.setattr(subprocess, 'run', child)
  (tmp_path / 'torch_gpt_reference.py').touch()  # never run: subprocess.run above answers for it
  monkeypatch.setattr(torch_yardstick, 'SHARED_BENCH', tmp_path)
  shape = dict(layers=1, heads=2, dim=16, seq=8, batch=2, vocab=32, steps=1, warmup=0)
  summary = bench_rounds.run(1, shape, lambda shape: torch_yardstick.run('torch_gpt_reference.py', shape, False),
                             {'dtype': 'bfloat16', 'remat': 'none'})
  assert summary['auto_over_torch'] == [2.0]
  assert (summary['dtype'], summary['torch_dtype']) == ('bfloat16', 'float32')


def test_a_decode_context_within_the_new_tokens_is_one_line_naming_the_flag():
  """The prompt is context - 64 tokens: --context=64 leaves none."""
  r = subprocess.run([sys.executable, '-m', 'llm.bench', '--decode', '--context=64'], capture_output=True, text=True,
                     cwd=ROOT, timeout=120)
  assert r.returncode != 0 and 'Traceback' not in r.stderr, r.stderr
  assert r.stderr.strip().splitlines()[-1].startswith('llm.bench: --context=64 '), r.stderr
  assert 'above 64' in r.stderr


def test_the_serving_levels_name_the_platform_the_server_ran_on(monkeypatch, tmp_path):
  """On a GPU host the benchmark process sees the GPU, the server (JAX_PLATFORMS) the CPU: the
  levels carry the server's."""
  httpx = pytest.importorskip('httpx')
  import jax
  servers = []

  class _Server:
    returncode = None
    poll = staticmethod(lambda: None)
    terminate = staticmethod(lambda: None)
    wait = staticmethod(lambda timeout: 0)

    def __init__(self, cmd, env, **kwargs):
      servers.append(env)

  async def level(url, clients, rounds, max_tokens, temperature, seed0):
    return {'clients': clients, 'tokens_per_s': 10.0}

  devices = jax.devices
  gpu = types.SimpleNamespace(platform='gpu', device_kind='NVIDIA H100 80GB HBM3')
  monkeypatch.setattr(jax, 'devices', lambda backend=None: devices(backend) if backend else [gpu])
  monkeypatch.setattr(bench_serve.subprocess, 'Popen', _Server)
  monkeypatch.setattr(httpx, 'get', lambda *a, **kw: types.SimpleNamespace(status_code=200))
  monkeypatch.setattr(bench_serve, '_level', level)
  [result] = bench_serve.run([1], workdir=str(tmp_path))
  assert result['host']['platform'] == servers[0]['JAX_PLATFORMS'] == 'cpu'


@pytest.mark.parametrize('flag', ['--steps=0', '--layers=0', '--warmup=-1'])
def test_a_shape_flag_out_of_range_is_refused_before_timing(flag):
  """--steps=0 divided the timed seconds by zero, after compiling and warming up."""
  r = subprocess.run([sys.executable, '-m', 'llm.bench', flag], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert r.returncode != 0 and 'Traceback' not in r.stderr, r.stderr
  assert f'flag {flag}: ' in r.stderr


_BUSY_PEAK = """
import os, sys
os.getloadavg = lambda: (99.0, 99.0, 99.0)  # other jobs on the cores
from llm import bench, cli, hostinfo
hostinfo._measure_cpu_peak = lambda: 1e11
sys.argv = ['llm.bench', '--peak']
cli.run(bench.main, 'llm.bench')
"""


def test_a_benchmark_started_on_a_busy_host_says_so_in_one_line(tmp_path, python_env):
  """A ratio of two times taken while other jobs share the cores means nothing (torch's OpenMP
  threads fell from 1,189 to 25-30 tokens/s under load): the benchmark says so, and its JSON keeps the load."""
  r = subprocess.run([sys.executable, '-c', _BUSY_PEAK], capture_output=True, text=True, cwd=ROOT, timeout=120,
                     env=dict(python_env, LLM_CACHE_DIR=str(tmp_path)))
  assert r.returncode == 0, r.stderr
  assert [line for line in r.stderr.splitlines() if 'load 99.00 on' in line and 'run on an idle machine' in line]
  assert json.loads(r.stdout.splitlines()[-1])['host']['load_1min'] == 99.0
