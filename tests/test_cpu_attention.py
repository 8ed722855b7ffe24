"""The compiled CPU attention kernel against the model's XLA attention, and its fallback."""
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm import model as model_lib
from llm.kernels import cpu_attention

needs_compiler = pytest.mark.skipif(cpu_attention._compiler() is None, reason='no C++ compiler here')


@needs_compiler
@pytest.mark.parametrize('B,T,H,K,Dh,q_block', [
    (2, 64, 4, 4, 64, 64),    # the benchmark's head width, one block
    (2, 130, 4, 2, 64, 64),   # GQA, a last block of 2 rows
    (1, 100, 6, 1, 48, 32),   # one key/value head; 48 = 32 + a 16-column remainder
    (3, 37, 2, 2, 16, 8),     # head width below one register tile
])
def test_kernel_matches_masked_attention_and_its_gradients(B, T, H, K, Dh, q_block):
  assert cpu_attention.available()
  rng = np.random.default_rng(0)
  q, k, v, dout = (jnp.asarray(rng.standard_normal((B, T, n, Dh)), jnp.float32) for n in (H, K, K, H))
  causal = jnp.broadcast_to(jnp.tril(jnp.ones((T, T), bool)), (B, T, T))
  got, vjp_got = jax.vjp(lambda q, k, v: cpu_attention.causal_attention(q, k, v, q_block), q, k, v)
  want, vjp_want = jax.vjp(lambda q, k, v: model_lib.attention(q, k, v, causal), q, k, v)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for g, w in zip(vjp_got(dout), vjp_want(dout), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@needs_compiler
def test_the_kernel_takes_float32_on_one_cpu_device_only():
  """So the in-process model tests (one CPU device, float32) all run through the kernel."""
  x = jnp.zeros((1, 8, 2, 16))
  assert cpu_attention.applies(x)
  assert not cpu_attention.applies(x.astype(jnp.bfloat16))


def test_without_a_compiler_the_model_keeps_the_xla_path(monkeypatch, caplog):
  monkeypatch.setenv('CXX', '/nonexistent/c++')
  monkeypatch.setattr(shutil, 'which', lambda name: None)
  assert cpu_attention._library.__wrapped__() is None  # uncached: the process's kernel stays
  assert 'using the XLA path' in caplog.text


def test_llm_cpu_attention_xla_turns_the_kernel_off(monkeypatch):
  monkeypatch.setenv('LLM_CPU_ATTENTION', 'xla')
  assert not cpu_attention.available()
  assert not cpu_attention.applies(jnp.zeros((1, 8, 2, 16)))
