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
  keep_BxV = (jnp.cumsum(probs_BxV, axis=-1) - probs_BxV) < jnp.where(top_p_B < 1.0, top_p_B, jnp.inf)[:, None]
  cutoff_Bx1 = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits_BxV < jnp.maximum(kth_Bx1, cutoff_Bx1), -jnp.inf, logits_BxV)


def _inverse_cdf(keys_B, logits_BxV):
  """Row b's token drawn from softmax(logits) with keys_B[b]: the first whose cumulative mass
  reaches u * total for u uniform in (0, 1], so a token of zero mass (filtered out) is never drawn."""
  u_B = 1.0 - jax.vmap(jax.random.uniform)(keys_B)
  cdf_BxV = jnp.cumsum(jax.nn.softmax(logits_BxV, axis=-1), axis=-1)
  return jnp.sum(cdf_BxV < u_B[:, None] * cdf_BxV[:, -1:], axis=-1)


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
  greedy = lambda logits_BxV: jnp.argmax(logits_BxV, axis=-1)

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
