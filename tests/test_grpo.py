"""GRPO: advantages, the clipped objective, the KL term, learning on a bandit, and the task
in the training loop."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conftest import ROOT, kill_then_resume, losses_by_step
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


def test_sequence_aggregation_weighs_each_completion_equally():
  logp = jnp.zeros((2, 4))
  mask = jnp.array([[1, 1, 1, 1], [1, 0, 0, 0]], jnp.float32)
  adv = jnp.array([1.0, 1.0])
  tok_sum, tok_w, _ = grpo.objective(logp, logp, adv, mask, 0.2, 0.2, aggregation='token')
  seq_sum, seq_w, _ = grpo.objective(logp, logp, adv, mask, 0.2, 0.2, aggregation='sequence')
  assert float(tok_w) == 5 and float(seq_w) == 2
  np.testing.assert_allclose(tok_sum / tok_w, -1.0)
  np.testing.assert_allclose(seq_sum / seq_w, -1.0)


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
  subprocess.run(_grpo_cmd(straight, pretrained), env=subprocess_env, check=True, capture_output=True)
  kill_then_resume(_grpo_cmd(resumed, pretrained), subprocess_env, resumed, kill_after=3, total=8)
  assert losses_by_step(straight) == losses_by_step(resumed)
  assert sorted(losses_by_step(resumed)) == list(range(1, 9))
  rows = [json.loads(l) for l in (straight / 'metrics.jsonl').read_text().splitlines()]
  step_row = next(r for r in rows if 'reward_mean' in r)
  for key in ('reward_mean', 'reward_std', 'reward_correctness', 'reward_format', 'zero_variance_groups',
              'clip_fraction', 'entropy', 'response_tokens', 'tool_call_rate'):
    assert key in step_row, key
  summary = json.loads((straight / 'summary.json').read_text())
  assert 0 <= summary['heldout_pass_at_1'] <= summary['heldout_pass_at_2'] <= 1
  assert (straight / 'grpo_curves.png').stat().st_size > 1000


def test_grpo_checks_that_the_batch_is_prompts_times_group(tmp_path, pretrained, subprocess_env):
  result = subprocess.run(_grpo_cmd(tmp_path, pretrained, '--config.train.batch_size=6'), env=subprocess_env,
                          capture_output=True, text=True)
  assert result.returncode != 0 and 'prompts_per_step' in result.stderr.splitlines()[-1]

