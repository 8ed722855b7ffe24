"""Packed sequences with segment ids: each sequence of a window is computed as if it were alone,
in every attention implementation that takes segment ids, and through the whole model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm import attention as attention_lib, losses, sharding, train
from llm.attention import reference
from llm.config import base_config
from llm.data import pipeline

# Three sequences and two padding slots in a window of 128 (splash tiles by 128).
LENGTHS = (50, 31, 45)


def _segments(T=128):
  ids = np.concatenate([np.full(n, i + 1) for i, n in enumerate(LENGTHS)])
  return np.pad(ids, (0, T - len(ids)))[None].astype(np.int32)


# 'xla' off the CPU is jax.nn.dot_product_attention with the segments as a mask (a GPU's path, run
# here by naming the platform); on the CPU it is llm/kernels/cpu_xla_attention.py's own mask.
@pytest.mark.parametrize('implementation,platform', [('xla', 'cpu'), ('xla', 'gpu'), ('splash', 'cpu')])
def test_each_segment_attends_as_if_alone_with_the_same_gradients(implementation, platform, monkeypatch):
  monkeypatch.setattr(attention_lib, 'platform', lambda: platform)
  rng = np.random.default_rng(0)
  T, H, K, Dh = 128, 4, 2, 16
  q, k, v, dout = (jnp.asarray(rng.standard_normal((1, T, n, Dh)), jnp.float32) for n in (H, K, K, H))
  segments = jnp.asarray(_segments(T))
  run = jax.jit(lambda q, k, v: attention_lib.causal_attention(q, k, v, implementation, segments))
  got, vjp = jax.vjp(run, q, k, v)
  grads = vjp(dout)
  start = 0
  for n in LENGTHS:  # the reference on each sequence cut out alone
    part = slice(start, start + n)
    alone = lambda q, k, v: reference.masked_attention(q, k, v, reference.causal_mask(1, n))
    want, vjp_alone = jax.vjp(alone, q[:, part], k[:, part], v[:, part])
    np.testing.assert_allclose(got[:, part], want, rtol=1e-5, atol=2e-5)
    for g, w in zip(grads, vjp_alone(dout[:, part]), strict=True):
      np.testing.assert_allclose(g[:, part], w, rtol=1e-4, atol=1e-4)
    start += n


def test_auto_takes_a_path_with_segment_ids_and_the_cpu_kernel_refuses_them():
  shape = (2, 256, 4, 64)
  assert attention_lib.select('auto', shape, shape, jnp.float32, segmented=True) == 'xla'
  with pytest.raises(ValueError, match='segment ids'):
    attention_lib.select('cpu_kernel', shape, shape, jnp.float32, segmented=True)


@pytest.mark.parametrize('position,smear_keys', [('rope', False), ('learned', False), ('rope', True)])
def test_packed_window_gives_each_sequence_its_logits_alone(position, smear_keys):
  """Through the model: a window packed from three sequences, with segment ids and positions
  from segment_batch, yields for each sequence the logits it gets alone at positions 0..n-1
  (with smeared keys: a sequence's first key takes nothing from the sequence before it)."""
  c = base_config()
  c.model.update(dict(num_layers=2, num_heads=2, num_kv_heads=1, dim=32, mlp_dim=64, max_seq_len=128,
                      position=position, smear_keys=smear_keys))
  c.train.update(dict(seq_len=128, batch_size=1))
  setup = train.build(c, 64, sharding.make_mesh(c.mesh))
  rng = np.random.default_rng(1)
  sequences = [rng.integers(1, 64, n) for n in LENGTHS]
  window = np.pad(np.concatenate(sequences), (0, 128 - sum(LENGTHS)))[None].astype(np.int32)
  batch = {'inputs': window, **pipeline.segment_batch(_segments())}
  with setup.context():
    params = setup.init(jax.random.key(0)).params
    packed = losses.batch_logits(setup.model, params, batch)
    start = 0
    for seq in sequences:
      alone = setup.model.apply({'params': params}, jnp.asarray(seq[None], jnp.int32))
      np.testing.assert_allclose(packed[:, start:start + len(seq)], alone, rtol=1e-4, atol=1e-4)
      start += len(seq)
