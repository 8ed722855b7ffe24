"""Losses. Each returns sums and weights, not means, so that gradient accumulation over
micro-batches and across devices averages over tokens exactly."""
import jax.numpy as jnp
import optax


def next_token_loss(logits_BxTxV, targets_BxT, mask_BxT=None):
  """Cross-entropy of each target, summed over positions where mask is 1.

  Returns (loss_sum, weight_sum, loss_BxT). Pretraining passes no mask (every target
  counts); SFT passes 1 on assistant tokens only.
  """
  loss_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV.astype(jnp.float32),
                                                             targets_BxT)
  weight_BxT = jnp.ones_like(loss_BxT) if mask_BxT is None else mask_BxT.astype(jnp.float32)
  return (loss_BxT * weight_BxT).sum(), weight_BxT.sum(), loss_BxT


def target_bytes(token_bytes_V, inputs_BxT, targets_BxT, bos_id: int, prefix_bytes: int):
  """UTF-8 bytes of text each target stands for: token_bytes_V of its token, less prefix_bytes
  (tokenizer.prefix_bytes: a space the tokenizer puts before each text) on each document's first
  token, the one after bos, so a document's bytes add up to its text's. numpy or jax arrays."""
  bytes_BxT = token_bytes_V[targets_BxT]
  if not prefix_bytes:
    return bytes_BxT
  return bytes_BxT - prefix_bytes * ((inputs_BxT == bos_id) & (bytes_BxT > 0))


def batch_logits(model, params, batch):
  """The model on batch['inputs']; packed batches also carry 'positions' and 'segment_ids'
  (llm/data/pipeline.segment_batch), which keep each packed sequence to itself."""
  if 'segment_ids' not in batch:
    return model.apply({'params': params}, batch['inputs'])
  return model.apply({'params': params}, batch['inputs'], batch['positions'], segment_ids_BxT=batch['segment_ids'])


def lm_loss(model, params, batch):
  """Task loss for pretraining and SFT: batch holds inputs, targets and optionally loss_mask
  (and segment ids, see batch_logits). Returns (loss_sum, weight, aux) as
  llm.train.make_train_step expects."""
  logits = batch_logits(model, params, batch)
  loss_sum, weight, _ = next_token_loss(logits, batch['targets'], batch.get('loss_mask'))
  return loss_sum, weight, {}
