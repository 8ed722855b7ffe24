"""Causal attention for the CPU backend as a compiled XLA FFI kernel (cpu_attention.cc), and the
library of this folder's CPU kernels (with cpu_cached_attention.cc, the decode step's).

Built on first use with the host's C++ compiler for this machine's vector units (LLM_CPU_MARCH
overrides -march=native, e.g. `haswell` for an AVX2 build on an AVX-512 host), cached under
$LLM_CACHE_DIR/kernels (else ~/.cache/llm/kernels) by a hash of the source, flags, compiler, jax
version and CPU, and registered as FFI targets. Where it cannot be built (no compiler),
`available()` says False once with the reason and the model keeps its XLA path.

A kernel tuned on one host can lose to XLA on another, so model.attention='auto' takes it only
where faster_than_xla() measured it faster on this host for the shape at hand (once; the timings
are kept beside the built library).
"""
import concurrent.futures
import ctypes
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from llm import files, hostinfo
from llm.kernels import cpu_xla_attention

_FOLDER = Path(__file__).parent
_SOURCES = ('cpu_attention.cc', 'cpu_cached_attention.cc')  # one library
_HEADERS = ('parallel_for.h', 'vec.h')
_TARGETS = {'llm_causal_attention_fwd': 'LlmCausalAttentionForward',
            'llm_causal_attention_bwd': 'LlmCausalAttentionBackward',
            'llm_cached_attention': 'LlmCachedAttention'}


def _compiler() -> str | None:
  return os.environ.get('CXX') or shutil.which('g++') or shutil.which('clang++') or shutil.which('c++')


def _cpu() -> str:
  """What -march=native compiles for: a cache shared between different hosts must not mix them."""
  try:
    flags = [l for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith(('flags', 'Features'))]
  except OSError:
    flags = []
  return platform.machine() + (flags[0] if flags else platform.processor())


def _target_flag() -> str:
  """This machine's vector units, or the instruction set LLM_CPU_MARCH names (e.g. `haswell`, an
  AVX2 build on an AVX-512 host); Arm compilers (Apple clang among them) spell it -mcpu."""
  arm = platform.machine().lower() in ('arm64', 'aarch64')
  return f"-{'mcpu' if arm else 'march'}={os.environ.get('LLM_CPU_MARCH') or 'native'}"


def _cache_root() -> Path:
  return Path(os.environ.get('LLM_CACHE_DIR') or '~/.cache/llm').expanduser() / 'kernels'


def _build(cxx: str) -> Path:
  flags = ['-O3', _target_flag(), '-std=c++17', '-shared', '-fPIC', '-fno-math-errno', f'-I{jax.ffi.include_dir()}',
           f'-I{_FOLDER}']
  version = subprocess.run([cxx, '--version'], capture_output=True, text=True, check=True).stdout
  texts = [(_FOLDER / name).read_text() for name in _SOURCES + _HEADERS]
  key = hashlib.sha256('\n'.join([*texts, *flags[:-1], version, jax.__version__, _cpu()]).encode())
  root = _cache_root()
  lib = root / f'cpu_attention-{key.hexdigest()[:16]}.so'
  if not lib.exists():
    root.mkdir(parents=True, exist_ok=True)
    # Compile to a private name and rename: processes building at once never load a partial file.
    fd, tmp = tempfile.mkstemp(suffix='.so', dir=root)
    os.close(fd)
    try:
      subprocess.run([cxx, *flags, *(str(_FOLDER / name) for name in _SOURCES), '-o', tmp], capture_output=True,
                     text=True, check=True)
      os.replace(tmp, lib)
    finally:
      Path(tmp).unlink(missing_ok=True)
  return lib


@functools.cache
def _library() -> ctypes.CDLL | None:
  """The kernel built, loaded and registered as FFI targets, once per process; None if it
  cannot be built here (the reason is logged)."""
  cxx = _compiler()
  try:
    if cxx is None:
      raise RuntimeError('no C++ compiler found: install g++ or set CXX')
    lib = ctypes.cdll.LoadLibrary(str(_build(cxx)))
  except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
    detail = getattr(e, 'stderr', '') or e
    logging.warning('CPU attention kernel not built, using the XLA path: %s', str(detail)[:2000])
    return None
  for target, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform='cpu')
  return lib


def available() -> bool:
  """Whether the kernel can run here (it builds)."""
  return _library() is not None


def _registered():
  """Builds and registers the kernel on first use, or says in one line why it cannot run."""
  if _library() is None:
    raise RuntimeError('the CPU attention kernel could not be built here (the warning above says why); '
                       'use model.attention=xla instead, or fix what it names (a C++ compiler, LLM_CPU_MARCH)')


def _forward(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, q_block):
  _registered()
  B, T, H, Dh = q_BxTxHxDh.shape
  out_types = (jax.ShapeDtypeStruct(q_BxTxHxDh.shape, jnp.float32),
               jax.ShapeDtypeStruct((B, H, T), jnp.float32))
  return jax.ffi.ffi_call('llm_causal_attention_fwd', out_types)(
      q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, scale=np.float32(Dh ** -0.5), q_block=np.int64(q_block))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def causal_attention(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, q_block: int = 64):
  """softmax(q k^T / sqrt(Dh), causal) v for float32 q [B,T,H,Dh] and k, v [B,T,K,Dh], H = K*G."""
  return _forward(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, q_block)[0]


def _fwd(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, q_block):
  out_BxTxHxDh, lse_BxHxT = _forward(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, q_block)
  return out_BxTxHxDh, (q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, out_BxTxHxDh, lse_BxHxT)


def _bwd(q_block, residuals, dout_BxTxHxDh):
  _registered()
  q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh = residuals[:3]
  out_types = tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in residuals[:3])
  return jax.ffi.ffi_call('llm_causal_attention_bwd', out_types)(
      *residuals, dout_BxTxHxDh, scale=np.float32(q_BxTxHxDh.shape[-1] ** -0.5), q_block=np.int64(q_block))


causal_attention.defvjp(_fwd, _bwd)


_TIMING_BATCH = 8  # rows the timing runs with: enough work items for every core, a second or two
_TIMING_SAMPLES = 7  # per implementation, interleaved with the other's
_TIMING_CALLS = 5  # back to back in each sample, as a decode or training loop makes them
# Part of each kept choice's key, so a host times again when the method changes. v2: the best of
# 7 samples of 5 calls; v1 (the median of 5 single calls) picked XLA for the batch-32 decode step
# at context 512 when one slow sample timed the kernel at 5.1 ms against 2.1 (1.4-2.2 ms after).
# v3: decode steps timed at half the cache filled (cpu_cached_attention._TIMING_FILL).
_TIMING_METHOD = 'v3'


@functools.cache
def faster_than_xla(q_shape: tuple, k_shape: tuple) -> bool:
  """Whether the kernel's forward + backward beat the XLA path's (llm/kernels/cpu_xla_attention.py)
  on this host for q [B, T, H, Dh] and k [B, T, K, Dh] (the batch capped at _TIMING_BATCH)."""
  B, T, H, Dh = q_shape
  return measured_faster('causal', (min(B, _TIMING_BATCH), T, H, k_shape[2], Dh), _time_both)


def measured_faster(kernel: str, shape: tuple, time_both) -> bool:
  """Whether time_both(*shape) -> (kernel ms, XLA ms) finds the kernel faster on this host.

  Timed once per library build (sources, flags, compiler, CPU), kernel and shape, and kept in
  choices.json beside the library, so every later run on this host reuses the answer. Under
  several processes, process 0's answer is taken by all, so they compile the same program.
  """
  # A thread of its own: this is called while the model is traced, and the timing (and the
  # processes' agreement) must run as computations of their own, outside the caller's trace and
  # mesh contexts, not be staged into the caller's program.
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    return pool.submit(_decide, kernel, shape, time_both).result()


def choice_key(kernel: str, shape: tuple) -> str:
  """The key of a kept timing in choices.json: library build, timing method, host (cores and XLA
  flags included: a timing on 16 cores, or with XLA's AVX-512 code, says little about 2 cores or
  an AVX2 run), kernel, shape."""
  return (f"{Path(_library()._name).stem}:{_TIMING_METHOD}:{hostinfo.fingerprint()}:{kernel}:"
          f"{'x'.join(map(str, shape))}")


def _decide(kernel: str, shape: tuple, time_both) -> bool:
  key = choice_key(kernel, shape)
  path = _cache_root() / 'choices.json'
  choices = _kept_choices(path)
  if key not in choices:
    choices[key] = time_both(*shape)
    _write_json(path, {**_kept_choices(path), key: choices[key]})  # read again: another process may have added one
    logging.info('CPU %s attention at %s: kernel %.2f ms, XLA path %.2f ms', kernel, shape, *choices[key])
  kernel_ms, xla_ms = choices[key]
  faster = kernel_ms < xla_ms
  if jax.process_count() > 1:
    faster = bool(multihost_utils.broadcast_one_to_all(np.int32(faster)))
  return faster


def _kept_choices(path: Path) -> dict:
  """choices.json: {choice_key: [kernel ms, XLA ms]}."""
  return files.read_json_table(path, 'delete it: the next run times the kernels again',
                               lambda ms: isinstance(ms, list) and len(ms) == 2 and
                               all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in ms),
                               'kept attention timings ({"<choice key>": [<kernel ms>, <XLA ms>], ...})')


def _time_both(B, T, H, K, Dh) -> tuple[float, float]:
  """ms per call of the kernel's and the XLA path's jitted forward + backward, interleaved: each
  the best of best_ms's samples, not their median."""
  rng = np.random.default_rng(0)
  q, dout = (jnp.asarray(rng.standard_normal((B, T, H, Dh)), jnp.float32) for _ in range(2))
  k, v = (jnp.asarray(rng.standard_normal((B, T, K, Dh)), jnp.float32) for _ in range(2))
  steps = [jax.jit(lambda q, k, v, d, f=f: jax.vjp(f, q, k, v)[1](d))
           for f in (causal_attention, cpu_xla_attention.causal_attention)]
  return best_ms(steps, (q, k, v, dout))


def best_ms(fns, args) -> tuple[float, ...]:
  """ms per call of each jitted fn(*args), compiled first: the best of _TIMING_SAMPLES samples
  (interleaved between the fns) of _TIMING_CALLS calls back to back. Other work on the cores only
  ever adds time, so the best sample is the one least disturbed."""
  times = [[] for _ in fns]
  for fn in fns:
    jax.block_until_ready(fn(*args))  # compile
  for _ in range(_TIMING_SAMPLES):
    for i, fn in enumerate(fns):
      start = time.perf_counter()
      for _ in range(_TIMING_CALLS):
        out = fn(*args)
      jax.block_until_ready(out)
      times[i].append((time.perf_counter() - start) / _TIMING_CALLS)
  return tuple(round(min(t) * 1e3, 3) for t in times)


def _write_json(path: Path, obj):
  files.write_atomically(path, json.dumps(obj, indent=1))
