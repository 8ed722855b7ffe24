"""The Transformer: causality, both styles, golden numbers of one optimizer step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm import model as model_lib, sharding, train
from llm.attention import reference
from llm.kernels import cpu_matmul, cpu_xla_attention
from llm.losses import lm_loss
from llm.config import base_config

STYLES = {
    'gpt2': {},
    'modern': dict(position='rope', norm='rmsnorm', mlp='swiglu', num_kv_heads=1, qk_norm=True,
                   tied_embeddings=False),
    # modern with each key mixed with the previous position's (model.smear_keys)
    'smear': dict(position='rope', norm='rmsnorm', mlp='swiglu', num_kv_heads=1, qk_norm=True,
                  tied_embeddings=False, smear_keys=True),
}


def small_config(style='gpt2', **model):
  c = base_config()
  c.model.update(dict(num_layers=2, num_heads=2, num_kv_heads=2, dim=32, mlp_dim=64, max_seq_len=16))
  c.model.update(STYLES[style])
  c.model.update(model)
  c.train.update(dict(seq_len=16, batch_size=4, steps=10, warmup_steps=2))
  return c


def init(config, vocab=64):
  setup = train.build(config, vocab, sharding.make_mesh(config.mesh))
  with setup.context():
    return setup, setup.init(jax.random.key(0))


@pytest.mark.parametrize('style', sorted(STYLES))
@pytest.mark.parametrize('scan_layers', [True, False])
def test_changing_token_t_leaves_earlier_logits_unchanged(style, scan_layers):
  setup, state = init(small_config(style, scan_layers=scan_layers))
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 64)
  t = 9
  changed = tokens.at[:, t].set((tokens[:, t] + 1) % 64)
  with setup.context():
    before = setup.model.apply({'params': state.params}, tokens)
    after = setup.model.apply({'params': state.params}, changed)
  np.testing.assert_array_equal(before[:, :t], after[:, :t])
  assert not np.allclose(before[:, t:], after[:, t:])  # the change is visible from t on


def test_scan_and_unrolled_layers_compute_the_same_function():
  c_scan, c_loop = small_config('modern'), small_config('modern', scan_layers=False)
  setup_scan, state = init(c_scan)
  setup_loop, loop_state = init(c_loop)
  # Same weights, laid out per layer instead of stacked.
  layers = state.params['layers']
  params = {k: v for k, v in state.params.items() if k != 'layers'}
  for i in range(2):
    params[f'layer_{i}'] = jax.tree.map(lambda x, i=i: x[i], layers)
  assert jax.tree.structure(params) == jax.tree.structure(loop_state.params)
  tokens = jax.random.randint(jax.random.key(2), (2, 16), 0, 64)
  with setup_scan.context():
    a = setup_scan.model.apply({'params': state.params}, tokens)
    b = setup_loop.model.apply({'params': params}, tokens)
  np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize('T,H,K,q_block,dtype', [(40, 4, 2, 16, 'float32'), (50, 6, 1, 8, 'float32'),
                                                  (64, 4, 4, 64, 'float32'), (32, 4, 2, 8, 'bfloat16')])
def test_blocked_causal_attention_matches_masked_attention_and_its_gradients(T, H, K, q_block, dtype):
  """The CPU path (query blocks, hand-written backward) against autodiff through one masked
  softmax over all keys; GQA, a last block shorter than the others, and bf16 included."""
  rng = np.random.default_rng(0)
  q, k, v, dout = (jnp.asarray(rng.standard_normal((2, T, n, 16)), dtype) for n in (H, K, K, H))
  # Compiled, as the model runs it (eagerly, each query block's ops dispatch one by one: seconds).
  blocked_fn = jax.jit(lambda q, k, v: cpu_xla_attention.causal_attention(q, k, v, q_block=q_block))
  blocked, vjp_blocked = jax.vjp(blocked_fn, q, k, v)
  masked, vjp_masked = jax.vjp(lambda q, k, v: reference.masked_attention(q, k, v, reference.causal_mask(2, T)),
                               q, k, v)
  tol = dict(rtol=2e-2, atol=2e-2) if dtype == 'bfloat16' else dict(rtol=1e-5, atol=1e-5)
  f32 = lambda x: np.asarray(x, np.float32)
  np.testing.assert_allclose(f32(blocked), f32(masked), **tol)
  for got, want in zip(vjp_blocked(dout), vjp_masked(dout), strict=True):
    assert got.dtype == jnp.dtype(dtype)
    np.testing.assert_allclose(f32(got), f32(want), **tol)


@pytest.mark.parametrize('shape', [(64, 48, 16), (64, 16, 48)])
def test_matmul_gradients_match_the_plain_product(shape):
  """cpu_matmul.matmul's backward computes the weight gradient transposed when that runs faster."""
  R, K, N = shape
  rng = np.random.default_rng(0)
  x, w, dy = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in ((R, K), (K, N), (R, N)))
  y, vjp = jax.vjp(cpu_matmul.matmul, x, w)
  y_ref, vjp_ref = jax.vjp(jnp.matmul, x, w)
  np.testing.assert_allclose(y, y_ref, rtol=1e-6)
  for got, want in zip(vjp(dy), vjp_ref(dy), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_smeared_keys_mix_in_the_previous_key_by_the_gate_and_nothing_at_a_start():
  """key t -> gate * k_t + (1 - gate) * k_(t-1), worked out by hand for two key heads with gates
  0.8 and 0.25 (the learnt gate starts at 0.5, where the two weights cannot be told apart). The
  first key takes the one before the window (a decode cache's); a sequence start takes none."""
  k_BxTxKxDh = jnp.array([[[1.], [10.]], [[2.], [20.]], [[4.], [40.]]])[None]
  before_BxKxDh = jnp.array([[[5.], [50.]]])
  starts_BxT = jnp.array([[False, False, True]])
  got = model_lib.smear_keys(k_BxTxKxDh, jnp.array([0.8, 0.25]), before_BxKxDh, starts_BxT)
  np.testing.assert_allclose(got[0, :, :, 0], [[0.8 * 1 + 0.2 * 5, 0.25 * 10 + 0.75 * 50],
                                               [0.8 * 2 + 0.2 * 1, 0.25 * 20 + 0.75 * 10],
                                               [0.8 * 4, 0.25 * 40]], rtol=1e-6)


def test_param_counts_and_flops_match_the_formula():
  setup, state = init(small_config('gpt2'))
  counts = model_lib.count_params(state.params)
  d, f, v, layers, t = 32, 64, 64, 2, 16
  per_layer = 4 * d * d + 2 * d * f + 2 * d  # attention, mlp, two norm scales
  assert counts['non_embedding'] == layers * per_layer + d  # + final norm
  assert counts['total'] == counts['non_embedding'] + v * d + t * d
  flops = model_lib.flops_per_token(setup.model_cfg, counts['non_embedding'], t)
  assert flops == 6 * (counts['non_embedding'] + v * d) + 6 * layers * t * d


def test_flops_of_an_untied_model_count_its_lm_head_once():
  """The modern style: grouped-query attention (2 query heads, 1 key/value head of 16), qk-norm,
  SwiGLU, RMSNorm, and its own lm-head, which the non-embedding count already holds."""
  setup, state = init(small_config('modern'))
  counts = model_lib.count_params(state.params)
  d, h, kv, dh, f, v, layers, t = 32, 2, 1, 16, 64, 64, 2, 16
  per_layer = 2 * d * h * dh + 2 * d * kv * dh + 2 * dh + 3 * d * f + 2 * d  # q, o; k, v; qk-norm; mlp; norms
  assert counts['non_embedding'] == layers * per_layer + d + d * v  # + final norm + lm-head
  flops = model_lib.flops_per_token(setup.model_cfg, counts['non_embedding'], t)
  assert flops == 6 * (layers * per_layer + d + d * v) + 6 * layers * t * d


def test_bfloat16_compute_keeps_float32_params_and_logits():
  setup, state = init(small_config('modern', dtype='bfloat16'))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))
  with setup.context():
    logits = setup.model.apply({'params': state.params}, jnp.zeros((1, 16), jnp.int32))
  assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())


def test_invalid_model_config_names_the_field():
  with pytest.raises(ValueError, match='num_kv_heads'):
    init(small_config('gpt2', num_heads=4, num_kv_heads=3))


@pytest.mark.parametrize('field', ['num_layers', 'num_heads', 'num_kv_heads', 'dim', 'mlp_dim', 'max_seq_len'])
def test_a_size_of_zero_names_the_field(field):
  """Not a ZeroDivisionError from the divisibility checks."""
  with pytest.raises(ValueError, match=f'^model.{field}=0 must be at least 1$'):
    model_lib.ModelConfig.from_config(dict(small_config('modern', **{field: 0}).model), 64)


@pytest.mark.parametrize('with_cache', [False, True])
def test_a_learned_position_model_refuses_positions_past_its_table(with_cache):
  """Its 16-row table gave NaN logits past position 15 and, through a cache, at every position."""
  setup, state = init(small_config('gpt2'))  # max_seq_len 16
  tokens = jnp.ones((1, 4 if with_cache else 20), jnp.int32)
  cache = (jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), model_lib.cache_shapes(setup.model_cfg, 1, 40))
           if with_cache else None)
  with setup.context(), pytest.raises(ValueError, match='model.max_seq_len=16'):
    setup.model.apply({'params': state.params}, tokens, cache=cache)


# Golden numbers: four AdamW steps of the gpt2-style model, seed 0, fixed batch. A change here
# means the model, init or optimizer computes something else: make sure that is intended.
GOLDEN = {'loss': 4.1694789, 'grad_norm': 1.0738945, 'loss_after': 3.9168320}


def test_golden_one_step():
  config = small_config('gpt2')
  setup, state = init(config)
  rng = np.random.default_rng(0)
  batch = {k: rng.integers(0, 64, (4, 16)).astype(np.int32) for k in ('inputs', 'targets')}
  step = jax.jit(train.make_train_step(setup.model, setup.tx, setup.lr_fn, lm_loss, 1))
  with setup.context():
    state, m1 = step(state, batch)
    for _ in range(3):  # the lr warms up from 0, so the first update changes nothing
      state, m = step(state, batch)
  got = {'loss': float(m1['loss']), 'grad_norm': float(m1['grad_norm']), 'loss_after': float(m['loss'])}
  print(got)
  for k, v in GOLDEN.items():
    assert got[k] == pytest.approx(v, rel=1e-5), k


def test_gradient_accumulation_matches_one_big_batch():
  """Micro-batches of rows (0, 2) and (1, 3) hold 25 and 7 loss tokens: the step must weigh every
  token alike (a mean of the micro-batch means would not), and the parameters after two steps at
  a non-zero rate must agree."""
  rng = np.random.default_rng(0)
  batch = {k: rng.integers(0, 64, (4, 16)).astype(np.int32) for k in ('inputs', 'targets')}
  batch['loss_mask'] = (np.arange(16) < np.array([[16], [2], [9], [5]])).astype(np.int32)
  results = []
  for accum in (1, 2):
    config = small_config('gpt2')
    config.train.warmup_steps = 0  # the first step already moves the parameters
    setup, initial = init(config)
    step = jax.jit(train.make_train_step(setup.model, setup.tx, setup.lr_fn, lm_loss, accum))
    with setup.context():
      state, first = step(initial, batch)
      state, _ = step(state, batch)
    results.append((first, state.params))
  assert float(results[0][0]['lr']) > 0
  assert not np.allclose(initial.params['embed']['embedding'], results[0][1]['embed']['embedding'])
  np.testing.assert_allclose(results[0][0]['loss'], results[1][0]['loss'], rtol=1e-6)
  np.testing.assert_allclose(results[0][0]['grad_norm'], results[1][0]['grad_norm'], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), results[0][1], results[1][1])
