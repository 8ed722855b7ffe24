"""GRPO (DeepSeekMath / R1): group-relative advantages and the clipped token-level objective.

For each prompt G completions are sampled; a completion's advantage is its reward relative to
its group (no value network). The policy maximises the PPO-style clipped surrogate of the
probability ratio to the sampling policy, token by token, optionally minus beta x KL to a
frozen reference policy (the k3 estimator). Variants: epsilon_high > epsilon (DAPO's
clip-higher), mean-only advantages (Dr. GRPO), token-mean or sequence-mean aggregation.
"""
import jax
import jax.numpy as jnp
import numpy as np


def group_advantages(rewards_NxG: np.ndarray, normalize_std: bool = True, eps: float = 1e-6) -> np.ndarray:
  """(r - group mean), divided by the group std when normalize_std. A group whose rewards are all
  equal carries no signal: its advantages are exactly 0 (never NaN)."""
  rewards_NxG = np.asarray(rewards_NxG, np.float32)
  centered = rewards_NxG - rewards_NxG.mean(axis=1, keepdims=True)
  if not normalize_std:
    return centered
  std = rewards_NxG.std(axis=1, keepdims=True)
  return np.where(std > eps, centered / np.maximum(std, eps), 0.0).astype(np.float32)


def token_logprobs(logits_BxTxV, targets_BxT):
  """log p(target) per position, float32."""
  logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]


def objective(logp_BxT, old_logp_BxT, adv_B, mask_BxT, epsilon: float, epsilon_high: float,
              beta: float = 0.0, ref_logp_BxT=None, aggregation: str = 'token'):
  """Returns (loss_sum, weight, aux) for llm.train.make_train_step.

  Per token: -min(ratio * A, clip(ratio, 1 - eps, 1 + eps_high) * A) + beta * k3 KL, with
  ratio = exp(logp - old_logp). 'token' aggregation averages over every completion token of the
  batch (long answers weigh more); 'sequence' averages within each completion, then over them.
  """
  mask = mask_BxT.astype(jnp.float32)
  ratio = jnp.exp(logp_BxT - old_logp_BxT)
  adv_Bx1 = adv_B[:, None]
  clipped_ratio = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon_high)
  surrogate = jnp.minimum(ratio * adv_Bx1, clipped_ratio * adv_Bx1)
  per_token = -surrogate
  aux = {}
  if beta > 0:
    log_r = ref_logp_BxT - logp_BxT
    kl = jnp.exp(log_r) - log_r - 1.0  # k3: unbiased, always >= 0
    per_token = per_token + beta * kl
    aux['kl'] = ((kl * mask).sum(), mask.sum())
  was_clipped = (ratio * adv_Bx1 != surrogate) & (mask > 0)
  aux['clip_fraction'] = (was_clipped.sum().astype(jnp.float32), mask.sum())
  if aggregation == 'token':
    return (per_token * mask).sum(), mask.sum(), aux
  if aggregation == 'sequence':
    lengths_B = mask.sum(axis=1)
    per_seq = (per_token * mask).sum(axis=1) / jnp.maximum(lengths_B, 1.0)
    return per_seq.sum(), (lengths_B > 0).sum().astype(jnp.float32), aux
  raise ValueError(f"grpo.aggregation={aggregation!r}; choose 'token' or 'sequence'")


def make_loss_fn(grpo_cfg):
  """The task loss: batch holds inputs, targets, loss_mask, advantages, old_logp (and ref_logp)."""

  def loss_fn(model, params, batch):
    logits = model.apply({'params': params}, batch['inputs'])
    logp = token_logprobs(logits, batch['targets'])
    loss_sum, weight, aux = objective(
        logp, batch['old_logp'], batch['advantages'], batch['loss_mask'], grpo_cfg.epsilon,
        grpo_cfg.epsilon_high, grpo_cfg.beta, batch.get('ref_logp'), grpo_cfg.aggregation)
    mask = batch['loss_mask'].astype(jnp.float32)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    entropy = -(probs * jnp.log(jnp.maximum(probs, 1e-30))).sum(-1)
    aux['entropy'] = ((jax.lax.stop_gradient(entropy) * mask).sum(), mask.sum())
    return loss_sum, weight, aux

  return loss_fn
