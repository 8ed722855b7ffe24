"""The host a number was measured on, and the CPU peak MFU divides by: measured once per host."""
import json
import re
import subprocess
import sys

import jax
import pytest

from conftest import xla_flags
from llm import hostinfo
from test_distributed import TIMEOUT_S, _free_port


@pytest.fixture
def fresh_peak(monkeypatch, tmp_path):
  monkeypatch.setenv('LLM_CACHE_DIR', str(tmp_path))
  hostinfo.cpu_peak_flops.cache_clear()
  yield tmp_path
  hostinfo.cpu_peak_flops.cache_clear()


def test_the_cpu_peak_is_measured_once_per_host_and_kept(monkeypatch, fresh_peak):
  measured = []
  monkeypatch.setattr(hostinfo, '_measure_cpu_peak', lambda: measured.append(1) or 123e9)
  assert hostinfo.cpu_peak_flops() == 123e9
  hostinfo.cpu_peak_flops.cache_clear()  # a new process on the same host
  assert hostinfo.cpu_peak_flops() == 123e9
  assert measured == [1]
  (entry,) = json.loads((fresh_peak / 'host_peaks.json').read_text()).values()
  assert entry['flops'] == 123e9 and entry['cpu'] == hostinfo.cpu_model()


def test_a_remeasured_peak_is_kept_only_where_higher(monkeypatch, fresh_peak):
  """A peak is a maximum: `llm.bench --peak` run while other jobs ran measured 79 GFLOP/s on a host
  whose kept peak was 353, replaced it, and every MFU after it came out 4.5x too high."""
  measurements = iter([353e9, 79e9, 400e9])
  monkeypatch.setattr(hostinfo, '_measure_cpu_peak', lambda: next(measurements))
  assert hostinfo.cpu_peak_flops() == 353e9
  assert hostinfo.measure_cpu_peak() == (79e9, 353e9)  # what --peak prints: this measurement, the kept peak
  hostinfo.cpu_peak_flops.cache_clear()  # a new process on the same host
  assert hostinfo.cpu_peak_flops() == 353e9
  assert hostinfo.measure_cpu_peak() == (400e9, 400e9)
  assert hostinfo.cpu_peak_flops() == 400e9  # this process too uses the higher one from then on
  (entry,) = json.loads((fresh_peak / 'host_peaks.json').read_text()).values()
  assert entry['flops'] == 400e9


def test_another_host_measures_its_own_peak(monkeypatch, fresh_peak):
  """A cache shared between hosts (a home directory on NFS) must not hand one host's peak to another."""
  monkeypatch.setattr(hostinfo, '_measure_cpu_peak', lambda: 100e9)
  hostinfo.cpu_peak_flops()
  hostinfo.cpu_peak_flops.cache_clear()
  monkeypatch.setattr(hostinfo, 'cpu_model', lambda: 'AMD EPYC 7B13')
  monkeypatch.setattr(hostinfo, '_measure_cpu_peak', lambda: 50e9)
  assert hostinfo.cpu_peak_flops() == 50e9
  assert len(json.loads((fresh_peak / 'host_peaks.json').read_text())) == 2


def test_cpu_devices_share_the_host_peak_and_a_configured_peak_wins(monkeypatch, fresh_peak):
  monkeypatch.setattr(hostinfo, '_measure_cpu_peak', lambda: 80e9)
  assert hostinfo.peak_flops_per_device() == pytest.approx(80e9 / jax.local_device_count())
  assert hostinfo.peak_flops_per_device(5e12) == 5e12


_PEAK_OF_THE_JOB = '''
import sys
import jax
jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from llm import hostinfo
hostinfo._measure_cpu_peak = lambda: 80e9
print(hostinfo.peak_flops_per_device() * jax.device_count())
'''


def test_two_processes_on_one_host_share_its_peak(tmp_path, python_env):
  """One device each: each process divided the host's peak by its own one device, so the job's
  peak (per device x all devices) was twice the host's and MFU half what it is."""
  address = f'localhost:{_free_port()}'
  procs = [subprocess.Popen([sys.executable, '-c', _PEAK_OF_THE_JOB, address, str(i)], text=True,
                            env=dict(python_env, LLM_CACHE_DIR=str(tmp_path / str(i)), XLA_FLAGS=xla_flags(1)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in (0, 1)]
  outs = [proc.communicate(timeout=TIMEOUT_S)[0] for proc in procs]
  assert [float(out.strip().splitlines()[-1]) for out in outs] == [80e9, 80e9], outs


def test_accelerator_peaks_come_from_the_datasheet_table(monkeypatch):
  class H100:
    platform, device_kind = 'gpu', 'NVIDIA H100 80GB HBM3'
  monkeypatch.setattr(jax, 'devices', lambda *a: [H100()])
  assert hostinfo.peak_flops_per_device() == 989e12


def test_an_avx2_build_on_an_avx512_host_reports_the_avx2_class(monkeypatch):
  monkeypatch.setattr(hostinfo, 'cpu_flags', lambda: ['avx512f', 'avx2', 'fma'])
  monkeypatch.delenv('LLM_CPU_MARCH', raising=False)
  monkeypatch.setenv('XLA_FLAGS', '')
  assert hostinfo.isa_class() == 'AVX-512'
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_max_isa=AVX2')
  assert hostinfo.isa_class() == 'AVX2'
  monkeypatch.setattr(hostinfo, 'cpu_flags', lambda: ['avx2', 'fma'])
  monkeypatch.setenv('XLA_FLAGS', '')
  assert hostinfo.isa_class() == 'AVX2'


def test_the_torch_yardstick_of_an_emulated_avx2_build_is_capped_at_avx2(monkeypatch):
  """Both benchmarks' yardsticks (llm.bench, llm.bench_decode) run torch in this environment."""
  monkeypatch.setattr(hostinfo, 'cpu_flags', lambda: ['avx2', 'avx512f'])
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  monkeypatch.delenv('LLM_CPU_MARCH', raising=False)
  assert 'ATEN_CPU_CAPABILITY' not in hostinfo.torch_env()  # the host's own class: torch as it is
  monkeypatch.setenv('LLM_CPU_MARCH', 'haswell')
  env = hostinfo.torch_env()
  assert (env['ATEN_CPU_CAPABILITY'], env['ONEDNN_MAX_CPU_ISA'], env['MKL_ENABLE_INSTRUCTIONS']) == ('avx2', 'AVX2', 'AVX2')
  assert env['LLM_CPU_MARCH'] == 'haswell'  # the rest of the environment goes along


@pytest.mark.parametrize('module', ['bench', 'bench_decode'])
def test_both_benchmarks_run_their_yardstick_in_that_environment(monkeypatch, tmp_path, module):
  pytest.importorskip('torch')
  import importlib
  import subprocess
  from llm import torch_yardstick
  bench_module = importlib.import_module(f'llm.{module}')
  for name in ('torch_gpt_reference.py', 'torch_decode_reference.py'):
    (tmp_path / name).write_text('')
  monkeypatch.setattr(torch_yardstick, 'SHARED_BENCH', tmp_path)
  monkeypatch.setattr(hostinfo, 'torch_env', lambda: {'MARK': 'capped'})
  seen = []
  monkeypatch.setattr(subprocess, 'run', lambda cmd, **kw: seen.append((cmd, kw.get('env'))) or
                      subprocess.CompletedProcess(cmd, 0, stdout='{"tokens_per_s": 1}\n'))
  run = bench_module.run_reference if module == 'bench' else bench_module._reference
  assert run({'batch': 1}) == {'tokens_per_s': 1, 'dtype': 'float32'}
  (cmd, env), = seen
  assert env == {'MARK': 'capped'}
  script = 'torch_gpt_reference.py' if module == 'bench' else 'torch_decode_reference.py'
  assert cmd[1:] == [str(tmp_path / script), '--batch=1']  # on the CPU: the script as written


def test_on_a_gpu_host_the_yardstick_runs_through_the_cuda_child(monkeypatch, tmp_path):
  torch = pytest.importorskip('torch')
  import subprocess
  from llm import torch_yardstick
  (tmp_path / 'torch_gpt_reference.py').write_text('')
  monkeypatch.setattr(torch_yardstick, 'SHARED_BENCH', tmp_path)
  seen = []
  monkeypatch.setattr(subprocess, 'run', lambda cmd, **kw: seen.append(cmd) or
                      subprocess.CompletedProcess(cmd, 0, stdout='{"tokens_per_s": 1}\n'))
  monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
  assert torch_yardstick.run('torch_gpt_reference.py', {'batch': 1}, on_gpu=True) is None  # no CUDA torch
  assert seen == []
  monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
  monkeypatch.setattr(torch.cuda, 'get_device_name', lambda: 'NVIDIA H200')
  result = torch_yardstick.run('torch_gpt_reference.py', {'batch': 1}, on_gpu=True)
  assert result == {'tokens_per_s': 1, 'device': 'NVIDIA H200', 'dtype': 'bfloat16 autocast'}
  assert seen[0][1:] == ['-m', 'llm.torch_yardstick', str(tmp_path / 'torch_gpt_reference.py'), '--batch=1']


def test_the_cuda_child_waits_for_the_gpu_at_every_timer_read(monkeypatch, tmp_path, capsys):
  """The scripts time with time.perf_counter(); on a GPU that must include the queued kernels."""
  torch = pytest.importorskip('torch')
  import sys
  import time
  from llm import torch_yardstick
  events = []
  monkeypatch.setattr(torch, 'set_default_device', lambda device: events.append(('device', device)))
  monkeypatch.setattr(torch.cuda, 'synchronize', lambda: events.append('sync'))
  monkeypatch.setattr(time, 'perf_counter', time.perf_counter)  # restored after the test
  script = tmp_path / 'reference.py'
  script.write_text('import sys, time\nimport torch\n'
                    'print(sys.argv[1:], torch.is_autocast_enabled("cuda"), time.perf_counter() > 0)\n')
  monkeypatch.setattr(sys, 'argv', ['llm.torch_yardstick', str(script), '--batch=4'])
  with pytest.warns(UserWarning, match='CUDA'):  # autocast on a torch without CUDA disables itself
    torch_yardstick._main_on_gpu(str(script))
  assert events == [('device', 'cuda'), 'sync']
  assert capsys.readouterr().out.startswith("['--batch=4']")  # the script sees its own flags


def _cpuinfo_of(family: str, model: str) -> dict:
  return {'model name': 'AMD EPYC', 'flags': 'avx512f avx512_bf16 avx2 fma', 'cpu family': family, 'model': model,
          'stepping': '1'}


def test_two_epycs_of_one_name_and_flags_are_told_apart_by_family_and_model(monkeypatch):
  """Zen 4 (family 25 model 17) and Zen 5 (family 26 model 2) VMs both read 'AMD EPYC' with
  AVX-512: a result must say which it came from, and neither may reuse the other's kept peak."""
  monkeypatch.setattr(hostinfo, '_cpuinfo', lambda: _cpuinfo_of('25', '17'))
  zen4 = hostinfo.describe(), hostinfo.fingerprint()
  monkeypatch.setattr(hostinfo, '_cpuinfo', lambda: _cpuinfo_of('26', '2'))
  zen5 = hostinfo.describe(), hostinfo.fingerprint()
  assert (zen4[0]['cpu_id'], zen5[0]['cpu_id']) == ({'family': 25, 'model': 17, 'stepping': 1},
                                                    {'family': 26, 'model': 2, 'stepping': 1})
  assert zen4[1] != zen5[1]


def test_a_cpu_without_family_numbers_has_an_empty_id(monkeypatch):
  monkeypatch.setattr(hostinfo, '_cpuinfo', lambda: {'Features': 'asimd', 'CPU implementer': '0x41'})  # an ARM host
  assert hostinfo.cpu_id() == {}


@pytest.fixture
def load(monkeypatch):
  """Sets the 1-minute load average a fresh process would read."""
  def set_load(value):
    monkeypatch.setattr(hostinfo.os, 'getloadavg', lambda: (value, 0.0, 0.0))
    hostinfo.load_at_start.cache_clear()
  yield set_load
  hostinfo.load_at_start.cache_clear()


def test_a_load_above_the_cores_at_start_warns_and_every_result_records_it(monkeypatch, load, caplog):
  monkeypatch.setattr(hostinfo, 'cores', lambda: 2)
  for value, warned in ((2.0, False), (3.67, True)):
    load(value)
    caplog.clear()
    with caplog.at_level('WARNING'):
      hostinfo.warn_if_busy()
    assert ('cores at start' in caplog.text) == warned, caplog.text
    assert not warned or 'load 3.67 on 2 cores at start' in caplog.text
    assert hostinfo.describe()['load_1min'] == value


@pytest.mark.parametrize('kept', [lambda host: [], lambda host: {host: {'flops': 'fast'}}])
def test_a_peaks_file_of_the_wrong_shape_is_named_with_its_remedy(monkeypatch, fresh_peak, kept):
  """Valid JSON that is not peaks by host ended in a TypeError traceback, even from `llm.bench
  --peak`, the documented way to measure the peak again."""
  monkeypatch.setattr(hostinfo, '_measure_cpu_peak', lambda: 100e9)
  path = fresh_peak / 'host_peaks.json'
  path.write_text(json.dumps(kept(hostinfo.fingerprint())))
  for read in (hostinfo.peak_flops_per_device, hostinfo.measure_cpu_peak):
    with pytest.raises(ValueError, match=rf'^{re.escape(str(path))} is not a table of peaks by host .*; delete it: '):
      read()
