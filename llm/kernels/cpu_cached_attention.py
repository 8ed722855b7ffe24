"""The decode step's attention over a KV cache as a CPU FFI kernel (cpu_cached_attention.cc, built
into the library of llm/kernels/cpu_attention.py): one thread-pool work item per (row, key/value
head), each writing its row's new keys and values into the cache in place and reading only the
slots its row has filled.

model.attention='auto' takes it for a decode step where it was measured faster than the XLA path
on this host for the shape at hand (faster_than_xla, once per host; llm/attention/__init__.py).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from llm.attention import kv_cache
from llm.kernels import cpu_attention

# Share of the cache the timing's rows have filled: a generation's average (its rows fill the
# cache from the prompt up). At 0.9 the kernel, which reads only filled slots, and XLA's products
# over the whole cache tied for a server's batch of 32 (0.36-0.48 against 0.40-0.43 ms), and the
# choice flipped from one timing to the next, where in the server the kernel was ~20% faster.
_TIMING_FILL = 0.5


def cached_attention(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, kv_cache_pair, lengths_B):
  """kv_cache.write() then kv_cache.attend() as the kernel: float32 q [B, T, H, Dh], new keys and
  values [B, T, K, Dh], cache k [B, K, Dh, S], v [B, K, S, Dh]. Returns (out_BxTxHxDh, the cache
  written), the cache buffers aliased in and out (in place where the caller donates them)."""
  cpu_attention._registered()
  k_BxKxDhxS, v_BxKxSxDh = kv_cache_pair
  f32 = lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32)
  out, k_BxKxDhxS, v_BxKxSxDh = jax.ffi.ffi_call(
      'llm_cached_attention', (f32(q_BxTxHxDh), f32(k_BxKxDhxS), f32(v_BxKxSxDh)), input_output_aliases={3: 1, 4: 2})(
          q_BxTxHxDh, k_BxTxKxDh.astype(jnp.float32), v_BxTxKxDh.astype(jnp.float32), k_BxKxDhxS, v_BxKxSxDh,
          lengths_B.astype(jnp.int32), scale=np.float32(q_BxTxHxDh.shape[-1] ** -0.5))
  return out, (k_BxKxDhxS, v_BxKxSxDh)


@functools.cache
def faster_than_xla(q_shape: tuple, k_cache_shape: tuple) -> bool:
  """Whether the kernel beats kv_cache.attend's XLA ops on this host for q [B, T, H, Dh] over a
  cache k [B, K, Dh, S] (measured once per host and shape; cpu_attention.measured_faster)."""
  B, T, H, Dh = q_shape
  return cpu_attention.measured_faster('cached', (B, T, H, k_cache_shape[1], Dh, k_cache_shape[3]), _time_both)


def _time_both(B, T, H, K, Dh, S) -> tuple[float, float]:
  """ms of a decode step's attention as the decode loop runs it (cpu_attention.best_ms), the cache
  donated: the kernel (write and attention in one call) against XLA's scatter write and products
  (XLA copies a cache it has just written, so timing the products alone undercounts them;
  docs/performance.md)."""
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.standard_normal((B, T, H, Dh)), jnp.float32)
  new_kv = jnp.asarray(rng.standard_normal((B, T, K, Dh)), jnp.float32)
  lengths = jnp.full((B,), int(_TIMING_FILL * (S - T)), jnp.int32)
  cache = lambda: (jnp.zeros((B, K, Dh, S), jnp.float32), jnp.zeros((B, K, S, Dh), jnp.float32))

  def step(fused):
    def run(cache_pair, q, new_kv, lengths):
      if fused:
        return cached_attention(q, new_kv, new_kv, cache_pair, lengths)
      cache_pair = kv_cache.write(new_kv, new_kv, cache_pair, lengths)
      return kv_cache.attend(q, cache_pair, lengths), cache_pair
    jitted = jax.jit(run, donate_argnums=0)
    state = {'cache': cache()}

    def call():  # the cache goes round, donated, as in the decode loop
      out, state['cache'] = jitted(state['cache'], q, new_kv, lengths)
      return out
    return call

  return cpu_attention.best_ms([step(True), step(False)], ())
