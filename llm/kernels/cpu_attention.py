"""Causal attention for the CPU backend as a compiled XLA FFI kernel (cpu_attention.cc).

Built on first use with the host's C++ compiler for this machine's vector units, cached under
$LLM_CACHE_DIR/kernels (else ~/.cache/llm/kernels) by a hash of the source, flags, compiler, jax
version and CPU, and registered as two FFI targets. Where it cannot be built (no compiler),
`available()` says False once with the reason and the model keeps its XLA path;
LLM_CPU_ATTENTION=xla forces that path, for A/B runs.
"""
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

_SOURCE = Path(__file__).with_name('cpu_attention.cc')
_TARGETS = {'llm_causal_attention_fwd': 'LlmCausalAttentionForward',
            'llm_causal_attention_bwd': 'LlmCausalAttentionBackward'}


def _compiler() -> str | None:
  return os.environ.get('CXX') or shutil.which('g++') or shutil.which('clang++') or shutil.which('c++')


def _cpu() -> str:
  """What -march=native compiles for: a cache shared between different hosts must not mix them."""
  try:
    flags = [l for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith(('flags', 'Features'))]
  except OSError:
    flags = []
  return platform.machine() + (flags[0] if flags else platform.processor())


def _build(cxx: str) -> Path:
  # This machine's vector units; Arm compilers (Apple clang among them) spell it -mcpu.
  native = '-mcpu=native' if platform.machine().lower() in ('arm64', 'aarch64') else '-march=native'
  flags = ['-O3', native, '-std=c++17', '-shared', '-fPIC', '-fno-math-errno', f'-I{jax.ffi.include_dir()}']
  version = subprocess.run([cxx, '--version'], capture_output=True, text=True, check=True).stdout
  key = hashlib.sha256('\n'.join([_SOURCE.read_text(), *flags, version, jax.__version__, _cpu()]).encode())
  root = Path(os.environ.get('LLM_CACHE_DIR') or '~/.cache/llm').expanduser() / 'kernels'
  lib = root / f'cpu_attention-{key.hexdigest()[:16]}.so'
  if not lib.exists():
    root.mkdir(parents=True, exist_ok=True)
    # Compile to a private name and rename: processes building at once never load a partial file.
    fd, tmp = tempfile.mkstemp(suffix='.so', dir=root)
    os.close(fd)
    try:
      subprocess.run([cxx, *flags, str(_SOURCE), '-o', tmp], capture_output=True, text=True, check=True)
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
  """Whether the kernel can run here: built, and not turned off by LLM_CPU_ATTENTION=xla."""
  return os.environ.get('LLM_CPU_ATTENTION', '') != 'xla' and _library() is not None


def _registered():
  """Builds and registers the kernel on first use, or says in one line why it cannot run."""
  if _library() is None:
    raise RuntimeError('the CPU attention kernel could not be built here (the warning above says why); '
                       'call llm.model.attention instead, or install a C++ compiler')


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


def applies(q_BxTxHxDh) -> bool:
  """Whether causal attention on q can go to the kernel: float32 on the CPU backend."""
  return jax.default_backend() == 'cpu' and q_BxTxHxDh.dtype == jnp.float32 and available()
