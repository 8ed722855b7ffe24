"""Turning next-token logits into tokens: greedy, temperature, top-k, top-p (nucleus)."""
import jax
import jax.numpy as jnp


def sample_logits(rng, logits_BxV, temperature: float, top_k: int = 0, top_p: float = 1.0):
  """temperature 0 is greedy; top_k 0 and top_p 1.0 switch those filters off. Returns int32[B]."""
  if temperature == 0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  logits_BxV = logits_BxV.astype(jnp.float32) / temperature
  if top_k:
    kth_Bx1 = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)
  if top_p < 1.0:
    sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
    cum_BxV = jnp.cumsum(jax.nn.softmax(sorted_BxV, axis=-1), axis=-1)
    # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it is < top_p.
    keep_BxV = (cum_BxV - jax.nn.softmax(sorted_BxV, axis=-1)) < top_p
    cutoff_Bx1 = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
    logits_BxV = jnp.where(logits_BxV < cutoff_Bx1, -jnp.inf, logits_BxV)
  return jax.random.categorical(rng, logits_BxV, axis=-1).astype(jnp.int32)
