"""What machine a number was measured on, and its peak FLOP/s for MFU.

Accelerators: their datasheets' dense bf16 peaks by device kind. CPUs differ by 2x between hosts
of one class (an AVX2 EPYC's best fp32 matmul is about half an AVX-512 Xeon's), so a CPU's peak
is measured on the host: the best of a large float32 matmul through XLA and through numpy's BLAS,
once, kept in $LLM_CACHE_DIR/host_peaks.json (else ~/.cache/llm) under the host's fingerprint.
A peak is a maximum: other jobs on the cores only ever lower a measurement, so a re-measurement
(`python -m llm.bench --peak`) replaces the kept peak only where it is higher.
"""
import concurrent.futures
import functools
import hashlib
import json
import math
import os
import platform
import socket
import time
import zlib
from pathlib import Path

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from llm import files

# Dense bf16 FLOP/s per device from the datasheets (H100 SXM: 989 TFLOP/s; measured ~790).
ACCELERATOR_PEAKS = {'h100': 989e12, 'h200': 989e12, 'a100': 312e12, 'tpu v4': 275e12,
                     'tpu v5 lite': 197e12, 'tpu v5e': 197e12, 'tpu v5p': 459e12, 'tpu v6': 918e12}
_ISA_FLAGS = ('avx512f', 'avx512_bf16', 'amx_tile', 'avx2', 'fma', 'avx', 'sse4_2', 'asimd', 'sve')
_PEAK_SIZE = 2048  # square float32 matmul for the CPU peak: large enough to be compute-bound


@functools.cache
def _cpuinfo() -> dict:
  """/proc/cpuinfo's first processor as {field: value} (empty where there is none, e.g. macOS)."""
  try:
    text = Path('/proc/cpuinfo').read_text()
  except OSError:
    return {}
  fields = {}
  for line in text.split('\n\n')[0].splitlines():
    key, _, value = line.partition(':')
    fields[key.strip()] = value.strip()
  return fields


def cpu_model() -> str:
  info = _cpuinfo()
  return info.get('model name') or info.get('Model') or platform.processor() or platform.machine()


def cpu_id() -> dict:
  """The CPU's family, model and stepping numbers (x86; empty where /proc/cpuinfo has none): what
  tells apart hosts whose model name and flags are the same, as 'AMD EPYC' with AVX-512 is on both
  Zen 4 (family 25) and Zen 5 (family 26)."""
  info = _cpuinfo()
  return {k: int(info[field]) for k, field in (('family', 'cpu family'), ('model', 'model'), ('stepping', 'stepping'))
          if info.get(field, '').isdigit()}


def cpu_flags() -> list[str]:
  """The instruction-set extensions of _ISA_FLAGS this CPU has."""
  flags = set((_cpuinfo().get('flags') or _cpuinfo().get('Features') or '').split())
  return [f for f in _ISA_FLAGS if f in flags]


def isa_class() -> str:
  """'AVX-512', 'AVX2', 'NEON' or the machine name: the class a CPU speed claim holds for. An
  XLA_FLAGS --xla_cpu_max_isa or LLM_CPU_MARCH=haswell run is reported as the class it emulates."""
  flags = cpu_flags()
  emulated = 'AVX2' in os.environ.get('XLA_FLAGS', '') or os.environ.get('LLM_CPU_MARCH') == 'haswell'
  if 'avx512f' in flags and not emulated:
    return 'AVX-512'
  if 'avx2' in flags:
    return 'AVX2'
  return 'NEON' if 'asimd' in flags else platform.machine()


def torch_env() -> dict:
  """The environment for a torch yardstick: on an AVX-512 host emulating the AVX2 class
  (isa_class), torch's own kernels, oneDNN and MKL are capped at AVX2 as well."""
  env = dict(os.environ)
  if isa_class() == 'AVX2' and 'avx512f' in cpu_flags():
    env.update(ATEN_CPU_CAPABILITY='avx2', ONEDNN_MAX_CPU_ISA='AVX2', MKL_ENABLE_INSTRUCTIONS='AVX2')
  return env


def cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


@functools.cache
def load_at_start() -> float | None:
  """The 1-minute load average when this process first asked (llm.bench asks at its start, before
  its own work counts in it); None where the system keeps none (Windows)."""
  return round(os.getloadavg()[0], 2) if hasattr(os, 'getloadavg') else None


def warn_if_busy():
  """Warns where the load at start exceeds the cores: other jobs share them, so a time measured
  now is theirs as much as ours, and a ratio of two such times means nothing."""
  load = load_at_start()
  if load is not None and load > cores():
    logging.warning('load %.2f on %d cores at start: other jobs share them, so the times and ratios measured '
                    'now mean little; run on an idle machine', load, cores())


def warn_if_mfu_above_one(mfu: float, peak: float) -> bool:
  """Warns, and says True, where mfu is above 1: the peak of `peak` FLOP/s it divides by is too low."""
  if not mfu > 1:
    return False
  logging.warning('MFU %.2f > 1: the peak of %.3g FLOP/s it divides by is too low (a CPU peak measured while '
                  'other jobs ran); re-measure it on an idle machine with python -m llm.bench --peak (the '
                  'highest measurement is kept), or set train.peak_flops_per_device for a training run',
                  mfu, peak)
  return True


def describe(platform: str | None = None) -> dict:
  """The host and devices, for benchmark JSON and reports; platform ('cpu'): that platform's
  devices instead of JAX's default, for a number measured in a process confined to it. load_1min:
  load_at_start(), so a reader sees whether other jobs shared the cores."""
  device = jax.devices(platform)[0]
  return {'cpu': cpu_model(), 'cpu_id': cpu_id(), 'isa': isa_class(), 'cpu_flags': cpu_flags(), 'cores': cores(),
          'platform': device.platform, 'device_kind': device.device_kind, 'devices': jax.device_count(platform),
          'jax': jax.__version__, 'xla_flags': os.environ.get('XLA_FLAGS', ''),
          'cpu_march': os.environ.get('LLM_CPU_MARCH', 'native'), 'load_1min': load_at_start()}


def fingerprint() -> str:
  """What a timing on this host depends on: CPU (name, family, model, stepping), its flags, the cores
  this process may use, XLA's flags and JAX's version (the key of the kept peak and of the
  attention kernels' kept timings)."""
  parts = [cpu_model(), json.dumps(cpu_id(), sort_keys=True), ' '.join(sorted((_cpuinfo().get('flags') or '').split())),
           str(cores()), os.environ.get('XLA_FLAGS', ''), jax.__version__]
  return hashlib.sha256('\n'.join(parts).encode()).hexdigest()[:16]


def _best_seconds(fn, repeats: int = 5) -> float:
  fn()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def _measure_cpu_peak() -> float:
  """FLOP/s of the best of XLA's and numpy's float32 matmul at _PEAK_SIZE squared."""
  n = _PEAK_SIZE
  a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
  flops = 2 * n ** 3
  cpu = jax.devices('cpu')[0]
  x = jax.device_put(a, cpu)
  xla_matmul = jax.jit(jnp.matmul)
  xla_s = _best_seconds(lambda: xla_matmul(x, x).block_until_ready())
  numpy_s = _best_seconds(lambda: a @ a)
  return flops / min(xla_s, numpy_s)


def _peaks_path() -> Path:
  return Path(os.environ.get('LLM_CACHE_DIR') or '~/.cache/llm').expanduser() / 'host_peaks.json'


@functools.cache
def cpu_peak_flops() -> float:
  """This host's float32 matmul FLOP/s (all its cores): the kept peak, measured once per host
  where none is kept yet."""
  key = fingerprint()
  peaks = _kept_peaks()
  return peaks[key]['flops'] if key in peaks else measure_cpu_peak()[1]


def measure_cpu_peak() -> tuple[float, float]:
  """Measures this host's peak: (this measurement, the peak kept now), the kept one the higher of
  it and any kept before (a measurement taken while other jobs ran is only ever lower)."""
  # A thread of its own, so the measurement runs outside any mesh or trace the caller is in.
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    flops = pool.submit(_measure_cpu_peak).result()
  key = fingerprint()
  peaks = _kept_peaks()  # read after the measurement: another process may have kept one meanwhile
  if key not in peaks or flops > peaks[key]['flops']:
    peaks = {**peaks, key: {'cpu': cpu_model(), 'cpu_id': cpu_id(), 'isa': isa_class(), 'cores': cores(),
                            'flops': flops}}
    files.write_atomically(_peaks_path(), json.dumps(peaks, indent=1))
    cpu_peak_flops.cache_clear()
  return flops, peaks[key]['flops']


def _kept_peaks() -> dict:
  """host_peaks.json as {fingerprint: {'flops': ..., ...}}."""
  return files.read_json_table(_peaks_path(), 'delete it: the next run measures the peak again',
                               lambda entry: isinstance(entry, dict) and _is_flops(entry.get('flops')),
                               'peaks by host ({"<fingerprint>": {"flops": <a positive number>, ...}, ...})')


def _is_flops(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _devices_on_this_host() -> int:
  """This job's devices on this host: this process's and those of its other processes here
  (several processes on one machine), which share the host's cores. A collective: every process
  of a job calls it."""
  if jax.process_count() == 1:
    return jax.local_device_count()
  host = zlib.crc32(socket.gethostname().encode()) & 0x7fffffff  # fits the int32 JAX gathers by default
  hosts = multihost_utils.process_allgather(np.array([host, jax.local_device_count()], np.int32))
  return int(hosts[hosts[:, 0] == host, 1].sum())


def peak_flops_per_device(configured: float = 0.0) -> float:
  """`configured` if set; else the datasheet peak of this accelerator, or the CPU's measured peak
  shared among the host's (possibly fake) CPU devices, of every process of the job on it; NaN for
  an unknown accelerator. Every process of a job calls it (it gathers the CPU devices per host)."""
  if configured:
    return configured
  device = jax.devices()[0]
  if device.platform == 'cpu':
    return cpu_peak_flops() / _devices_on_this_host()
  kind = device.device_kind.lower()
  return next((v for k, v in ACCELERATOR_PEAKS.items() if k in kind), float('nan'))
