"""Reward models: the Bradley-Terry loss on preference pairs, and scoring with a trained one.

A reward model is the Transformer with head='scalar' (llm/model.py): its score of a response
is the scalar read at the response's end-of-turn token (the last <|end|>), after the whole
conversation. Trained on pairs (chosen, rejected) with -log sigmoid(r_chosen - r_rejected -
margin), plus TRL's center_rewards_coefficient x mean((r_chosen + r_rejected)^2), which keeps
the scores near zero (BT alone is blind to a shared offset). Scoring is one batched, jitted
forward on the device (Scorer); several proxies combine into an ensemble (mean or worst case).
"""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from llm import inference, sharding


def scores_at(values_BxT, index_B):
  """The score of each row: values_BxT read at index_B (the end-of-turn position)."""
  return jnp.take_along_axis(values_BxT, index_B[:, None].astype(jnp.int32), axis=1)[:, 0]


def pair_scores(model, params, batch):
  """(r_chosen_B, r_rejected_B): both sides in one forward of 2B rows."""
  tokens_2BxT = jnp.concatenate([batch['chosen'], batch['rejected']])
  index_2B = jnp.concatenate([batch['chosen_end'], batch['rejected_end']])
  r_2B = scores_at(model.apply({'params': params}, tokens_2BxT), index_2B)
  return jnp.split(r_2B, 2)


def bradley_terry(r_chosen_B, r_rejected_B, margin_B=None, center_coefficient: float = 0.0):
  """Returns (loss_sum, weight, aux) for llm.train.make_train_step: per pair
  -log sigmoid(r_c - r_r - margin) (+ center_coefficient x (r_c + r_r)^2), with the pairwise
  accuracy (r_c > r_r; a tie counts as wrong) and the mean margin r_c - r_r as metrics."""
  diff_B = r_chosen_B - r_rejected_B
  per_pair = -jax.nn.log_sigmoid(diff_B - (0.0 if margin_B is None else margin_B))
  if center_coefficient:
    per_pair = per_pair + center_coefficient * jnp.square(r_chosen_B + r_rejected_B)
  n = jnp.float32(diff_B.shape[0])
  aux = {'accuracy': ((diff_B > 0).sum().astype(jnp.float32), n), 'margin': (diff_B.sum(), n)}
  return per_pair.sum(), n, aux


def make_loss_fn(rm_cfg):
  """The task loss: batch holds chosen, rejected ([B, T] token ids), chosen_end, rejected_end
  (the position each is scored at) and optionally margin (a per-pair required gap)."""

  def loss_fn(model, params, batch):
    r_chosen, r_rejected = pair_scores(model, params, batch)
    return bradley_terry(r_chosen, r_rejected, batch.get('margin') if rm_cfg.use_margin else None,
                         rm_cfg.center_rewards_coefficient)

  return loss_fn


def end_index(tokens: list[int], end_id: int, assistant_id: int) -> int:
  """Where a rendered conversation is scored: the <|end|> that closes its last assistant turn,
  else its last token (a response cut short). Never an earlier turn's <|end|>: a response that
  does not end would otherwise be scored on the prompt alone."""
  for i in range(len(tokens) - 1, -1, -1):
    if tokens[i] == end_id:
      return i
    if tokens[i] == assistant_id:  # the last turn opened and never closed
      break
  return len(tokens) - 1


def pad_rows(sequences: list[list[int]], length: int, pad_id: int, end_id: int,
             assistant_id: int) -> tuple[np.ndarray, np.ndarray]:
  """(tokens_NxT, end_N): each sequence cut to `length` tokens (a cut one is scored at its last
  token) and padded; end_N is each row's scoring position (end_index)."""
  tokens = np.full((len(sequences), length), pad_id, np.int32)
  end = np.zeros(len(sequences), np.int32)
  for i, seq in enumerate(sequences):
    seq = seq[:length]
    tokens[i, :len(seq)] = seq
    end[i] = end_index(seq, end_id, assistant_id)
  return tokens, end


class Scorer:
  """A reward model as a batched scoring function on the device: score(sequences) -> rewards.

  Rows go through in fixed [batch, seq_len] blocks (the last one padded), so one compiled
  forward serves every call."""

  def __init__(self, model_cfg, params, tokenizer, mesh, rules, seq_len: int, batch: int):
    from llm import model as model_lib
    if model_cfg.head != 'scalar':
      raise ValueError(f"a reward model has model.head='scalar', this one {model_cfg.head!r}; give a "
                       'task=reward_model run')
    self.params, self.tokenizer, self.mesh, self.rules = params, tokenizer, mesh, rules
    self.seq_len, self.batch = seq_len, batch
    self.end_id, self.assistant_id = tokenizer.special_id('<|end|>'), tokenizer.special_id('<|assistant|>')
    model = model_lib.Transformer(model_cfg)
    self._forward = jax.jit(lambda p, b: scores_at(model.apply({'params': p}, b['tokens']), b['end']),
                            out_shardings=sharding.replicated(mesh))

  @classmethod
  def load(cls, workdir: Path | str, seq_len: int = 0, batch: int = 32, mesh=None,
           policy_tokenizer=None) -> 'Scorer':
    """A finished task=reward_model run; seq_len 0 = the run's own train.seq_len. policy_tokenizer:
    the tokenizer of the ids it will score (None: its own), which must be the run's."""
    run = inference.load(workdir, mesh=mesh, reward_model=True)
    # Another tokenizer's ids stand for other text, even at the same vocabulary size: the scores
    # would be of garbage (or NaN, an id past a smaller embedding table).
    if policy_tokenizer is not None and policy_tokenizer.fingerprint != run.tokenizer.fingerprint:
      raise ValueError(f'reward model {workdir} has another tokenizer (fingerprint {run.tokenizer.fingerprint}) '
                       f'than the policy, {policy_tokenizer.path} ({policy_tokenizer.fingerprint}); train the '
                       "reward model with init_from a run that has the policy's tokenizer")
    seq_len = seq_len or run.config.train.seq_len
    # Past a learned position table the positions read NaN. A RoPE model has no table, but
    # max_seq_len is the context it declares all the same (train.py trains no longer, the Engine
    # caches no more): past it its scores are of positions it never saw.
    if seq_len > run.model_cfg.max_seq_len:
      raise ValueError(f'reward model {workdir} has model.max_seq_len={run.model_cfg.max_seq_len}, shorter than '
                       f"the seq_len={seq_len} it would score at (the policy's train.seq_len); train a reward model "
                       f'with model.max_seq_len >= {seq_len} (or, in rlhf, set train.seq_len <= '
                       f'{run.model_cfg.max_seq_len})')
    return cls(run.model_cfg, run.params, run.tokenizer, run.mesh, run.rules, seq_len, batch)

  def score(self, sequences: list[list[int]]) -> np.ndarray:
    """float32 rewards of rendered conversations (token ids), one per sequence."""
    tokens, end = pad_rows(sequences, self.seq_len, self.tokenizer.pad_id, self.end_id, self.assistant_id)
    pad = -len(tokens) % self.batch
    tokens = np.concatenate([tokens, np.full((pad, self.seq_len), self.tokenizer.pad_id, np.int32)])
    end = np.concatenate([end, np.zeros(pad, np.int32)])
    out = []
    with sharding.mesh_context(self.mesh, self.rules):
      for i in range(0, len(tokens), self.batch):
        block = sharding.global_batch({'tokens': tokens[i:i + self.batch], 'end': end[i:i + self.batch]}, self.mesh)
        out.append(np.asarray(self._forward(self.params, block)))
    return np.concatenate(out)[:len(sequences)] if out else np.zeros(0, np.float32)


REDUCTIONS = ('mean', 'min')  # how an Ensemble combines its members' scores


class Ensemble:
  """Several proxies as one (Coste et al., arXiv 2310.02743): 'mean' of their scores, or 'min',
  the worst case, which an exploit must fool every member to raise."""

  def __init__(self, scorers: list, reduce: str = 'mean'):
    if reduce not in REDUCTIONS:
      raise ValueError(f"ensemble reduce={reduce!r}; choose 'mean' or 'min'")
    if not scorers:
      raise ValueError('an ensemble needs at least one reward model')
    self.scorers, self.reduce = scorers, reduce

  def score(self, sequences: list[list[int]]) -> np.ndarray:
    per_model = np.stack([s.score(sequences) for s in self.scorers])
    return per_model.mean(0) if self.reduce == 'mean' else per_model.min(0)


def load_proxy(workdirs: list[str], reduce: str = 'mean', seq_len: int = 0, batch: int = 32, mesh=None,
               policy_tokenizer=None):
  """One reward model run, or an ensemble of several (Scorer.load's arguments)."""
  scorers = [Scorer.load(w, seq_len, batch, mesh, policy_tokenizer) for w in workdirs]
  return scorers[0] if len(scorers) == 1 else Ensemble(scorers, reduce)
