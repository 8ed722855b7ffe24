"""Softmax attention written out in XLA ops: the math every implementation is tested against,
and the path for decoding and prefill over a KV cache (a mask per query, not a causal shape).

Layouts: the model's q [B, T, H, Dh] and k, v [B, S, K, Dh], H = K * G query heads sharing each
key/value head (GQA); heads-major inside, q [B, K, G, T, Dh] and k, v [B, K, S, Dh], so every
product reads contiguous slices. The softmax runs in float32.
"""
import jax
import jax.numpy as jnp


def heads_major(q_BxTxHxDh, k_BxSxKxDh, v_BxSxKxDh):
  """(q scaled by 1/sqrt(Dh) as [B, K, G, T, Dh], k and v as [B, K, S, Dh])."""
  B, T, H, Dh = q_BxTxHxDh.shape
  K = k_BxSxKxDh.shape[2]
  q_BxKxGxTxDh = (q_BxTxHxDh * Dh ** -0.5).reshape(B, T, K, H // K, Dh).transpose(0, 2, 3, 1, 4)
  return q_BxKxGxTxDh, k_BxSxKxDh.transpose(0, 2, 1, 3), v_BxSxKxDh.transpose(0, 2, 1, 3)


def tokens_major(out_BxKxGxTxDh):
  B, K, G, T, Dh = out_BxKxGxTxDh.shape
  return out_BxKxGxTxDh.transpose(0, 3, 1, 2, 4).reshape(B, T, K * G, Dh)


def softmax_attention(q_BxKxGxTxDh, k_BxKxSxDh, v_BxKxSxDh, mask):
  """Output and float32 probabilities of softmax attention over the keys that `mask` allows
  (mask broadcasts against [B, K, G, T, S])."""
  logits_BxKxGxTxS = jnp.einsum('bkgtd,bksd->bkgts', q_BxKxGxTxDh, k_BxKxSxDh,
                                preferred_element_type=jnp.float32)
  logits_BxKxGxTxS = jnp.where(mask, logits_BxKxGxTxS, -1e30)
  probs_BxKxGxTxS = jax.nn.softmax(logits_BxKxGxTxS, axis=-1)
  out_BxKxGxTxDh = jnp.einsum('bkgts,bksd->bkgtd', probs_BxKxGxTxS.astype(v_BxKxSxDh.dtype), v_BxKxSxDh)
  return out_BxKxGxTxDh, probs_BxKxGxTxS


def masked_attention(q_BxTxHxDh, k_BxSxKxDh, v_BxSxKxDh, mask_BxTxS):
  """Each query t of row b attends to the keys s where mask_BxTxS[b, t, s]."""
  q, k, v = heads_major(q_BxTxHxDh, k_BxSxKxDh, v_BxSxKxDh)
  out_BxKxGxTxDh, _ = softmax_attention(q, k, v, mask_BxTxS[:, None, None])
  return tokens_major(out_BxKxGxTxDh)


def causal_mask(B: int, T: int):
  return jnp.broadcast_to(jnp.tril(jnp.ones((T, T), bool)), (B, T, T))
