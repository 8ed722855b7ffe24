"""Turning next-token logits into tokens: greedy, temperature, top-k, top-p (nucleus).

The knobs are traced values, not static arguments: one compiled decode loop serves every
temperature, k and p. They are scalars or one per row ([B]: a server's rows belong to different
requests). lax.cond on whether any row needs it skips the work a setting does not need: greedy
decoding never draws, and the sort that top-k and top-p share runs only when one is on.

A draw is by inverse CDF: one uniform number per row against the cumulative softmax. The Gumbel
trick of jax.random.categorical draws a number and takes two logarithms per vocabulary entry, a
large share of a CPU decode step at batch 32 (docs/performance.md).
"""
import jax
import jax.numpy as jnp

_BLOCK = 64  # tokens per block of the two-level inverse CDF (_inverse_cdf)


def _filtered(logits_BxV, top_k_B, top_p_B):
  """logits with everything outside each row's top-k and then outside its top-p mass set to -inf."""
  V = logits_BxV.shape[-1]
  sorted_BxV = -jnp.sort(-logits_BxV, axis=-1)
  kth_Bx1 = jnp.take_along_axis(sorted_BxV, jnp.clip(top_k_B - 1, 0, V - 1)[:, None], axis=-1)
  kth_Bx1 = jnp.where(top_k_B[:, None] > 0, kth_Bx1, -jnp.inf)
  # Sorting is monotone, so the sorted top-k-filtered logits are the sorted logits filtered.
  sorted_BxV = jnp.where(sorted_BxV < kth_Bx1, -jnp.inf, sorted_BxV)
  probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
  # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it is < top_p.
  # The top token always stays (none would at top_p 0, and the draw would fall on token 0).
  keep_BxV = (jnp.cumsum(probs_BxV, axis=-1) - probs_BxV) < jnp.where(top_p_B < 1.0, top_p_B, jnp.inf)[:, None]
  keep_BxV = keep_BxV.at[:, 0].set(True)
  cutoff_Bx1 = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits_BxV < jnp.maximum(kth_Bx1, cutoff_Bx1), -jnp.inf, logits_BxV)


def _first_argmax(logits_BxV):
  """jnp.argmax over the last axis (the first of tied maxima) as two plain reductions, a max and a
  min of the indices holding it: XLA's CPU backend runs argmax as one variadic reduce, ~6x slower
  at [32, 4096] (docs/performance.md). A row of NaN gives its last index, never one out of range."""
  V = logits_BxV.shape[-1]
  at_max_BxV = logits_BxV == jnp.max(logits_BxV, axis=-1, keepdims=True)
  return jnp.minimum(jnp.min(jnp.where(at_max_BxV, jnp.arange(V, dtype=jnp.int32), V), axis=-1), V - 1)


def _inverse_cdf(keys_B, logits_BxV):
  """Row b's token drawn from softmax(logits) with keys_B[b] (_first_reaching, u uniform in (0, 1])."""
  u_B = 1.0 - jax.vmap(jax.random.uniform)(keys_B)
  return _first_reaching(jnp.exp(logits_BxV - jnp.max(logits_BxV, axis=-1, keepdims=True)), u_B)


def _first_reaching(mass_BxV, u_B):
  """Per row, the first token whose cumulative mass reaches u * the row's total (u in (0, 1]), so a
  token of zero mass (filtered out) is never the one.

  In two levels: the cumulative mass of blocks of _BLOCK tokens picks the block, then the
  cumulative mass inside that one block picks the token. A cumulative sum over the whole
  vocabulary (XLA's CPU reduce-window) cost 3x as much at batch 32 (docs/performance.md)."""
  B, V = mass_BxV.shape
  n = -(-V // _BLOCK)
  blocks_BxNxW = jnp.pad(mass_BxV, ((0, 0), (0, n * _BLOCK - V))).reshape(B, n, _BLOCK)
  block_cdf_BxN = jnp.cumsum(jnp.sum(blocks_BxNxW, axis=-1), axis=-1)
  target_B = u_B * block_cdf_BxN[:, -1]
  block_B = jnp.sum(block_cdf_BxN < target_B[:, None], axis=-1)  # < n: target <= the total
  before_B = jnp.where(block_B > 0, jnp.take_along_axis(block_cdf_BxN, jnp.maximum(block_B - 1, 0)[:, None], 1)[:, 0],
                       0.0)
  inner_BxW = jnp.take_along_axis(blocks_BxNxW, block_B[:, None, None], axis=1)[:, 0]
  inside_B = jnp.sum(before_B[:, None] + jnp.cumsum(inner_BxW, axis=-1) < target_B[:, None], axis=-1)
  # Summed inside the block the mass may round a hair under target: then the block's last token
  # with mass, never a zero-mass one after it.
  last_B = _BLOCK - 1 - jnp.argmax(inner_BxW[:, ::-1] > 0, axis=-1)
  return block_B * _BLOCK + jnp.minimum(inside_B, last_B)


def sample_logits(keys_B, logits_BxV, temperature, top_k, top_p, used_B=None):
  """One token per row, row b drawn with keys_B[b]. temperature 0 is greedy; top_k 0 and
  top_p 1.0 switch those filters off. The knobs are scalars or [B] (Python or traced).
  used_B: the rows whose tokens will be used (default all); the others' knobs do not decide
  which work runs (a server's empty slots). Returns int32[B]."""
  B = logits_BxV.shape[0]
  per_row = lambda x, dtype: jnp.broadcast_to(jnp.asarray(x, dtype), (B,))
  temperature_B, top_k_B, top_p_B = per_row(temperature, jnp.float32), per_row(top_k, jnp.int32), per_row(
      top_p, jnp.float32)
  used_B = jnp.ones((B,), bool) if used_B is None else used_B
  greedy = _first_argmax

  def draw(logits_BxV):
    scaled_BxV = logits_BxV.astype(jnp.float32) / jnp.where(temperature_B > 0, temperature_B, 1.0)[:, None]
    scaled_BxV = jax.lax.cond(jnp.any(used_B & ((top_k_B > 0) | (top_p_B < 1.0))), _filtered, lambda l, k, p: l,
                              scaled_BxV, top_k_B, top_p_B)
    return _inverse_cdf(keys_B, scaled_BxV)

  def mixed(logits_BxV):  # some rows greedy, some not (a server's batch)
    return jnp.where(temperature_B > 0, draw(logits_BxV), greedy(logits_BxV))

  # The argmax is skipped where no row is greedy: a variadic reduce over the vocabulary, 5% of
  # a CPU decode step at batch 32.
  sampled_B = temperature_B > 0
  branch = jnp.where(jnp.all(sampled_B | ~used_B), 2, jnp.any(sampled_B & used_B).astype(jnp.int32))
  return jax.lax.switch(branch, (greedy, mixed, draw), logits_BxV).astype(jnp.int32)
