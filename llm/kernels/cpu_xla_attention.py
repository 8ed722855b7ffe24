"""Causal attention in plain XLA ops, laid out for XLA's CPU backend: the `xla` implementation
on the CPU (llm/attention/), and the CPU kernel's yardstick.

Queries go in blocks of q_block rows and block i reads only the keys up to its own last
position, so most of the masked upper triangle is never computed (on T=256 four blocks of 64 do
10/16 of the work). The backward is written by hand as FlashAttention-2 writes it:
dS = P * (dP - delta) with delta = rowsum(dO * O), one reduction over the head width for all
blocks; autodiff's rowsum(dP * P) per block compiled to slow per-block reductions on the CPU.
Layouts: q [B, K, G, T, Dh] (scaled), k and v [B, K, S, Dh], K key/value heads of G queries each.
Packed sequences (segment_ids_BxT, one id per packed conversation) add a mask inside each block:
a query attends only to keys of its own segment.
"""
import functools

import jax
import jax.numpy as jnp

from llm.attention import reference


def _query_blocks(T: int, q_block: int):
  """(start, end) of each block of queries; block i attends to keys [0, end)."""
  return [(start, min(T, start + q_block)) for start in range(0, T, q_block)]


def _forward(q_BxKxGxTxDh, k_BxKxSxDh, v_BxKxSxDh, segment_ids_BxT, q_block):
  outs, probs = [], []
  for start, end in _query_blocks(q_BxKxGxTxDh.shape[3], q_block):
    mask = jnp.arange(start, end)[:, None] >= jnp.arange(end)[None, :]  # causal, [Tq, S]
    if segment_ids_BxT is not None:
      same_BxTqxS = segment_ids_BxT[:, start:end, None] == segment_ids_BxT[:, None, :end]
      mask = (mask & same_BxTqxS)[:, None, None]  # [B, 1, 1, Tq, S]
    out, p = reference.softmax_attention(q_BxKxGxTxDh[:, :, :, start:end], k_BxKxSxDh[:, :, :end],
                                              v_BxKxSxDh[:, :, :end], mask)
    outs.append(out)
    probs.append(p)
  return jnp.concatenate(outs, axis=3), probs


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def causal_blocks(q_BxKxGxTxDh, k_BxKxSxDh, v_BxKxSxDh, segment_ids_BxT, q_block: int):
  return _forward(q_BxKxGxTxDh, k_BxKxSxDh, v_BxKxSxDh, segment_ids_BxT, q_block)[0]


def _fwd(q_BxKxGxTxDh, k_BxKxSxDh, v_BxKxSxDh, segment_ids_BxT, q_block):
  out_BxKxGxTxDh, probs = _forward(q_BxKxGxTxDh, k_BxKxSxDh, v_BxKxSxDh, segment_ids_BxT, q_block)
  return out_BxKxGxTxDh, (q_BxKxGxTxDh, k_BxKxSxDh, v_BxKxSxDh, out_BxKxGxTxDh, probs)


def _bwd(q_block, residuals, dout_BxKxGxTxDh):
  # The probabilities saved by the forward already hold the causal and segment masks.
  q_BxKxGxTxDh, k_BxKxSxDh, v_BxKxSxDh, out_BxKxGxTxDh, probs = residuals
  f32 = jnp.float32
  delta_BxKxGxTx1 = (dout_BxKxGxTxDh.astype(f32) * out_BxKxGxTxDh.astype(f32)).sum(-1, keepdims=True)
  dq_blocks = []
  dk_BxKxSxDh = jnp.zeros(k_BxKxSxDh.shape, f32)
  dv_BxKxSxDh = jnp.zeros(v_BxKxSxDh.shape, f32)
  for (start, end), probs_BxKxGxTqxS in zip(_query_blocks(q_BxKxGxTxDh.shape[3], q_block), probs, strict=True):
    dout_blk = dout_BxKxGxTxDh[:, :, :, start:end]
    dprobs = jnp.einsum('bkgtd,bksd->bkgts', dout_blk, v_BxKxSxDh[:, :, :end], preferred_element_type=f32)
    dlogits = (probs_BxKxGxTqxS * (dprobs - delta_BxKxGxTx1[:, :, :, start:end])).astype(q_BxKxGxTxDh.dtype)
    dq_blocks.append(jnp.einsum('bkgts,bksd->bkgtd', dlogits, k_BxKxSxDh[:, :, :end],
                                preferred_element_type=f32))
    dk_BxKxSxDh = dk_BxKxSxDh.at[:, :, :end].add(
        jnp.einsum('bkgts,bkgtd->bksd', dlogits, q_BxKxGxTxDh[:, :, :, start:end], preferred_element_type=f32))
    dv_BxKxSxDh = dv_BxKxSxDh.at[:, :, :end].add(
        jnp.einsum('bkgts,bkgtd->bksd', probs_BxKxGxTqxS.astype(dout_blk.dtype), dout_blk,
                   preferred_element_type=f32))
  return (jnp.concatenate(dq_blocks, axis=3).astype(q_BxKxGxTxDh.dtype), dk_BxKxSxDh.astype(k_BxKxSxDh.dtype),
          dv_BxKxSxDh.astype(v_BxKxSxDh.dtype), None)


causal_blocks.defvjp(_fwd, _bwd)


def causal_attention(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, segment_ids_BxT=None, q_block: int = 64):
  """softmax(q k^T / sqrt(Dh), causal [, same segment]) v in the model's layouts, through causal_blocks."""
  q_BxKxGxTxDh, k_BxKxSxDh, v_BxKxSxDh = reference.heads_major(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh)
  out_BxKxGxTxDh = causal_blocks(q_BxKxGxTxDh, k_BxKxSxDh, v_BxKxSxDh, segment_ids_BxT, q_block)
  return reference.tokens_major(out_BxKxGxTxDh)
