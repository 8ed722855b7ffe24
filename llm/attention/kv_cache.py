"""Attention over a KV cache, for decoding and prefill: the new keys and values written into the
cache in place (write), then each query attending to the slots up to its own position (attend,
XLA ops; on a CPU, decode steps may take the kernel llm/kernels/cpu_cached_attention.cc instead,
chosen in llm/attention/__init__.py).
"""
import jax
import jax.numpy as jnp

from llm.attention import reference


def write(k_BxTxKxDh, v_BxTxKxDh, kv_cache, lengths_B):
  """Row b's T new keys and values written to cache slots lengths_B[b]...; returns the cache.

  Decoding reads the whole cache every token, so it must not copy it. The cache is heads-major
  with the keys transposed, k [B, K, Dh, S] and v [B, K, S, Dh]: both products are plain
  (rows, inner) @ (inner, cols) matmuls over the cache as it lies (with keys [S, Dh], XLA's CPU
  dot copied every layer's keys into a transposed layout each token). It is written by one
  scatter per tensor, in place: a vmapped dynamic_update_slice compiles to a select that
  rewrites the whole cache; a scatter of a single slot (batch 1, one token) is turned into a
  dynamic_update_slice that XLA fuses into each of its readers, each working on a copy of the
  cache, so that slot is written twice (the same values) to keep it a scatter.
  """
  k_BxKxDhxS, v_BxKxSxDh = kv_cache
  B, T = k_BxTxKxDh.shape[:2]
  rows_Bx1, slots_BxT = jnp.arange(B)[:, None], lengths_B[:, None] + jnp.arange(T)
  writes = [(rows_Bx1, slots_BxT, k_BxTxKxDh, v_BxTxKxDh)] * (2 if B * T == 1 else 1)
  rows_Nx1, slots_NxT, k_NxTxKxDh, v_NxTxKxDh = (jnp.concatenate(z) for z in zip(*writes, strict=True))
  k_BxKxDhxS = k_BxKxDhxS.at[rows_Nx1, :, :, slots_NxT].set(k_NxTxKxDh.astype(k_BxKxDhxS.dtype),
                                                             mode='promise_in_bounds')
  v_BxKxSxDh = v_BxKxSxDh.at[rows_Nx1, :, slots_NxT].set(v_NxTxKxDh.astype(v_BxKxSxDh.dtype),
                                                         mode='promise_in_bounds')
  return k_BxKxDhxS, v_BxKxSxDh


def attend(q_BxTxHxDh, kv_cache, lengths_B):
  """Each of row b's T queries attending to cache slots 0 .. lengths_B[b] + t (the cache as
  write() left it, lengths_B as before the write): out_BxTxHxDh."""
  k_BxKxDhxS, v_BxKxSxDh = kv_cache
  B, T, H, Dh = q_BxTxHxDh.shape
  K, S = v_BxKxSxDh.shape[1], v_BxKxSxDh.shape[2]
  dtype = q_BxTxHxDh.dtype
  slots_BxT = lengths_B[:, None] + jnp.arange(T)
  q_BxKxGxTxDh = (q_BxTxHxDh * Dh ** -0.5).reshape(B, T, K, H // K, Dh).transpose(0, 2, 3, 1, 4)
  logits_BxKxGxTxS = jnp.einsum('bkgtd,bkds->bkgts', q_BxKxGxTxDh, k_BxKxDhxS.astype(dtype),
                                preferred_element_type=jnp.float32)
  mask_Bx1x1xTxS = (jnp.arange(S) <= slots_BxT[:, :, None])[:, None, None]
  probs_BxKxGxTxS = jax.nn.softmax(jnp.where(mask_Bx1x1xTxS, logits_BxKxGxTxS, -1e30), axis=-1)
  out_BxKxGxTxDh = jnp.einsum('bkgts,bksd->bkgtd', probs_BxKxGxTxS.astype(dtype), v_BxKxSxDh.astype(dtype))
  return reference.tokens_major(out_BxKxGxTxDh)
