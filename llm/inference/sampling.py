"""Turning next-token logits into tokens: greedy, temperature, top-k, top-p (nucleus).

The knobs are traced values, not static arguments: one compiled decode loop serves every
temperature, k and p. lax.cond on the (unbatched) knobs skips the work a setting does not need:
greedy decoding never draws, and the sort that top-k and top-p share runs only when one is on.
"""
import jax
import jax.numpy as jnp


def _filtered(logits_BxV, top_k, top_p):
  """logits with everything outside the top-k and then outside the top-p mass set to -inf."""
  V = logits_BxV.shape[-1]
  sorted_BxV = -jnp.sort(-logits_BxV, axis=-1)
  kth_Bx1 = jnp.take(sorted_BxV, jnp.clip(top_k - 1, 0, V - 1), axis=-1)[:, None]
  kth_Bx1 = jnp.where(top_k > 0, kth_Bx1, -jnp.inf)
  # Sorting is monotone, so the sorted top-k-filtered logits are the sorted logits filtered.
  sorted_BxV = jnp.where(sorted_BxV < kth_Bx1, -jnp.inf, sorted_BxV)
  probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
  # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it is < top_p.
  keep_BxV = (jnp.cumsum(probs_BxV, axis=-1) - probs_BxV) < jnp.where(top_p < 1.0, top_p, jnp.inf)
  cutoff_Bx1 = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits_BxV < jnp.maximum(kth_Bx1, cutoff_Bx1), -jnp.inf, logits_BxV)


def sample_logits(keys_B, logits_BxV, temperature, top_k, top_p):
  """One token per row, row b drawn with keys_B[b]. temperature 0 is greedy; top_k 0 and
  top_p 1.0 switch those filters off. The knobs are scalars (Python or traced). Returns int32[B]."""
  temperature = jnp.asarray(temperature, jnp.float32)
  top_k, top_p = jnp.asarray(top_k, jnp.int32), jnp.asarray(top_p, jnp.float32)

  def draw(logits_BxV):
    logits_BxV = logits_BxV.astype(jnp.float32) / temperature
    logits_BxV = jax.lax.cond((top_k > 0) | (top_p < 1.0), _filtered, lambda l, k, p: l,
                              logits_BxV, top_k, top_p)
    return jax.vmap(lambda key, l: jax.random.categorical(key, l[None], axis=-1)[0])(keys_B, logits_BxV)

  greedy = lambda logits_BxV: jnp.argmax(logits_BxV, axis=-1)
  return jax.lax.cond(temperature > 0, draw, greedy, logits_BxV).astype(jnp.int32)
