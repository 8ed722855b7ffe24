"""The host a number was measured on, and the CPU peak MFU divides by: measured once per host."""
import json

import jax
import pytest

from llm import hostinfo


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
  bench_module = importlib.import_module(f'llm.{module}')
  script = tmp_path / 'reference.py'
  script.write_text('')
  monkeypatch.setattr(bench_module, 'REFERENCE_SCRIPT', script)
  monkeypatch.setattr(hostinfo, 'torch_env', lambda: {'MARK': 'capped'})
  seen = []
  monkeypatch.setattr(subprocess, 'run', lambda cmd, **kw: seen.append(kw.get('env')) or subprocess.CompletedProcess(
      cmd, 0, stdout='{"tokens_per_s": 1}\n'))
  run = bench_module.run_reference if module == 'bench' else bench_module._reference
  assert run({'batch': 1}) == {'tokens_per_s': 1}
  assert seen == [{'MARK': 'capped'}]
