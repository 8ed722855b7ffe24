"""GRPO (DeepSeekMath / R1): group-relative advantages and the clipped token-level objective.

For each prompt G completions are sampled; a completion's advantage is its reward relative to
its group (no value network). The policy maximises the PPO-style clipped surrogate of the
probability ratio to the sampling policy, token by token, optionally minus beta x KL to a
frozen reference policy (the k3 estimator). Variants: epsilon_high > epsilon (DAPO's
clip-higher), mean-only advantages, token-mean, sequence-mean or constant ('dr_grpo')
aggregation; Dr. GRPO is mean-only advantages with the constant aggregation.

Every log-probability (the sampling policy's, the current policy's, the reference's) is taken
under softmax(logits / temperature), the distribution the rollouts were drawn from, as TRL does.
"""
import jax
import jax.numpy as jnp
import numpy as np

AGGREGATIONS = ('token', 'sequence', 'dr_grpo')  # how objective() turns per-token losses into one

def uniform_groups(rewards_NxG: np.ndarray, eps: float = 1e-6) -> np.ndarray:
  """bool[N]: the groups that carry no signal, their rewards all equal (or within float noise: the
  float32 mean of twelve 1.1s is not 1.1, so their std is ~1e-7)."""
  rewards_NxG = np.asarray(rewards_NxG, np.float32)
  return (rewards_NxG == rewards_NxG[:, :1]).all(axis=1) | (rewards_NxG.std(axis=1) <= eps)


def group_advantages(rewards_NxG: np.ndarray, normalize_std: bool = True, eps: float = 1e-6) -> np.ndarray:
  """(r - group mean), divided by the group std when normalize_std. A uniform group's advantages
  are exactly 0 (never NaN)."""
  rewards_NxG = np.asarray(rewards_NxG, np.float32)
  centered = rewards_NxG - rewards_NxG.mean(axis=1, keepdims=True)
  if normalize_std:
    centered = centered / np.maximum(rewards_NxG.std(axis=1, keepdims=True), eps)
  return np.where(uniform_groups(rewards_NxG, eps)[:, None], 0.0, centered).astype(np.float32)


def token_logprobs(logits_BxTxV, targets_BxT, temperature: float):
  """log p(target) per position under softmax(logits / temperature), float32."""
  logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32) / temperature, axis=-1)
  return jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]


def policy_logprobs(model, params, batch, temperature: float):
  """(log p(target) per position under softmax(logits / temperature), the logits): the one
  computation of the sampling policy's, the current policy's and the reference's log-probs."""
  logits_BxTxV = model.apply({'params': params}, batch['inputs'])
  return token_logprobs(logits_BxTxV, batch['targets'], temperature), logits_BxTxV


def objective(logp_BxT, old_logp_BxT, adv_B, mask_BxT, epsilon: float, epsilon_high: float,
              beta: float = 0.0, ref_logp_BxT=None, aggregation: str = 'token', max_completion_len: int = 0):
  """Returns (loss_sum, weight, aux) for llm.train.make_train_step.

  Per token: -min(ratio * A, clip(ratio, 1 - eps, 1 + eps_high) * A) + beta * k3 KL, with
  ratio = exp(logp - old_logp). 'token' aggregation averages over every completion token of the
  batch (long answers weigh more); 'sequence' averages within each completion, then over them;
  'dr_grpo' sums over every completion token and divides by the constant B x max_completion_len
  (Dr. GRPO: no per-sequence length normalisation, so no bias towards long wrong answers).
  """
  mask = mask_BxT.astype(jnp.float32)
  # Log-ratios are zeroed outside the mask before exp(): at prompt or padding positions they can be
  # anything, and an exp() overflow there would turn the masked sum into inf x 0 = NaN.
  ratio = jnp.exp(jnp.where(mask > 0, logp_BxT - old_logp_BxT, 0.0))
  adv_Bx1 = adv_B[:, None]
  clipped_ratio = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon_high)
  surrogate = jnp.minimum(ratio * adv_Bx1, clipped_ratio * adv_Bx1)
  per_token = -surrogate
  aux = {}
  if beta > 0:
    log_r = jnp.where(mask > 0, ref_logp_BxT - logp_BxT, 0.0)
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
  if aggregation == 'dr_grpo':
    return (per_token * mask).sum(), jnp.float32(mask.shape[0] * max_completion_len), aux
  raise ValueError(f'grpo.aggregation={aggregation!r}; choose one of {AGGREGATIONS}')


def make_loss_fn(grpo_cfg):
  """The task loss: batch holds inputs, targets, loss_mask, advantages, old_logp (and ref_logp)."""

  def loss_fn(model, params, batch):
    logp, logits = policy_logprobs(model, params, batch, grpo_cfg.temperature)
    loss_sum, weight, aux = objective(
        logp, batch['old_logp'], batch['advantages'], batch['loss_mask'], grpo_cfg.epsilon,
        grpo_cfg.epsilon_high, grpo_cfg.beta, batch.get('ref_logp'), grpo_cfg.aggregation,
        grpo_cfg.max_new_tokens)
    mask = batch['loss_mask'].astype(jnp.float32)
    probs = jax.nn.softmax(logits.astype(jnp.float32) / grpo_cfg.temperature, axis=-1)  # the sampled distribution
    entropy = -(probs * jnp.log(jnp.maximum(probs, 1e-30))).sum(-1)
    aux['entropy'] = ((jax.lax.stop_gradient(entropy) * mask).sum(), mask.sum())
    return loss_sum, weight, aux

  return loss_fn
