"""The decode step's CPU kernel (llm/kernels/cpu_cached_attention.cc) against attention written
out in numpy, what it reads, and when the model takes it."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm import attention as attention_lib
from llm.attention import kv_cache
from llm.kernels import cpu_attention, cpu_cached_attention

pytestmark = pytest.mark.skipif(not cpu_attention._compiler(), reason='no C++ compiler here')


def random_case(B, T, H, K, Dh, S, seed=0):
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((B, T, H, Dh)).astype(np.float32)
  new_k, new_v = (rng.standard_normal((B, T, K, Dh)).astype(np.float32) for _ in range(2))
  k = rng.standard_normal((B, K, Dh, S)).astype(np.float32)
  v = rng.standard_normal((B, K, S, Dh)).astype(np.float32)
  lengths = rng.integers(0, S - T + 1, B).astype(np.int32)
  lengths[0], lengths[-1] = 0, S - T  # an empty row and a full one
  return q, new_k, new_v, k, v, lengths


def numpy_write(new_k, new_v, k, v, lengths):
  """Row b's T new keys and values at slots lengths[b]...: copies of the cache."""
  k, v = k.copy(), v.copy()
  for b in range(k.shape[0]):
    for t in range(new_k.shape[1]):
      k[b, :, :, lengths[b] + t] = new_k[b, t]
      v[b, :, lengths[b] + t] = new_v[b, t]
  return k, v


def numpy_attention(q, k, v, lengths):
  """Query t of row b, head h over slots 0..lengths[b] + t of its key/value head h // G."""
  B, T, H, Dh = q.shape
  G = H // k.shape[1]
  out = np.zeros_like(q)
  for b in range(B):
    for t in range(T):
      n = lengths[b] + t + 1
      for h in range(H):
        logits = q[b, t, h] @ k[b, h // G, :, :n] / np.sqrt(Dh)
        weights = np.exp(logits - logits.max())
        out[b, t, h] = weights / weights.sum() @ v[b, h // G, :n]
  return out


@pytest.mark.parametrize('B,T,H,K,Dh,S', [(3, 1, 4, 4, 64, 96), (2, 3, 4, 2, 16, 40), (5, 1, 6, 3, 24, 33),
                                         (3, 2, 4, 2, 128, 301)])  # several slot blocks, a row ending mid-vector
def test_the_kernel_writes_the_new_keys_and_attends_over_each_rows_filled_slots(B, T, H, K, Dh, S):
  """One query (decode) and several; grouped-query heads; head widths that are not a multiple
  of the vector width; rows empty, partly filled and full. The cache comes back written as
  numpy writes it, every other slot untouched, and the attention reads the new keys."""
  q, new_k, new_v, k, v, lengths = random_case(B, T, H, K, Dh, S)
  got, (got_k, got_v) = jax.jit(cpu_cached_attention.cached_attention)(q, new_k, new_v, (k, v), lengths)
  want_k, want_v = numpy_write(new_k, new_v, k, v, lengths)
  np.testing.assert_array_equal(got_k, want_k)
  np.testing.assert_array_equal(got_v, want_v)
  want = numpy_attention(q, want_k, want_v, lengths)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  xla_cache = kv_cache.write(*map(jnp.asarray, (new_k, new_v)), (jnp.asarray(k), jnp.asarray(v)), jnp.asarray(lengths))
  np.testing.assert_allclose(got, kv_cache.attend(q, xla_cache, lengths), rtol=1e-5, atol=1e-5)


def test_the_kernel_never_reads_past_a_rows_slots():
  """Slots beyond lengths[b] + t hold stale keys in a reused cache: NaN there changes nothing."""
  q, new_k, new_v, k, v, lengths = random_case(4, 1, 4, 2, 32, 64)
  want, _ = cpu_cached_attention.cached_attention(q, new_k, new_v, (k, v), lengths)
  for b, n in enumerate(lengths + 1):
    k[b, :, :, n:] = np.nan
    v[b, :, n:] = np.nan
  got, _ = cpu_cached_attention.cached_attention(q, new_k, new_v, (k, v), lengths)
  assert np.isfinite(got).all()
  np.testing.assert_array_equal(got, want)


def _decode_choice(monkeypatch, implementation, q_shape, k_shape, dtype=jnp.float32):
  """What the model's cached attention runs for these shapes: 'kernel' or 'xla'."""
  ran = []
  monkeypatch.setattr(cpu_cached_attention, 'cached_attention',
                      lambda *a: ran.append('kernel') or (jnp.zeros(q_shape), a[3]))
  monkeypatch.setattr(kv_cache, 'attend', lambda *a: ran.append('xla') or jnp.zeros(q_shape))
  B, T, H, Dh = q_shape
  K, S = k_shape[1], k_shape[3]
  cache = (jnp.zeros(k_shape, dtype), jnp.zeros((B, K, S, Dh), dtype))
  new_kv = jnp.zeros((B, T, K, Dh), dtype)
  attention_lib.cached_attention(jnp.zeros(q_shape, dtype), new_kv, new_kv, cache, jnp.zeros((B,), jnp.int32),
                                 implementation)
  return ran[0]


@pytest.mark.parametrize('kernel_ms,xla_ms,want', [(1.0, 2.0, 'kernel'), (3.0, 2.0, 'xla')])
def test_auto_takes_the_kernel_for_a_decode_step_only_where_measured_faster(monkeypatch, tmp_path, kernel_ms,
                                                                           xla_ms, want):
  monkeypatch.setenv('LLM_CACHE_DIR', str(tmp_path))
  (tmp_path / 'kernels').mkdir()
  key = cpu_attention.choice_key('cached', (8, 1, 4, 2, 16, 64))
  (tmp_path / 'kernels' / 'choices.json').write_text(json.dumps({key: [kernel_ms, xla_ms]}))
  timed = []
  monkeypatch.setattr(cpu_cached_attention, '_time_both', lambda *shape: timed.append(shape) or (1.0, 2.0))
  cpu_cached_attention.faster_than_xla.cache_clear()
  try:
    assert _decode_choice(monkeypatch, 'auto', (8, 1, 4, 16), (8, 2, 16, 64)) == want
    assert not timed  # the kept measurement is used
    assert _decode_choice(monkeypatch, 'cpu_kernel', (8, 1, 4, 16), (8, 2, 16, 64)) == 'kernel'
    assert _decode_choice(monkeypatch, 'xla', (8, 1, 4, 16), (8, 2, 16, 64)) == 'xla'
    assert _decode_choice(monkeypatch, 'auto', (8, 5, 4, 16), (8, 2, 16, 64)) == 'xla'  # a prefill
    assert _decode_choice(monkeypatch, 'cpu_kernel', (8, 1, 4, 16), (8, 2, 16, 64), jnp.bfloat16) == 'xla'
    assert _decode_choice(monkeypatch, 'auto', (2, 1, 4, 16), (2, 2, 16, 64)) == 'kernel'  # new shape: timed
    assert timed == [(2, 1, 4, 2, 16, 64)]
  finally:
    cpu_cached_attention.faster_than_xla.cache_clear()


def test_a_multi_device_mesh_keeps_the_xla_path(monkeypatch):
  """A custom call is not partitioned: under a mesh of several devices XLA would gather the cache."""
  class Mesh:
    empty, size = False, 8
  monkeypatch.setattr(jax.sharding, 'get_abstract_mesh', lambda: Mesh())
  assert _decode_choice(monkeypatch, 'cpu_kernel', (8, 1, 4, 16), (8, 2, 16, 64)) == 'xla'
