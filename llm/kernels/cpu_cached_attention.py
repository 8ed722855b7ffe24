"""The decode step's attention over a KV cache as a CPU FFI kernel (cpu_cached_attention.cc, built
into the library of llm/kernels/cpu_attention.py): one thread-pool work item per (row, key/value
head), each reading only the slots its row has filled.

model.attention='auto' takes it for a decode step where it was measured faster than the XLA path
on this host for the shape at hand (faster_than_xla, once per host; llm/attention/__init__.py).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from llm.attention import kv_cache
from llm.kernels import cpu_attention

_TIMING_FILL = 0.9  # share of the cache the timing's rows have filled: near the end of a generation


def cached_attention(q_BxTxHxDh, kv_cache_pair, lengths_B):
  """kv_cache.attend() as the kernel: float32 q [B, T, H, Dh], cache k [B, K, Dh, S], v [B, K, S, Dh]."""
  cpu_attention._registered()
  k_BxKxDhxS, v_BxKxSxDh = kv_cache_pair
  return jax.ffi.ffi_call('llm_cached_attention', jax.ShapeDtypeStruct(q_BxTxHxDh.shape, jnp.float32))(
      q_BxTxHxDh, k_BxKxDhxS, v_BxKxSxDh, lengths_B.astype(jnp.int32),
      scale=np.float32(q_BxTxHxDh.shape[-1] ** -0.5))


@functools.cache
def faster_than_xla(q_shape: tuple, k_cache_shape: tuple) -> bool:
  """Whether the kernel beats kv_cache.attend's XLA ops on this host for q [B, T, H, Dh] over a
  cache k [B, K, Dh, S] (measured once per host and shape; cpu_attention.measured_faster)."""
  B, T, H, Dh = q_shape
  return cpu_attention.measured_faster('cached', (B, T, H, k_cache_shape[1], Dh, k_cache_shape[3]), _time_both)


def _time_both(B, T, H, K, Dh, S) -> tuple[float, float]:
  """ms of a decode step's attention as the decode loop runs it (cpu_attention.best_ms): the new keys and values
  written into a donated cache, then the kernel or the XLA products over it: XLA copies a cache it
  has just written, so timing the products alone undercounts its cost (docs/performance.md)."""
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.standard_normal((B, T, H, Dh)), jnp.float32)
  new_kv = jnp.asarray(rng.standard_normal((B, T, K, Dh)), jnp.float32)
  lengths = jnp.full((B,), int(_TIMING_FILL * (S - T)), jnp.int32)
  cache = lambda: (jnp.zeros((B, K, Dh, S), jnp.float32), jnp.zeros((B, K, S, Dh), jnp.float32))

  def step(attend):
    def run(cache_pair, q, new_kv, lengths):
      cache_pair = kv_cache.write(new_kv, new_kv, cache_pair, lengths)
      return attend(q, cache_pair, lengths), cache_pair
    jitted = jax.jit(run, donate_argnums=0)
    state = {'cache': cache()}

    def call():  # the cache goes round, donated, as in the decode loop
      out, state['cache'] = jitted(state['cache'], q, new_kv, lengths)
      return out
    return call

  return cpu_attention.best_ms([step(cached_attention), step(kv_cache.attend)], ())
