"""Losses. Each returns sums and weights, not means, so that gradient accumulation over
micro-batches and across devices averages over tokens exactly."""
import jax.numpy as jnp
import numpy as np
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


def byte_fix(token_bytes_V, text: str, ids) -> int:
  """What a document's first token must add to the token_bytes_V of its tokens, ids = encode(text),
  for them to add up to the text's UTF-8 bytes: -1 where the tokenizer puts a space before the
  text (a dummy prefix, Llama 2's), 0 where the text starts with a space that a Metaspace or
  ByteLevel prefix takes for its own (the ids are those of the text without that space: only the
  text tells them apart), +2 for each literal U+2581 that a SentencePiece-style piece reads as a space,
  and 0 for our tokenizer, whose token bytes always add up."""
  return len(text.encode()) - int(np.asarray(token_bytes_V)[np.asarray(ids, np.int64)].sum())


def target_bytes(token_bytes_V, targets_BxT, byte_fix_BxT=None):
  """UTF-8 bytes of text each target stands for: token_bytes_V of its token, plus byte_fix_BxT
  where given (each document's byte_fix on its first token, 0 elsewhere), so that a document's
  bytes add up to its text's. numpy or jax arrays."""
  bytes_BxT = token_bytes_V[targets_BxT]
  return bytes_BxT if byte_fix_BxT is None else bytes_BxT + byte_fix_BxT


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
