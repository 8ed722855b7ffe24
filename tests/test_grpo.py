"""GRPO: advantages, the clipped objective, the KL term, learning on a bandit, and the task
in the training loop."""
import contextlib
import json
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import ROOT, kill_then_resume, losses_by_step, tiny_config
from tiny_config import tiny_grpo_config
from llm.rl import grpo


def test_group_advantages_on_hand_made_groups():
  rewards = np.array([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [3.0, 1.0, 2.0, 2.0]])
  adv = grpo.group_advantages(rewards)
  np.testing.assert_allclose(adv[0], [1, -1, -1, 1], atol=1e-6)
  np.testing.assert_array_equal(adv[1], 0.0)  # all equal: no signal, and no NaN
  np.testing.assert_allclose(adv[2], np.array([1, -1, 0, 0]) / np.std([3, 1, 2, 2]), atol=1e-6)
  mean_only = grpo.group_advantages(rewards, normalize_std=False)  # Dr. GRPO
  np.testing.assert_allclose(mean_only[2], [1, -1, 0, 0], atol=1e-6)
  assert np.isfinite(grpo.group_advantages(np.zeros((2, 3)))).all()


def test_a_group_of_equal_rewards_has_no_signal_however_its_float_mean_rounds():
  """Twelve rewards of 1.1: their float32 mean is not 1.1, so their std is ~1e-7, not 0. The
  metric counted such a group as having signal while its advantages were 0 (and, without the std
  division, ~1e-7 each)."""
  rewards = np.array([[1.1] * 12, [1.1] * 11 + [0.1]], np.float32)
  assert rewards[0].std() > 0  # the premise
  np.testing.assert_array_equal(grpo.uniform_groups(rewards), [True, False])
  for normalize_std in (True, False):
    adv = grpo.group_advantages(rewards, normalize_std)
    np.testing.assert_array_equal(adv[0], 0.0)
    assert (adv[1] != 0).all()


def test_rollouts_sample_no_more_than_the_training_row_holds():
  """A row is seq_len + 1 tokens, prompt included: a token sampled past it would be rewarded but
  get no loss (and no KL)."""
  from llm.tasks import grpo as grpo_task
  config = tiny_grpo_config()
  config.train.seq_len, config.grpo.max_new_tokens = 10, 32

  class Engine:
    cache_len = 64

  max_len = grpo_task.rollout_len(config)
  assert grpo_task.new_token_budgets(config, Engine(), [[1] * 4, [1] * 9], max_len) == [7, 2]
  Engine.cache_len = 8  # and within the cache
  assert grpo_task.new_token_budgets(config, Engine(), [[1] * 4], max_len) == [4]


def test_rollouts_without_room_for_a_completion_are_refused_naming_the_prompt_and_seq_len():
  """Rather than an engine error about a budget of -1 tokens 'exceeding the cache'."""
  from llm.tasks import grpo as grpo_task
  with pytest.raises(ValueError, match=r'grpo\.max_new_tokens=0: .* 1 or more'):
    grpo_task.check_config(tiny_grpo_config(**{'grpo.max_new_tokens': 0}))
  config = tiny_grpo_config(**{'train.seq_len': 10})

  class Engine:
    cache_len = 64

  with pytest.raises(ValueError, match=r'a prompt of 11 tokens leaves no room .* within 11 tokens '
                                       r'\(train\.seq_len=10, model\.max_seq_len=\d+\); raise train\.seq_len'):
    grpo_task.new_token_budgets(config, Engine(), [[1] * 4, [1] * 11], grpo_task.rollout_len(config))
  # Where the rows already span the model's context, a longer train.seq_len is no way out.
  full = tiny_grpo_config(**{'train.seq_len': 64, 'model.max_seq_len': 64})
  with pytest.raises(ValueError, match=r"within 64 tokens .*; it fills the model's whole context") as refused:
    grpo_task.new_token_budgets(full, Engine(), [[1] * 64], grpo_task.rollout_len(full))
  assert 'raise train.seq_len' not in str(refused.value)


class _EotTok:
  """A tokenizer with an end-of-turn id of its own besides eos, as an imported Llama 3's <|eot_id|>:
  eos 1, stop ids [1, 7], <|end|> 5, the tool delimiters 20-23; digit d is id 10 + d."""
  bos_id, eos_id, pad_id, stop_ids = 2, 1, 0, [1, 7]
  _SPECIAL = {'<|end|>': 5, '<|tool_call|>': 20, '<|/tool_call|>': 21, '<|tool_result|>': 22,
              '<|/tool_result|>': 23}
  special_id = staticmethod(lambda name: _EotTok._SPECIAL.get(name, 3))
  encode = staticmethod(lambda text: [10 + int(ch) for ch in text if ch.isdigit()])
  decode = staticmethod(lambda ids: ''.join(str(i - 10) for i in ids if 10 <= i < 20))


class _ScriptedEngine:
  """Writes every row the same (id, forced) pairs, up to the first sampled one of its stop ids."""
  cache_len, params = 256, None

  def __init__(self, script):
    self.script = script

  def generate(self, prompts, max_new, temperature, top_k, top_p, seed, stop_ids):
    from llm import inference
    ends = [k for k, (t, forced) in enumerate(self.script) if not forced and t in stop_ids]
    script = self.script[:ends[0] + 1] if ends else self.script
    return [inference.Completion([t for t, _ in script], [f for _, f in script], 'stop' if ends else 'length',
                                 tool_calls=0) for _ in prompts]


class _FourTask:
  """'What is 2 + 2?' over and over."""
  name = 'four'

  def train_problems(self, seed):
    from llm.rl import tasks as rl_tasks
    while True:
      yield rl_tasks.Problem([{'role': 'user', 'content': 'What is 2 + 2?'}], '4', {})

  def verify(self, completion_text, problem):
    from llm.rl import tasks as rl_tasks
    return rl_tasks.answers_match(completion_text, problem.answer)


def _rollout_metrics(monkeypatch, script, **overrides) -> dict:
  """The metrics of one GRPO rollout of _ScriptedEngine(script) on _FourTask, tokenizer _EotTok."""
  from llm.tasks import grpo as grpo_task
  monkeypatch.setattr(grpo_task, 'rollout_batch', lambda *args, **kwargs: {})  # its log-probs need a model
  state = grpo_task.Rollouts(task=_FourTask(), tokenizer=_EotTok(), engine=_ScriptedEngine(script))
  return grpo_task._rollout(tiny_grpo_config(**overrides), None, None, state, start=0, step=1)[1]


def test_rollouts_end_at_every_id_a_turn_ends_at_and_count_the_turn_finished(monkeypatch):
  """The held-out eval stops at every id in chat_template.turn_stop_ids, an imported model's own
  end of turn (7 here) too. Rollouts stopped only at <|end|> and eos: they wrote on past 7 ('4',
  7, '1' read '41'), and a turn that did end at 7 was not finished and lost its format reward."""
  four, one, eot, end = 14, 11, 7, 5
  metrics = _rollout_metrics(monkeypatch, [(four, False), (eot, False), (one, False), (end, False)])
  assert metrics['response_tokens'] == 2  # '4' and 7
  assert metrics['reward_correctness'] == 1.0 and metrics['reward_format'] == 1.0


def test_length_counts_only_the_tokens_the_policy_sampled(monkeypatch):
  """The length penalty and response_tokens count what the loss trains: a tool result the engine
  force-fed is not the policy's length."""
  call, close, result, close_result, two, four, end = 20, 21, 22, 23, 12, 14, 5
  script = [(call, False), (two, False), (close, False),  # 3 sampled
            (result, True), (four, True), (close_result, True),  # 3 force-fed
            (four, False), (end, False)]  # 2 sampled
  metrics = _rollout_metrics(monkeypatch, script, **{'grpo.length_target': 0, 'grpo.length_scale': 1.0})
  assert metrics['response_tokens'] == 5 and metrics['reward_length_penalty'] == -5.0
  assert metrics['reward_correctness'] == 1.0  # the '4' after the result is the model's own


def _stub_logp_rollouts(**fields):
  """Rollouts whose log-prob function is a stand-in (zeros, no model) and whose reference is given."""
  from llm.tasks import grpo as grpo_task
  return grpo_task.Rollouts(logp_fn=lambda params, batch: np.zeros(batch['targets'].shape, np.float32),
                            ref_params='reference', **fields)


_NO_MESH = types.SimpleNamespace(context=contextlib.nullcontext)


def test_rollout_batch_rows_mask_and_advantages_by_hand():
  """One group of four, rewards 3, 1, 2, 2 (advantages +-1 / std = +-sqrt(2), 0, 0), seq_len 8 (rows
  of 9 tokens), prompt [2, 9, 9]. The loss is on what the policy sampled, its stop token included,
  never on the prompt, a force-fed tool result, padding or what the row cut off; targets are the
  row shifted by one."""
  from llm import inference
  from llm.tasks import grpo as grpo_task
  config = tiny_grpo_config(**{'train.seq_len': 8})
  prompt, call, close, result, close_result, end = [2, 9, 9], 20, 21, 22, 23, 5
  completions = [
      inference.Completion([14, end], [False, False], 'stop', tool_calls=0),
      inference.Completion([call, 12, close, result, 14, close_result, 14, end],  # cut after close_result
                           [False, False, False, True, True, True, False, False], 'stop', tool_calls=1),
      inference.Completion([11, end], [False, False], 'stop', tool_calls=0),
      inference.Completion([13], [False], 'length', tool_calls=0)]
  rows = [(0, prompt)] * 4
  batch = grpo_task.rollout_batch(config, _NO_MESH, None, _stub_logp_rollouts(tokenizer=_EotTok()), rows,
                                  completions, np.array([3.0, 1.0, 2.0, 2.0], np.float32))
  np.testing.assert_allclose(batch['advantages'], [2 ** 0.5, -2 ** 0.5, 0.0, 0.0], rtol=1e-5)
  whole = [[2, 9, 9, 14, end, 0, 0, 0, 0],
           [2, 9, 9, call, 12, close, result, 14, close_result],
           [2, 9, 9, 11, end, 0, 0, 0, 0],
           [2, 9, 9, 13, 0, 0, 0, 0, 0]]
  np.testing.assert_array_equal(batch['inputs'], [r[:-1] for r in whole])
  np.testing.assert_array_equal(batch['targets'], [r[1:] for r in whole])
  np.testing.assert_array_equal(batch['loss_mask'], [[0, 0, 1, 1, 0, 0, 0, 0],   # 14, end
                                                     [0, 0, 1, 1, 1, 0, 0, 0],   # call, 12, close
                                                     [0, 0, 1, 1, 0, 0, 0, 0],   # 11, end
                                                     [0, 0, 1, 0, 0, 0, 0, 0]])  # 13
  assert batch['old_logp'].shape == (4, 8)


def _grad_wrt_logp(logp, old_logp, adv, eps=0.2, eps_high=0.2, **kw):
  mask = jnp.ones_like(logp)
  f = lambda lp: grpo.objective(lp, old_logp, adv, mask, eps, eps_high, **kw)[0]
  return jax.grad(f)(logp)


def test_clipped_objective_gradient_is_zero_outside_the_trust_region_and_signed_inside():
  old = jnp.zeros((4, 1))
  # ratio = exp(logp - old): 1.5 and 0.5 are outside [0.8, 1.2]; 1.1 and 0.9 inside.
  logp = jnp.log(jnp.array([[1.5], [0.5], [1.1], [0.9]]))
  pos, neg = jnp.ones(4), -jnp.ones(4)
  g_pos, g_neg = _grad_wrt_logp(logp, old, pos), _grad_wrt_logp(logp, old, neg)
  # A > 0: past 1 + eps no more push up (zero grad); inside, the loss falls as logp rises.
  assert g_pos[0, 0] == 0 and g_pos[2, 0] < 0 and g_pos[3, 0] < 0
  # ratio 0.5 with A > 0 is not clipped by min(): the gradient still pushes it up.
  assert g_pos[1, 0] < 0
  # A < 0: below 1 - eps no more push down; inside, the loss rises with logp.
  assert g_neg[1, 0] == 0 and g_neg[2, 0] > 0 and g_neg[3, 0] > 0
  # clip-higher: with eps_high = 0.6 the ratio 1.5 is inside again.
  assert _grad_wrt_logp(logp, old, pos, eps_high=0.6)[0, 0] < 0


def test_kl_is_zero_when_the_policy_is_the_reference_and_positive_otherwise():
  logp = jnp.log(jnp.array([[0.2, 0.5, 0.9]]))
  mask = jnp.ones_like(logp)
  kw = dict(epsilon=0.2, epsilon_high=0.2, beta=0.1)
  _, _, same = grpo.objective(logp, logp, jnp.zeros(1), mask, ref_logp_BxT=logp, **kw)
  _, _, other = grpo.objective(logp, logp, jnp.zeros(1), mask, ref_logp_BxT=logp + 0.3, **kw)
  assert float(same['kl'][0]) == 0.0
  assert float(other['kl'][0]) > 0.0


def test_kl_enters_the_loss_with_its_sign_and_size():
  """Advantage 0: the loss is beta x k3, k3 = exp(ref - logp) - (ref - logp) - 1 = e^0.3 - 1.3 per
  token, and raising logp towards a higher reference lowers it."""
  logp = jnp.log(jnp.array([[0.2, 0.5, 0.9]]))
  mask = jnp.ones_like(logp)
  f = lambda lp: grpo.objective(lp, logp, jnp.zeros(1), mask, 0.2, 0.2, beta=0.1, ref_logp_BxT=logp + 0.3)
  loss_sum, weight, _ = f(logp)
  np.testing.assert_allclose(loss_sum / weight, 0.1 * (np.exp(0.3) - 1.3), rtol=1e-5)
  grad = jax.grad(lambda lp: f(lp)[0])(logp)
  np.testing.assert_allclose(grad, 0.1 * (1 - np.exp(0.3)) * np.ones((1, 3)), rtol=1e-5)


def test_aggregations_on_uneven_lengths():
  """Ratio 1 (logp = old), so a token's loss is -A. Completions of 4 and 1 tokens with A = 1, -1:
  token mean (-4 + 1) / 5, sequence mean (-1 + 1) / 2, Dr. GRPO (-4 + 1) / (2 x 6)."""
  logp = jnp.zeros((2, 6))
  mask = jnp.array([[0, 1, 1, 1, 1, 0], [0, 0, 1, 0, 0, 0]], jnp.float32)
  adv = jnp.array([1.0, -1.0])
  means = {}
  for aggregation in ('token', 'sequence', 'dr_grpo'):
    loss_sum, weight, _ = grpo.objective(logp, logp, adv, mask, 0.2, 0.2, aggregation=aggregation,
                                         max_completion_len=6)
    means[aggregation] = float(loss_sum / weight)
  np.testing.assert_allclose([means['token'], means['sequence'], means['dr_grpo']], [-3 / 5, 0.0, -3 / 12],
                             atol=1e-7)


def test_clip_fraction_counts_the_tokens_the_clip_bound():
  """Ratios 1.5, 0.5, 1.1 (eps 0.2) under A = +1 and A = -1: the clip binds at 1.5 for A > 0 and at
  0.5 for A < 0, 2 of the 6 tokens; a masked position whose ratio would be clipped does not count."""
  old = jnp.zeros((2, 4))
  logp = jnp.log(jnp.array([[1.5, 0.5, 1.1, 3.0], [1.5, 0.5, 1.1, 3.0]]))
  mask = jnp.array([[1, 1, 1, 0], [1, 1, 1, 0]])
  _, _, aux = grpo.objective(logp, old, jnp.array([1.0, -1.0]), mask, 0.2, 0.2)
  assert (float(aux['clip_fraction'][0]), float(aux['clip_fraction'][1])) == (2.0, 6.0)
  _, _, wider = grpo.objective(logp, old, jnp.array([1.0, -1.0]), mask, 0.2, 0.6)  # 1.5 within 1 + 0.6
  assert float(wider['clip_fraction'][0]) == 1.0


def test_entropy_is_that_of_the_sampling_distribution_on_the_loss_tokens():
  """Over V = 4 ids: uniform logits have entropy log 4, a one-hot-ish row ~0, and logits 2 log p at
  temperature 2 sample p = (1/2, 1/4, 1/8, 1/8), entropy 1.75 log 2. Masked positions do not count."""
  T = 2.0
  loss_fn = grpo.make_loss_fn(_grpo_cfg(temperature=T))

  def entropy(logits_1xTxV, mask):
    batch = {'inputs': jnp.zeros(mask.shape, jnp.int32), 'targets': jnp.zeros(mask.shape, jnp.int32),
             'loss_mask': mask, 'advantages': jnp.zeros(1), 'old_logp': jnp.zeros(mask.shape)}
    total, count = loss_fn(_FixedLogits(), logits_1xTxV, batch)[2]['entropy']
    return float(total), float(count)

  peaked = jnp.array([30.0, 0.0, 0.0, 0.0])
  two_tokens = jnp.array([[1, 1, 0]])
  assert entropy(jnp.zeros((1, 3, 4)).at[0, 2].set(peaked), two_tokens) == (pytest.approx(2 * np.log(4)), 2.0)
  assert entropy(jnp.tile(peaked, (1, 3, 1)), two_tokens)[0] == pytest.approx(0.0, abs=1e-4)
  known = T * jnp.log(jnp.array([0.5, 0.25, 0.125, 0.125]))
  assert entropy(jnp.tile(known, (1, 3, 1)), jnp.array([[0, 1, 0]]))[0] == pytest.approx(1.75 * np.log(2))


def test_masked_positions_cannot_turn_the_loss_into_nan():
  """At a prompt position the log-ratio (and the reference's) may be huge: exp() would overflow to
  inf, and inf x mask 0 is NaN. The loss must be that of the unmasked tokens alone."""
  logp = jnp.zeros((1, 3))
  junk = jnp.array([[-200.0, 0.0, 0.0]])
  mask = jnp.array([[0.0, 1.0, 1.0]])
  kw = dict(epsilon=0.2, epsilon_high=0.2, beta=0.1)
  f = lambda lp, old, ref: grpo.objective(lp, old, -jnp.ones(1), mask, ref_logp_BxT=ref, **kw)[0]
  assert float(f(logp, junk, -junk)) == float(f(logp, logp, logp)) == 2.0
  assert np.isfinite(jax.grad(f)(logp, junk, -junk)).all()


class _FixedLogits:
  """A 'model' whose logits are its parameters."""

  def apply(self, variables, inputs):
    del inputs
    return variables['params']


def _grpo_cfg(**kw):
  from configs.grpo_arith import grpo_defaults
  g = grpo_defaults()
  g.update(kw)
  return g


def test_log_probs_are_those_of_the_sampling_temperature():
  """Rollouts sample softmax(logits / T): the objective's log-probs must be of that distribution,
  so on the first pass over a batch (old_logp from the same parameters) the ratio is exactly 1
  and the loss is minus the token mean of the advantages."""
  T = 0.5
  logits = jax.random.normal(jax.random.key(0), (2, 3, 7)) * 3
  batch = {'inputs': jnp.zeros((2, 3), jnp.int32), 'targets': jnp.array([[1, 4, 6], [0, 2, 2]]),
           'loss_mask': jnp.array([[0, 1, 1], [1, 1, 1]]), 'advantages': jnp.array([1.5, -0.5])}
  z = np.asarray(logits, np.float64) / T
  by_hand = z - np.log(np.exp(z).sum(-1, keepdims=True))
  by_hand = np.take_along_axis(by_hand, np.asarray(batch['targets'])[..., None], -1)[..., 0]
  old_logp, _ = grpo.policy_logprobs(_FixedLogits(), logits, batch, T)  # what the rollouts store
  np.testing.assert_allclose(old_logp, by_hand, rtol=1e-5)
  loss_fn = grpo.make_loss_fn(_grpo_cfg(temperature=T))
  loss_sum, weight, aux = loss_fn(_FixedLogits(), logits, {**batch, 'old_logp': old_logp})
  np.testing.assert_allclose(loss_sum / weight, -(2 * 1.5 + 3 * -0.5) / 5, rtol=1e-6)
  assert float(aux['clip_fraction'][0]) == 0.0


def test_mu_passes_train_on_one_batch_of_rollouts(monkeypatch):
  """mu = 2: steps 1 and 2 get the batch rolled out at step 1 (its old log-probs included), step 3
  a new one from the next prompts."""
  from llm.tasks import grpo as grpo_task
  rollouts = []

  def fake_rollout(config, setup, params, state, start, step):
    rollouts.append((start, step))
    return {'old_logp': np.full((2, 3), float(step))}, {}

  monkeypatch.setattr(grpo_task, '_rollout', fake_rollout)
  config = tiny_config()
  config.grpo = _grpo_cfg(mu=2)
  next_batch = grpo_task.make_next_batch(config, grpo_task.Rollouts())
  data = types.SimpleNamespace(train_iter=iter(range(0, 100, 8)))
  train_state = types.SimpleNamespace(params=None)
  batches = [next_batch(data, None, train_state, step)[0] for step in (1, 2, 3, 4)]
  assert rollouts == [(0, 1), (8, 3)]
  assert batches[1] is batches[0] and batches[3] is batches[2]
  assert float(batches[1]['old_logp'][0, 0]) == 1.0 and float(batches[3]['old_logp'][0, 0]) == 3.0


@pytest.mark.parametrize('override, message', [
    ({'grpo.top_k': 50}, 'top_k=50'), ({'grpo.top_p': 0.9}, 'top_p=0.9'),
    ({'grpo.temperature': 0.0}, 'temperature=0.0')])
def test_grpo_refuses_samplers_whose_log_probs_it_does_not_compute(override, message):
  from llm.tasks import grpo as grpo_task
  with pytest.raises(ValueError, match=message):
    grpo_task.check_config(tiny_grpo_config(**override))


@pytest.mark.parametrize('override, message', [
    ({'grpo.group_size': 1, 'train.batch_size': 2}, r'grpo\.group_size=1: .* 2 or more'),
    ({'grpo.mu': 0}, r'grpo\.mu=0: .* 1 or more')])
def test_grpo_refuses_groups_of_one_and_no_steps_per_rollout(override, message):
  """A group of one has an advantage of 0 whatever its reward (the run would train nothing), and
  mu=0 would take no step on its rollouts."""
  from llm.tasks import grpo as grpo_task
  with pytest.raises(ValueError, match=message):
    grpo_task.check_config(tiny_grpo_config(**override))


@pytest.mark.parametrize('override, message', [
    ({'grpo.aggregation': 'tokens'}, r"grpo\.aggregation='tokens' is unknown; choose one of \('token', 'sequence', "
                                     r"'dr_grpo'\)"),
    ({'grpo.rewards.corectness': 1.0}, r"unknown components \['corectness'\]; known: \['correctness', 'format', "
                                       r"'length_penalty'\]"),
    ({'grpo.length_scale': 0.0}, r'grpo\.length_scale=0\.0: must be > 0')])
def test_grpo_refuses_unknown_losses_and_rewards_before_its_first_eval(override, message):
  """At the config check, not at the first step: after the step-0 held-out eval has been paid for."""
  from llm.tasks import grpo as grpo_task
  with pytest.raises(ValueError, match=message):
    grpo_task.check_config(tiny_grpo_config(**override))


def test_grpo_refuses_a_clip_narrower_above_than_below():
  """epsilon_high is DAPO's clip-higher: below epsilon it would be a variant nobody means."""
  from llm.tasks import grpo as grpo_task
  with pytest.raises(ValueError, match=r'grpo\.epsilon_high=0\.1 < grpo\.epsilon=0\.2: the clip above 1 must '):
    grpo_task.check_config(tiny_grpo_config(**{'grpo.epsilon_high': 0.1}))
  grpo_task.check_config(tiny_grpo_config(**{'grpo.epsilon_high': 0.2}))  # PPO's symmetric clip


@pytest.mark.parametrize('field', ['eval_problems', 'eval_samples'])
def test_grpo_refuses_a_held_out_eval_of_nothing(field):
  """No problems would log a held-out pass@1 of NaN; no samples, a pass@0."""
  from llm.tasks import grpo as grpo_task
  with pytest.raises(ValueError, match=rf'grpo\.{field}=0: .* 1 or more'):
    grpo_task.check_config(tiny_grpo_config(**{f'grpo.{field}': 0}))


def test_grpo_refuses_several_processes(monkeypatch):
  """Every process would roll out the whole batch and feed it as its own rows."""
  from llm.tasks import grpo as grpo_task
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  with pytest.raises(ValueError, match='one process'):
    grpo_task.check_config(tiny_grpo_config())


def test_grpo_raises_the_reward_on_a_bandit():
  """A one-layer policy over 16 tokens must learn to emit the rewarded token 11."""
  V, G, target = 16, 16, 11
  w = jnp.zeros((V,))
  opt = optax.adam(0.1)
  opt_state = opt.init(w)

  def loss(w, tokens, old_logp, adv):
    logp = jax.nn.log_softmax(w)[tokens][:, None]
    loss_sum, weight, _ = grpo.objective(logp, old_logp, adv, jnp.ones_like(logp), 0.2, 0.28)
    return loss_sum / weight

  rewards = []
  for step in range(40):
    tokens = jax.random.categorical(jax.random.key(step), w, shape=(G,))
    reward = (tokens == target).astype(np.float32)
    rewards.append(float(reward.mean()))
    adv = jnp.asarray(grpo.group_advantages(np.asarray(reward)[None])[0])
    old_logp = jax.nn.log_softmax(w)[tokens][:, None]
    grads = jax.grad(loss)(w, tokens, old_logp, adv)
    updates, opt_state = opt.update(grads, opt_state)
    w = optax.apply_updates(w, updates)
  assert np.mean(rewards[:5]) < 0.2
  assert np.mean(rewards[-5:]) > 0.8


def _grpo_cmd(workdir, pretrained, *extra):
  return [sys.executable, '-m', 'llm.main', f'--config={ROOT}/tests/tiny_config.py:grpo', f'--workdir={workdir}',
          f'--config.init_from={pretrained}', *extra]


def test_grpo_runs_in_the_training_loop_and_resumes_after_a_kill(tmp_path, pretrained, subprocess_env):
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  hot = '--config.grpo.temperature=0.7'  # rollouts, old and current log-probs all at this temperature
  subprocess.run(_grpo_cmd(straight, pretrained, hot), env=subprocess_env, check=True, capture_output=True)
  kill_then_resume(_grpo_cmd(resumed, pretrained, hot), subprocess_env, resumed, kill_after_checkpoint=2, total=8)
  assert losses_by_step(straight) == losses_by_step(resumed)
  assert sorted(losses_by_step(resumed)) == list(range(1, 9))
  rows = [json.loads(l) for l in (straight / 'metrics.jsonl').read_text().splitlines()]
  step_row = next(r for r in rows if 'reward_mean' in r)
  for key in ('reward_mean', 'reward_std', 'reward_correctness', 'reward_format', 'zero_variance_groups',
              'clip_fraction', 'entropy', 'response_tokens', 'tool_call_rate'):
    assert key in step_row, key
  # mu = 1: every step is the first pass over its rollouts, where the ratio is 1 and nothing is clipped.
  assert [r['clip_fraction'] for r in rows if 'clip_fraction' in r] == [0.0] * 8
  summary = json.loads((straight / 'summary.json').read_text())
  assert {'heldout_pass_at_1', 'heldout_pass_at_2'} <= set(summary)
  assert (straight / 'grpo_curves.png').stat().st_size > 1000
  # The same command on the finished run: no step runs, and the summary keeps the held-out
  # results, which come from the eval points (not from the final evaluate, a plot here).
  subprocess.run(_grpo_cmd(straight, pretrained, hot), env=subprocess_env, check=True, capture_output=True)
  assert json.loads((straight / 'summary.json').read_text()) == summary


def test_grpo_checks_that_the_batch_is_prompts_times_group(tmp_path, pretrained, subprocess_env):
  result = subprocess.run(_grpo_cmd(tmp_path, pretrained, '--config.train.batch_size=6'), env=subprocess_env,
                          capture_output=True, text=True)
  assert result.returncode != 0 and 'prompts_per_step' in result.stderr.splitlines()[-1]



def test_resuming_on_another_rl_task_or_its_options_is_refused(tmp_path):
  """The checkpoint's data position is an index into the task's problems: another task, or other
  knobs (other problems, another held-out split), would read on at a place it never meant."""
  from tiny_config import tiny_grpo_config
  from llm import train
  (tmp_path / 'config.json').write_text(tiny_grpo_config().to_json_best_effort())
  closed = []
  ckpt = types.SimpleNamespace(close=lambda: closed.append(True))
  with pytest.raises(ValueError, match=r"resumes from step 2 with other data settings \(grpo\.task_options\.digits="
                                       r"\[1\] -> \[2\]\)"):
    train._check_same_data(ckpt, 2, tiny_grpo_config(**{'grpo.task_options.digits': (2,)}), tmp_path)
  other_task = tiny_grpo_config()
  other_task.grpo.task = 'gsm8k'
  with pytest.raises(ValueError, match=r"with other data settings \(grpo\.task='arithmetic' -> 'gsm8k'\)"):
    train._check_same_data(ckpt, 2, other_task, tmp_path)
  assert closed == [True, True]
  train._check_same_data(ckpt, 2, tiny_grpo_config(**{'grpo.eval_problems': 4}), tmp_path)  # evaluation only


def test_resuming_rlhf_on_other_prompts_is_refused(tmp_path):
  """RLHF's data position is an index into rlhf.prompts' prompts: those of another source would be
  read on from a place the run never reached. Which proxy scores them is not in the config's stream:
  a proxy that splits a preference source's prompts at another reward_model.val_fraction is refused
  by task=rlhf against the split the run recorded (tests/test_rlhf.py); one of the same stays accepted."""
  from tiny_config import tiny_rlhf_config
  from llm import train
  (tmp_path / 'config.json').write_text(tiny_rlhf_config().to_json_best_effort())
  ckpt = types.SimpleNamespace(close=lambda: None)
  with pytest.raises(ValueError, match=r"with other data settings \(rlhf\.prompts='gold_topics' -> "
                                       r"'hh_rlhf_harmless_base'\)"):
    train._check_same_data(ckpt, 2, tiny_rlhf_config(**{'rlhf.prompts': 'hh_rlhf_harmless_base'}), tmp_path)
  train._check_same_data(ckpt, 2, tiny_rlhf_config(**{'rlhf.proxy': 'runs/other_rm'}), tmp_path)


def test_resuming_rlhf_on_a_source_with_another_room_for_replies_is_refused(tmp_path):
  """A preference source's RLHF prompts are those leaving grpo.max_new_tokens of train.seq_len
  free: another value keeps other prompts, so the data position would index another list. The
  gold topics are all kept whatever the room, so there it is only how long replies may be."""
  from tiny_config import tiny_rlhf_config
  from llm import tasks, train
  hh = {'rlhf.prompts': 'hh_rlhf_harmless_base'}
  (tmp_path / 'config.json').write_text(tiny_rlhf_config(**hh).to_json_best_effort())
  longer = tiny_rlhf_config(**hh, **{'grpo.max_new_tokens': 24})
  ckpt = types.SimpleNamespace(close=lambda: None)
  with pytest.raises(ValueError, match=r"with other data settings \(grpo\.max_new_tokens=\d+ -> 24\)"):
    train._check_same_data(ckpt, 2, longer, tmp_path, tasks.get(longer).data_stream)
  (tmp_path / 'config.json').write_text(tiny_rlhf_config().to_json_best_effort())
  gold = tiny_rlhf_config(**{'grpo.max_new_tokens': 24})
  train._check_same_data(ckpt, 2, gold, tmp_path, tasks.get(gold).data_stream)


def test_sequence_aggregation_leaves_a_row_without_completion_tokens_out_of_the_mean():
  """Ratio 1, so a token's loss is -A: row 0 (A = 1, two tokens) has sequence loss -1; row 1 has no
  loss token at all, so the mean over completions is -1 / 1, not -1 / 2."""
  logp = jnp.zeros((2, 3))
  mask = jnp.array([[0, 1, 1], [0, 0, 0]], jnp.float32)
  loss_sum, weight, _ = grpo.objective(logp, logp, jnp.array([1.0, 1.0]), mask, 0.2, 0.2, aggregation='sequence')
  assert (float(loss_sum), float(weight)) == (-1.0, 1.0)


def test_grpo_with_fewer_prompts_per_step_names_the_batch_size_to_set():
  """grpo_arith computes train.batch_size when it is built; an override of prompts_per_step left it at
  64 and the error named no fix."""
  from configs import grpo_arith
  from llm.tasks import grpo as grpo_task
  config = grpo_arith.get_config()
  config.grpo.prompts_per_step = 2  # as --config.grpo.prompts_per_step=2 does; group_size stays 8
  with pytest.raises(ValueError) as error:
    grpo_task.check_config(config)
  assert str(error.value) == ('train.batch_size=64 must equal grpo.prompts_per_step x grpo.group_size = 16: set '
                              '--config.train.batch_size=16')
