"""Every causal-attention implementation that runs on a CPU against the reference, and what
`auto` picks on each platform (mocked)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm import attention as attention_lib, model as model_lib
from llm.attention import reference, splash
from llm.kernels import cpu_attention

CPU_IMPLEMENTATIONS = ['xla', 'splash'] + (['cpu_kernel'] if cpu_attention._compiler() else [])


@pytest.mark.parametrize('implementation', CPU_IMPLEMENTATIONS)
@pytest.mark.parametrize('B,T,H,K,Dh', [(2, 128, 4, 2, 32), (1, 256, 2, 1, 64)])
def test_implementation_matches_the_reference_and_its_gradients(implementation, B, T, H, K, Dh):
  """splash runs in Pallas interpret mode here; GQA (K < H) in both shapes."""
  rng = np.random.default_rng(0)
  q, k, v, dout = (jnp.asarray(rng.standard_normal((B, T, n, Dh)), jnp.float32) for n in (H, K, K, H))
  run = jax.jit(lambda q, k, v: attention_lib.causal_attention(q, k, v, implementation))
  got, vjp_got = jax.vjp(run, q, k, v)
  want, vjp_want = jax.vjp(lambda q, k, v: reference.masked_attention(q, k, v, reference.causal_mask(B, T)),
                           q, k, v)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)
  for g, w in zip(vjp_got(dout), vjp_want(dout), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_the_reference_is_causal_softmax_attention():
  """Written out by hand for one head: row t is the softmax-weighted mean of v[0..t]."""
  rng = np.random.default_rng(1)
  q, k, v = (rng.standard_normal((1, 5, 1, 4)).astype(np.float32) for _ in range(3))
  got = np.asarray(reference.masked_attention(q, k, v, reference.causal_mask(1, 5)))[0, :, 0]
  for t in range(5):
    logits = k[0, :t + 1, 0] @ q[0, t, 0] / 2.0  # 1/sqrt(4)
    weights = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(got[t], weights @ v[0, :t + 1, 0], rtol=1e-5)


def test_the_model_gives_the_same_logits_with_every_implementation(monkeypatch):
  """config.model.attention reaches the layers: same parameters, same logits, any implementation."""
  chosen = []
  select = attention_lib.select
  monkeypatch.setattr(attention_lib, 'select', lambda *args: chosen.append(select(*args)) or chosen[-1])
  def model(implementation):
    return model_lib.Transformer(model_lib.ModelConfig(
        vocab_size=64, num_layers=2, num_heads=4, num_kv_heads=2, dim=32, mlp_dim=64, max_seq_len=128,
        position='rope', norm='rmsnorm', mlp='swiglu', qk_norm=False, tied_embeddings=False, rope_theta=1e4,
        dtype='float32', remat='none', scan_layers=True, init_std=0.02, attention=implementation))
  tokens = jax.random.randint(jax.random.key(0), (2, 128), 0, 64)
  params = model('xla').init(jax.random.key(1), tokens)
  want = model('xla').apply(params, tokens)
  for implementation in CPU_IMPLEMENTATIONS[1:]:
    chosen.clear()
    np.testing.assert_allclose(model(implementation).apply(params, tokens), want, rtol=1e-4, atol=1e-4)
    assert set(chosen) == {implementation}


BF16, F32 = jnp.bfloat16, jnp.float32


@pytest.mark.parametrize('platform,T,dtype,kernel_faster,want', [
    ('gpu', 256, BF16, None, 'cudnn'),
    ('gpu', 256, F32, None, 'xla'),        # cuDNN's fused attention is half precision only
    ('gpu', 64, BF16, None, 'xla'),        # short: the XLA path
    ('gpu', 128, BF16, None, 'cudnn'),     # FLASH_MIN_SEQ itself is long enough
    ('gpu', 127, BF16, None, 'xla'),
    ('tpu', 256, BF16, None, 'splash'),
    ('tpu', 200, BF16, None, 'xla'),       # not a multiple of splash's 128-wide blocks
    ('tpu', 64, F32, None, 'xla'),
    ('cpu', 256, F32, True, 'cpu_kernel'),
    ('cpu', 256, F32, False, 'xla'),       # measured slower on this host: never slower than XLA
    ('cpu', 256, BF16, True, 'xla'),       # the kernel is float32
])
def test_auto_picks_per_platform(monkeypatch, platform, T, dtype, kernel_faster, want):
  monkeypatch.setattr(attention_lib, 'platform', lambda: platform)
  monkeypatch.setattr(cpu_attention, 'available', lambda: True)
  monkeypatch.setattr(cpu_attention, 'faster_than_xla', lambda q_shape, k_shape: kernel_faster)
  assert attention_lib.select('auto', (8, T, 4, 64), (8, T, 2, 64), dtype) == want


@pytest.mark.parametrize('platform,requested,dtype,message', [
    ('cpu', 'cudnn', BF16, 'needs a GPU'),
    ('gpu', 'cudnn', F32, 'bfloat16/float16'),
    ('gpu', 'cpu_kernel', F32, 'needs the CPU backend'),
    ('cpu', 'cpu_kernel', BF16, 'float32'),
    ('cpu', 'flash', F32, "choose one of"),
])
def test_a_request_that_cannot_run_here_is_one_clear_error(monkeypatch, platform, requested, dtype, message):
  monkeypatch.setattr(attention_lib, 'platform', lambda: platform)
  with pytest.raises(ValueError, match=message):
    attention_lib.select(requested, (8, 256, 4, 64), (8, 256, 4, 64), dtype)


def test_an_unknown_implementation_in_the_config_is_refused():
  cfg = model_lib.ModelConfig(vocab_size=64, num_layers=1, num_heads=2, num_kv_heads=2, dim=32, mlp_dim=64,
                              max_seq_len=16, position='learned', norm='layernorm', mlp='gelu', qk_norm=False,
                              tied_embeddings=True, rope_theta=1e4, dtype='float32', remat='none',
                              scan_layers=True, init_std=0.02, attention='flash')
  with pytest.raises(ValueError, match="model.attention='flash'"):
    cfg.validate()


def test_splash_refuses_a_sequence_its_blocks_cannot_tile():
  x = jnp.zeros((1, 100, 2, 16))
  with pytest.raises(ValueError, match='multiple of 128'):
    splash.causal_attention(x, x, x)
