"""RLHF and reward hacking: KL_bon, the KL estimate, Gao et al.'s fits, the hacking monitor,
best-of-n selection, proxy ensembles, and task=rlhf in the training loop."""
import collections
import contextlib
import itertools
import json
import math
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from conftest import ROOT, hh_sft_openings, request_words, kill_then_resume, kill_when, losses_by_step
from llm import tokenizer as tokenizer_lib
from llm.rl import best_of_n, gold as gold_lib, hacking, reward_model
from tiny_config import tiny_rlhf_config


@pytest.mark.parametrize('n', [1, 2, 4, 16, 64])
def test_kl_bon_matches_the_best_of_n_distribution_of_a_fine_grid(n):
  """Best-of-n over M equally likely distinct outcomes picks outcome i with probability
  ((i + 1) / M)^n - (i / M)^n; its KL to the uniform tends to log n - (n - 1) / n."""
  M = 200_000
  cdf = (np.arange(M + 1) / M) ** n
  p = np.diff(cdf)
  kl = float(np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-300) * M), 0.0)))
  assert hacking.kl_bon(n) == pytest.approx(kl, abs=1e-3)
  assert hacking.distance(hacking.kl_bon(n)) == pytest.approx(math.sqrt(kl), abs=1e-2)


def test_kl_bon_refuses_n_below_one():
  with pytest.raises(ValueError, match='n >= 1'):
    hacking.kl_bon(0)


def test_sequence_kl_estimates_the_kl_of_two_known_distributions():
  """Sequences of 3 tokens drawn from pi (each token from one categorical); the sample estimate
  of KL(pi || ref) is 3 x the closed form."""
  rng = np.random.default_rng(0)
  pi, ref = np.array([0.7, 0.2, 0.1]), np.array([0.3, 0.3, 0.4])
  tokens = rng.choice(3, p=pi, size=(20_000, 3))
  mask = np.ones((20_000, 4))
  mask[:, 0] = 0  # a prompt position: never counted
  logp = np.concatenate([np.full((20_000, 1), 5.0), np.log(pi)[tokens]], 1)
  ref_logp = np.concatenate([np.full((20_000, 1), -5.0), np.log(ref)[tokens]], 1)
  exact = 3 * float(np.sum(pi * np.log(pi / ref)))
  assert hacking.sequence_kl(logp, ref_logp, mask) == pytest.approx(exact, rel=0.03)


@pytest.mark.parametrize('form, alpha, beta', [('bon', 0.8, 0.25), ('rl', 0.5, 0.3)])
def test_gao_fits_recover_known_coefficients(form, alpha, beta):
  rng = np.random.default_rng(1)
  d = np.linspace(0.05, 4.0, 40)
  f = {'bon': lambda x: x * (alpha - beta * x), 'rl': lambda x: x * (alpha - beta * np.log(x))}[form]
  fitted = hacking.fit(form, d, f(d) + rng.normal(0, 0.01, d.shape))
  assert fitted.alpha == pytest.approx(alpha, rel=0.05) and fitted.beta == pytest.approx(beta, rel=0.05)
  peak = alpha / (2 * beta) if form == 'bon' else math.exp(alpha / beta - 1)
  assert fitted.peak_d == pytest.approx(peak, rel=0.1)
  assert fitted.rmse < 0.02


def test_hacking_monitor_fires_when_gold_falls_while_proxy_rises(tmp_path):
  monitor = hacking.HackingMonitor(tolerance=0.05)
  script = [(0, 0.0, 0.0), (10, 0.3, 0.5), (20, 0.5, 1.0), (30, 0.52, 1.4), (40, 0.3, 2.0), (50, 0.1, 2.5)]
  fired = [monitor.update(step, g, p)['hacking'] for step, g, p in script]
  assert fired == [0, 0, 0, 0, 1, 1]
  # Gold measured against its best so far, not the last point: a slow slide past the tolerance counts.
  slide = hacking.HackingMonitor(tolerance=0.05)
  steps = [(0, 0.0, 0.0), (1, 0.5, 1.0), (2, 0.46, 1.2), (3, 0.42, 1.4)]
  assert [slide.update(s, g, p)['hacking'] for s, g, p in steps] == [0, 0, 0, 1]
  # Both falling (the policy got worse at everything) is not hacking; nor is a dip within tolerance.
  both = hacking.HackingMonitor(tolerance=0.05)
  assert [both.update(s, g, p)['hacking'] for s, g, p in [(0, 0.5, 1.0), (1, 0.2, 0.5)]] == [0, 0]
  small = hacking.HackingMonitor(tolerance=0.05)
  assert [small.update(s, g, p)['hacking'] for s, g, p in [(0, 0.5, 1.0), (1, 0.47, 2.0)]] == [0, 0]
  # A resumed run rebuilds the history from metrics.jsonl (a step logged twice counts once).
  rows = [{'step': s, 'rlhf_gold': g, 'rlhf_proxy': p} for s, g, p in script[:4]] + [{'step': 20, 'loss': 1.0}]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows + rows[2:4]))
  resumed = hacking.HackingMonitor(tolerance=0.05)
  resumed.load(tmp_path / 'metrics.jsonl')
  assert [h[0] for h in resumed.history] == [0, 10, 20, 30]
  assert resumed.update(40, 0.3, 2.0) == {'hacking': 1.0, 'gold_below_best': pytest.approx(0.22)}


def test_hacking_monitor_needs_gold_below_its_best_and_the_proxy_past_the_tolerance():
  """Gold level with its best is not a fall, and a proxy risen by less than the tolerance (or
  fallen) is not a rise: neither is hacking."""
  level = hacking.HackingMonitor(tolerance=0.0)
  assert [level.update(s, g, p)['hacking'] for s, g, p in [(0, 0.5, 1.0), (1, 0.5, 2.0)]] == [0, 0]
  for proxy in (1.02, 0.98):
    flat = hacking.HackingMonitor(tolerance=0.05)
    assert [flat.update(s, g, p)['hacking'] for s, g, p in [(0, 0.5, 1.0), (1, 0.2, proxy)]] == [0, 0]


def test_the_distance_of_a_negative_kl_estimate_is_zero():
  """A sample KL estimate a little below 0 means the policy has not moved: d = sqrt(max(KL, 0))."""
  assert hacking.distance(-0.01) == 0.0
  assert hacking.distance(0.25) == 0.5

def test_best_of_n_picks_the_proxy_best_of_each_group():
  proxy = np.array([[0.1, 0.9, 0.5, 0.2]])
  gold = np.array([[1.0, -1.0, 0.5, 0.0]])
  assert best_of_n.select(proxy, gold, 1) == pytest.approx((0.425, 0.125))
  assert best_of_n.select(proxy, gold, 2) == pytest.approx(((0.9 + 0.5) / 2, (-1.0 + 0.5) / 2))
  assert best_of_n.select(proxy, gold, 4) == pytest.approx((0.9, -1.0))
  rows = best_of_n.curve(proxy, gold, [1, 4])
  assert [r['kl_bon'] for r in rows] == [0.0, pytest.approx(math.log(4) - 0.75)]
  with pytest.raises(ValueError, match='divisible'):
    best_of_n.select(proxy, gold, 3)


def test_best_of_n_scores_each_sample_by_its_own_prompts_topic():
  """Samples come prompt by prompt: the second of two is still the first prompt's."""
  first, second = gold_lib.GoldTopicsTask().heldout(2)
  a, b = first.meta['topic'], second.meta['topic']
  texts = [f'The {a} is here.', f'The {a} is there.', f'The {b} is here.', 'Nothing is there.']
  proxy = np.array([[0.2, 0.7], [0.9, 0.1]])
  gold_PxN, examples = best_of_n.gold_and_examples([first, second], texts, proxy)
  # Four words of the 30 that earn full length: 4/30 each; relevance 1 where the one sentence names
  # the prompt's topic, 0 where it does not; nothing repeats.
  np.testing.assert_allclose(gold_PxN, [[1 + 4 / 30, 1 + 4 / 30], [1 + 4 / 30, 3 / 30]], rtol=1e-6)
  assert [(e['prompt'], e['response'], e['proxy']) for e in examples] == [
      (f'Tell me about the {a}.', texts[1], 0.7), (f'Tell me about the {b}.', texts[2], 0.9)]
  assert [e['gold'] for e in examples] == pytest.approx([1 + 4 / 30, 1 + 4 / 30])


@pytest.mark.parametrize('text, message', [
    ('0,2', r'--n=0,2: each n must be 1 or more'), ('2,-2', r'--n=2,-2: each n must be 1 or more'),
    ('3,2', r'--n=3,2: each n must divide the largest, 3'), ('2,x', r'--n=2,x: write whole numbers')])
def test_best_of_n_refuses_ns_it_cannot_split_the_samples_into(text, message):
  with pytest.raises(ValueError, match=message):
    best_of_n.parse_ns(text)
  assert best_of_n.parse_ns('1,2,8') == [1, 2, 8]


def test_best_of_n_checks_its_ns_before_loading_anything(python_env):
  """Not after the minutes of sampling: the policy here is not even there."""
  result = subprocess.run([sys.executable, '-m', 'llm.rl.best_of_n', '--policy=no_such_run', '--proxy=a', '--n=0,2'],
                          env=python_env, capture_output=True, text=True)
  assert result.returncode != 0 and result.stderr.splitlines()[-1] == ('llm.rl.best_of_n: --n=0,2: each n must be '
                                                                       '1 or more')


@pytest.mark.parametrize('given, missing', [('--proxy=a', 'policy'), ('--policy=a', 'proxy')])
def test_best_of_n_names_a_missing_run_flag_before_loading_anything(given, missing, python_env):
  result = subprocess.run([sys.executable, '-m', 'llm.rl.best_of_n', given], env=python_env, capture_output=True,
                          text=True)
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert result.stderr.splitlines()[-1].startswith(f'llm.rl.best_of_n: --{missing} is missing: give the '), result.stderr


@pytest.mark.parametrize('flag', ['--prompts=0', '--max_new_tokens=0', '--temperature=-1', '--seed=-1'])
def test_best_of_n_refuses_a_knob_out_of_range_while_reading_its_flags(flag, python_env):
  """Refused while the flags are read, before either run loads (the policy here is not even there)."""
  result = subprocess.run([sys.executable, '-m', 'llm.rl.best_of_n', '--policy=no_such_run', '--proxy=a', flag],
                          env=python_env, capture_output=True, text=True)
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert f'Flags parsing error: flag {flag}: ' in result.stderr, result.stderr[-1000:]


class _Fixed:
  def __init__(self, scores):
    self.scores = np.asarray(scores, np.float32)

  def score(self, sequences):
    return self.scores[:len(sequences)]


def test_ensemble_mean_and_worst_case():
  members = [_Fixed([1.0, 5.0]), _Fixed([3.0, -1.0])]
  np.testing.assert_allclose(reward_model.Ensemble(members, 'mean').score([[1], [2]]), [2.0, 2.0])
  np.testing.assert_allclose(reward_model.Ensemble(members, 'min').score([[1], [2]]), [1.0, -1.0])
  with pytest.raises(ValueError, match="'mean' or 'min'"):
    reward_model.Ensemble(members, 'max')


class _DigitTok:
  """<|end|> is 5; digit d is id 10 + d (what the gold stand-in reads)."""
  pad_id = 0
  special_id = staticmethod(lambda name: {'<|end|>': 5}.get(name, 3))
  decode = staticmethod(lambda ids: ''.join(str(i - 10) for i in ids if 10 <= i < 20))


class _DigitGold:
  """A prompt task whose gold reward is the digit the response wrote."""

  def gold(self, completion_text, problem):
    return float(completion_text)


def test_rlhf_rollouts_are_rewarded_by_the_proxy_less_the_missing_end_penalty(monkeypatch):
  """One group of four responses, the proxy scoring them 0.5, 2, -1, 1; the second never ended its
  turn (missing_end_penalty 1.5): rewards 0.5, 0.5, -1, 1 (mean 0.25, std 0.75), advantages
  (r - 0.25) / 0.75. The gold reward (the digits 7, 3, 9, 1) is only logged: training on it would
  give other advantages."""
  from llm import inference
  from llm.tasks import grpo as grpo_task, rlhf
  config = tiny_rlhf_config(**{'train.seq_len': 8, 'rlhf.missing_end_penalty': 1.5})
  end = 5
  completions = [inference.Completion([10 + digit, end], [False, False], 'stop', tool_calls=0)
                 for digit in (7, 3, 9, 1)]
  completions[1] = inference.Completion([13], [False], 'length', tool_calls=0)
  completions[0] = inference.Completion([17, 30, end], [False, True, False], 'stop', tool_calls=1)  # 30: a tool's
  rows = [(0, [2, 9])] * 4
  monkeypatch.setattr(grpo_task, 'sample_groups', lambda *args: (['problem'], rows, completions))
  state = rlhf._State(task=_DigitGold(), tokenizer=_DigitTok(), proxy=_Fixed([0.5, 2.0, -1.0, 1.0]),
                      logp_fn=lambda params, batch: np.zeros(batch['targets'].shape, np.float32),
                      ref_params='reference')  # stand-ins for the policy's and the reference's log-probs
  batch, metrics = rlhf._rollout(config, types.SimpleNamespace(context=contextlib.nullcontext), None, state,
                                 start=0, step=1)
  np.testing.assert_allclose(batch['advantages'], np.array([0.25, 0.25, -1.25, 0.75]) / 0.75, rtol=1e-5)
  assert metrics['reward_mean'] == pytest.approx(0.25) and metrics['reward_std'] == pytest.approx(0.75)
  assert metrics['proxy_mean'] == pytest.approx(0.625) and metrics['gold_mean'] == pytest.approx(5.0)
  assert metrics['finished_rate'] == 0.75
  assert metrics['response_tokens'] == pytest.approx((2 + 1 + 2 + 2) / 4)  # the tool's token was not sampled


def test_rlhf_rollouts_of_the_longest_budget_are_scored_at_their_end():
  """A rollout that used its whole budget and ended its turn is scored at that <|end|>. The budget
  was GRPO's training row, seq_len + 1 tokens, while the proxy reads seq_len: such a row lost its
  <|end|>, was scored at the token before, and still counted finished (no missing-end penalty)."""
  from llm.tasks import grpo as grpo_task, rlhf
  config = tiny_rlhf_config()
  config.grpo.max_new_tokens = 1000  # the row, not this, bounds the budget

  class Engine:
    cache_len = 1000

  pad, end, assistant, word = 0, 1, 2, 7
  prompts = [[5] * n + [assistant] for n in (3, 60, 120)]
  budgets = grpo_task.new_token_budgets(config, Engine(), prompts, rlhf.rollout_len(config))
  rows = [p + [word] * (b - 1) + [end] for p, b in zip(prompts, budgets)]
  tokens, at = reward_model.pad_rows(rows, config.train.seq_len, pad, end, assistant)  # the proxy's window
  assert [int(tokens[i, at[i]]) for i in range(len(rows))] == [end] * len(rows)
  assert [len(r) for r in rows] == [config.train.seq_len] * len(rows)  # the budget was not cut short either


@pytest.fixture(scope='module')
def tiny_proxy(tmp_path_factory, pretrained, python_env, cache_dir):
  """A 2-step tiny reward model run, the proxy of the loop tests."""
  workdir = tmp_path_factory.mktemp('proxy')
  subprocess.run([sys.executable, '-m', 'llm.main', f'--config={ROOT}/tests/tiny_config.py:reward_model',
                  f'--workdir={workdir}', f'--config.init_from={pretrained}', '--config.train.steps=2'],
                 env=dict(python_env, LLM_CACHE_DIR=str(cache_dir)), check=True, capture_output=True)
  return workdir


def _rlhf_cmd(workdir, pretrained, proxy, *extra, steps=6):
  return [sys.executable, '-m', 'llm.main', f'--config={ROOT}/tests/tiny_config.py:rlhf', f'--workdir={workdir}',
          f'--config.init_from={pretrained}', f'--config.rlhf.proxy={proxy}', f'--config.train.steps={steps}',
          '--config.train.eval_every=2', '--config.train.lr=1e-2', *extra]


def test_rlhf_runs_in_the_training_loop_and_resumes_after_a_kill(tmp_path, pretrained, tiny_proxy, subprocess_env):
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  subprocess.run(_rlhf_cmd(straight, pretrained, tiny_proxy), env=subprocess_env, check=True, capture_output=True)
  kill_then_resume(_rlhf_cmd(resumed, pretrained, tiny_proxy), subprocess_env, resumed, kill_after_checkpoint=2,
                   total=6)
  assert losses_by_step(straight) == losses_by_step(resumed)
  rows = [json.loads(l) for l in (straight / 'metrics.jsonl').read_text().splitlines()]
  evals = [r for r in rows if 'rlhf_gold' in r]
  assert [r['step'] for r in evals] == [0, 2, 4, 6]
  for key in ('rlhf_proxy', 'rlhf_kl', 'rlhf_d', 'rlhf_hacking', 'rlhf_gold_below_best'):
    assert all(key in r for r in evals), key
  assert evals[0]['rlhf_kl'] == pytest.approx(0.0, abs=1e-5)  # the policy is its reference at step 0
  resumed_evals = {r['step']: r for r in map(json.loads, (resumed / 'metrics.jsonl').read_text().splitlines())
                   if 'rlhf_gold' in r}
  assert resumed_evals[6] == evals[-1]  # the same held-out samples and scores after the resume
  steps = [r for r in rows if 'loss' in r]
  assert all('kl' in r and 'proxy_mean' in r and 'gold_mean' in r for r in steps)  # beta > 0: the KL term is on
  # With a learning rate this high the policy has moved: the estimated KL to the SFT policy is positive.
  assert steps[-1]['rollout_kl'] > 0
  samples = [json.loads(l) for l in (straight / 'rlhf_samples.jsonl').read_text().splitlines()]
  assert len(samples) == 4 * 2 * 4 and {'prompt', 'response', 'proxy', 'gold'} <= set(samples[0])
  summary = json.loads((straight / 'summary.json').read_text())
  assert summary['rlhf_proxy'] == evals[-1]['rlhf_proxy'] and summary['rlhf_proxy_runs'] == str(tiny_proxy)
  assert (straight / 'rlhf_curves.png').stat().st_size > 1000


def test_rlhf_samples_of_a_killed_run_are_logged_once_per_eval(tmp_path, pretrained, tiny_proxy, subprocess_env):
  """Killed between an eval and the next checkpoint, twice: before any checkpoint (the run starts
  over), and after the eval of step 6 with the checkpoint of step 4 saved. The evals since the
  checkpoint rerun; their first samples stayed in rlhf_samples.jsonl, appended to again."""
  cmd = _rlhf_cmd(tmp_path, pretrained, tiny_proxy, '--config.train.checkpoint_every=4', steps=8)
  samples, checkpoints = tmp_path / 'rlhf_samples.jsonl', tmp_path / 'checkpoints'
  kill_when(cmd, subprocess_env, lambda: samples.exists() and samples.read_bytes().count(b'\n') >= 8)
  assert not (checkpoints / '4').exists(), 'the first kill came after the checkpoint'
  kill_when(cmd, subprocess_env, lambda: b'{"step": 6,' in samples.read_bytes())
  assert (checkpoints / '4').is_dir() and not (checkpoints / '8').exists(), 'the second kill missed its window'
  subprocess.run(cmd, env=subprocess_env, check=True, capture_output=True)
  per_step = collections.Counter(json.loads(l)['step'] for l in samples.read_text().splitlines())
  # evals at 0, 2, 4, 6 and 8, each rlhf.eval_prompts (2) x grpo.group_size (4) samples
  assert per_step == {0: 8, 2: 8, 4: 8, 6: 8, 8: 8}


def test_rlhf_resumes_when_a_kill_cut_the_last_metrics_line_short(tmp_path, pretrained, tiny_proxy, subprocess_env):
  """A kill in the middle of a metrics.jsonl write leaves half a line, which the loop drops on
  resume; the hacking monitor read the file before that, strictly, and the run could not resume."""
  subprocess.run(_rlhf_cmd(tmp_path, pretrained, tiny_proxy, steps=4), env=subprocess_env,
                 check=True, capture_output=True)
  with (tmp_path / 'metrics.jsonl').open('a') as f:
    f.write('{"step": 5, "loss": 0.1')  # what the kill left of step 5's row
  resumed = subprocess.run(_rlhf_cmd(tmp_path, pretrained, tiny_proxy), env=subprocess_env, capture_output=True,
                           text=True)  # train.steps=6: on from the checkpoint of step 4
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  rows = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows if 'rlhf_gold' in r] == [0, 2, 4, 6]
  assert [r['step'] for r in rows if 'loss' in r] == [1, 2, 3, 4, 5, 6]


def test_rlhf_held_out_samples_carry_the_eval_step_when_rollouts_serve_several_steps(tmp_path, pretrained,
                                                                                     tiny_proxy, subprocess_env):
  """grpo.mu = 2: rollouts at steps 1 and 3, evals at 0, 2 and 4. The samples (and the hacking
  monitor) were filed under the latest rollout's step, 0, 1 and 3."""
  subprocess.run(_rlhf_cmd(tmp_path, pretrained, tiny_proxy, '--config.grpo.mu=2', steps=4),
                 env=subprocess_env, check=True, capture_output=True)
  rows = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows if 'rlhf_gold' in r] == [0, 2, 4]
  samples = [json.loads(l) for l in (tmp_path / 'rlhf_samples.jsonl').read_text().splitlines()]
  assert sorted({s['step'] for s in samples}) == [0, 2, 4]


def test_rlhf_needs_a_proxy(tmp_path, pretrained, subprocess_env):
  result = subprocess.run([sys.executable, '-m', 'llm.main', f'--config={ROOT}/tests/tiny_config.py:rlhf',
                           f'--workdir={tmp_path}', f'--config.init_from={pretrained}'],
                          env=subprocess_env, capture_output=True, text=True)
  assert result.returncode != 0 and 'rlhf.proxy is empty' in result.stderr.splitlines()[-1]


@pytest.fixture(scope='module')
def other_tokenizer_proxy(tmp_path_factory, tiny_proxy, tok):
  """tiny_proxy with another tokenizer of the same vocabulary size (trained on half the text: other
  merges), as a reward model trained from another base would have."""
  workdir = tmp_path_factory.mktemp('other_tokenizer_proxy') / 'rm'
  shutil.copytree(tiny_proxy, workdir)
  shutil.copyfile(tok.path, workdir / 'tokenizer.model')
  return workdir


def test_best_of_n_refuses_a_proxy_with_another_tokenizer(pretrained, other_tokenizer_proxy):
  policy_tok = tokenizer_lib.load_any(tokenizer_lib.run_file(pretrained))
  assert tokenizer_lib.load_any(other_tokenizer_proxy / 'tokenizer.model').vocab_size == policy_tok.vocab_size
  with pytest.raises(ValueError, match=f'reward model {other_tokenizer_proxy} has another tokenizer .* than the '
                                       f'policy, {pretrained}/tokenizer.model'):
    best_of_n.sample_and_score(str(pretrained), str(other_tokenizer_proxy), 'mean', prompts=1, samples=1,
                               max_new_tokens=4, temperature=1.0, seed=0)


def test_best_of_n_samples_fit_the_proxys_window(tmp_path, pretrained, tiny_proxy, monkeypatch):
  """A policy whose train.seq_len (the proxy's window) is below its context: samples are budgeted
  to the window, where a longer one would be scored cut short."""
  policy = tmp_path / 'policy'
  shutil.copytree(pretrained, policy)
  config = json.loads((policy / 'config.json').read_text())
  config['train']['seq_len'] = 48
  (policy / 'config.json').write_text(json.dumps(config))
  scored = []
  score = reward_model.Scorer.score
  monkeypatch.setattr(reward_model.Scorer, 'score', lambda self, rows: scored.extend(rows) or score(self, rows))
  best_of_n.sample_and_score(str(policy), str(tiny_proxy), 'mean', prompts=2, samples=2, max_new_tokens=200,
                             temperature=1.0, seed=0)
  assert len(scored) == 4 and max(len(r) for r in scored) <= 48


def test_best_of_n_samples_with_a_seed_past_the_engines_uint32(pretrained, tiny_proxy):
  """5000 x 1_000_003 is past 2**32: the row seeds are reduced mod 2**31, as GRPO's rollouts'
  are, not handed to the engine's uint32 to overflow."""
  proxy_PxN, gold_PxN, _ = best_of_n.sample_and_score(str(pretrained), str(tiny_proxy), 'mean', prompts=1,
                                                      samples=2, max_new_tokens=4, temperature=1.0, seed=5000)
  assert proxy_PxN.shape == gold_PxN.shape == (1, 2)


def test_rlhf_refuses_a_proxy_with_another_tokenizer(tmp_path, pretrained, other_tokenizer_proxy, subprocess_env):
  result = subprocess.run(_rlhf_cmd(tmp_path, pretrained, other_tokenizer_proxy), env=subprocess_env,
                          capture_output=True, text=True)
  assert result.returncode != 0
  assert f'reward model {other_tokenizer_proxy} has another tokenizer' in result.stderr.splitlines()[-1]


def test_a_proxy_is_refused_a_seq_len_past_its_position_table(tiny_proxy):
  """tiny_proxy's learned positions stop at 128: scored at 256 they would read NaN."""
  with pytest.raises(ValueError, match=r'has model.max_seq_len=128, shorter than the seq_len=256'):
    reward_model.load_proxy([str(tiny_proxy)], seq_len=256)
  assert reward_model.load_proxy([str(tiny_proxy)], seq_len=128).seq_len == 128


def test_an_unknown_ensemble_rule_is_refused_with_one_proxy_as_with_two(tmp_path, pretrained, python_env):
  from tiny_config import tiny_rlhf_config
  from llm.tasks import rlhf
  for proxies in ('a', 'a,b'):
    config = tiny_rlhf_config(**{'init_from': str(pretrained), 'rlhf.proxy': proxies, 'rlhf.ensemble': 'max'})
    with pytest.raises(ValueError, match=r"^rlhf.ensemble='max' is unknown; choose one of \('mean', 'min'\)"):
      rlhf.make_task(config).data(config, tmp_path)
  result = subprocess.run([sys.executable, '-m', 'llm.rl.best_of_n', '--policy=p', '--proxy=a', '--ensemble=max'],
                          env=python_env, capture_output=True, text=True)
  assert result.returncode != 0 and 'flag --ensemble=max: value should be one of <mean|min>' in result.stderr


def test_an_rlhf_held_out_eval_of_no_prompts_is_refused():
  from tiny_config import tiny_rlhf_config
  from llm.tasks import rlhf
  with pytest.raises(ValueError, match=r'^rlhf\.eval_prompts=0: .* 1 or more'):
    rlhf._config_check(tiny_rlhf_config(**{'rlhf.proxy': 'a', 'rlhf.eval_prompts': 0}))


def test_hacking_report_fits_and_tabulates_synthetic_curves(tmp_path):
  """A best-of-n file and an RL run whose gold follows Gao et al.'s forms exactly (offset by the
  starting gold): the report recovers alpha and beta, says where gold peaks, and plots."""
  from llm.rl import hacking_report
  ns = [1, 2, 4, 8, 16, 32, 64, 128, 256]
  d = [hacking.distance(hacking.kl_bon(n)) for n in ns]
  curve = [{'n': n, 'd': x, 'kl_bon': x * x, 'gold': 0.3 + x * (1.0 - 0.5 * x), 'proxy': 0.1 + x}
           for n, x in zip(ns, d)]
  (tmp_path / 'bon_a.json').write_text(json.dumps({'curve': curve}))
  run = tmp_path / 'rlhf_a'
  run.mkdir()
  rl_d = [0.0, 0.2, 0.5, 1.0, 1.5, 2.0, 3.0]
  rows = [{'step': 5 * i, 'rlhf_d': x, 'rlhf_gold': 0.3 + x * (0.4 - 0.3 * np.log(max(x, 1e-12))),
           'rlhf_proxy': x, 'rlhf_hacking': float(x >= 2.0)} for i, x in enumerate(rl_d)]
  (run / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  bon = hacking_report.fitted('bon', hacking_report.bon_curve(tmp_path / 'bon_a.json'))
  rl_curve = hacking_report.rl_curve(run)
  rl = hacking_report.fitted('rl', rl_curve)
  assert bon['alpha'] == pytest.approx(1.0, rel=1e-3) and bon['beta'] == pytest.approx(0.5, rel=1e-3)
  assert bon['fit_peak_d'] == pytest.approx(1.0, rel=1e-3) and bon['peaks_inside']
  assert rl['alpha'] == pytest.approx(0.4, rel=1e-3) and rl['beta'] == pytest.approx(0.3, rel=1e-3)
  assert rl['fit_peak_d'] == pytest.approx(math.exp(0.4 / 0.3 - 1), rel=1e-3)
  assert rl_curve['hacking_steps'] == [25, 30]
  text = hacking_report.table([], [dict(hacking_report.bon_curve(tmp_path / 'bon_a.json'), fit=bon)],
                              [dict(rl_curve, fit=rl)])
  assert '| bon_a | 1.000 | 0.500 |' in text and '| rlhf_a | 0.400 | 0.300 |' in text
  # the monitor fired first at step 25 (d = 2): gold's best before it is at d = 1.5, step 20
  best = 0.3 + 1.5 * (0.4 - 0.3 * math.log(1.5))
  lowest, end = 0.3 + 2.0 * (0.4 - 0.3 * math.log(2.0)), 0.3 + 3.0 * (0.4 - 0.3 * math.log(3.0))
  assert f'| rlhf_a | 0.300 | {best:.3f} (step 20, KL 2.25) | step 25 | {end:.3f} | {end:.3f} | 0.00 -> 3.00 | 9 |' in text
  assert lowest > end
  # a run that recovers after the monitor fired: the peak is the one before, not the later best
  back = {'steps': [0, 2, 4, 6, 8], 'd': [0.0, 1.0, 2.0, 3.0, 2.0], 'gold': [0.5, 0.8, 0.4, 0.3, 0.9],
          'proxy': [0.0, 1.0, 2.0, 3.0, 4.0], 'hacking_steps': [4, 6]}
  assert hacking_report.course(back) == {'peak_step': 2, 'peak_kl': 1.0, 'peak_gold': 0.8, 'first_hacking_step': 4,
                                         'lowest_gold_after': 0.3, 'end_gold': 0.9, 'start_proxy': 0.0,
                                         'end_proxy': 4.0, 'max_kl': 9.0}
  # gold at its highest where the monitor first fires: that step is already after, not the peak before
  fires = {'steps': [0, 2, 4, 6], 'd': [0.0, 1.0, 2.0, 3.0], 'gold': [0.5, 0.6, 0.9, 0.2], 'proxy': [0.0, 1.0, 2.0, 3.0],
           'hacking_steps': [4]}
  course = hacking_report.course(fires)
  assert (course['peak_step'], course['peak_gold'], course['lowest_gold_after']) == (2, 0.6, 0.2)
  hacking_report.plot([dict(rl_curve, fit=rl)], 'rl', tmp_path / 'rl.png')
  assert (tmp_path / 'rl.png').stat().st_size > 1000


def test_hacking_report_takes_a_step_evaluated_again_from_its_last_row_and_a_peak_at_the_end_is_not_inside(tmp_path):
  from llm.rl import hacking_report
  run = tmp_path / 'rlhf_resumed'
  run.mkdir()
  rows = [(0, 0.0, 0.30), (5, 0.5, 0.40), (10, 1.0, 0.45),  # killed after step 10's eval, resumed from step 5
          (10, 1.0, 0.50), (15, 1.5, 0.55)]
  (run / 'metrics.jsonl').write_text(''.join(json.dumps({'step': s, 'rlhf_d': d, 'rlhf_gold': g, 'rlhf_proxy': d}) + '\n'
                                             for s, d, g in rows))
  curve = hacking_report.rl_curve(run)
  assert curve['steps'] == [0, 5, 10, 15] and curve['gold'] == [0.30, 0.40, 0.50, 0.55]
  # best-of-n gold of the form d (1 - 0.1 d), whose peak (d = 5) lies past the largest d measured (2.1)
  d = [hacking.distance(hacking.kl_bon(n)) for n in (1, 2, 4, 8, 16, 32, 64, 128, 256)]
  bon = hacking_report.fitted('bon', {'d': d, 'gold': [0.3 + x * (1 - 0.1 * x) for x in d]})
  assert bon['fit_peak_d'] == pytest.approx(5.0, rel=1e-3) and not bon['peaks_inside']


@pytest.mark.parametrize('flag, says', [
    ('--rm={sft}', '--rm={sft} is not a reward model run: its summary.json has no rm_train_pairs, rm_val_accuracy, '
     'rm_val_length_baseline; give task=reward_model runs (python -m llm.main --config=configs/reward_model_*.py)'),
    ('--bon={bon}', '--bon={bon} holds no best-of-n curve (a "curve" of rows with d, gold and proxy): give the JSON '
     'files python -m llm.rl.best_of_n --out=FILE writes')])
def test_hacking_report_given_a_run_or_file_of_another_kind_names_it_in_one_line(tmp_path, python_env, flag, says):
  """An SFT run given as --rm, and another JSON file (a metrics file) as --bon, were KeyErrors."""
  paths = dict(sft=tmp_path / 'sft_small', bon=tmp_path / 'eval.json')
  paths['sft'].mkdir()
  (paths['sft'] / 'summary.json').write_text(json.dumps({'val_loss': 2.1, 'step': 700}))
  paths['bon'].write_text(json.dumps({'step': 700, 'gold': 0.4}))
  r = subprocess.run([sys.executable, '-m', 'llm.rl.hacking_report', flag.format(**paths), f'--out={tmp_path / "out"}'],
                     cwd=ROOT, env=python_env, capture_output=True, text=True, timeout=120)
  assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
  assert r.stderr.strip().splitlines()[-1] == 'llm.rl.hacking_report: ' + says.format(**paths)
  assert not (tmp_path / 'out').exists()


def test_real_preference_prompts_are_the_pairs_prompts_split_as_the_reward_models(data_dir, tok):
  from llm import chat_template
  from llm.data import preferences
  task = preferences.PromptTask('hh_rlhf_harmless_base', data_dir, tok, seq_len=256, room=64, val_fraction=0.1)
  train_pairs, val_pairs = preferences.load('hh_rlhf_harmless_base', data_dir, 0.1, 0)
  held = task.heldout(10**6)
  assert held and all(p.prompt_messages[-1]['role'] == 'user' for p in held)
  assert {json.dumps(p.prompt_messages) for p in held} <= {json.dumps(p.chosen[:-1]) for p in val_pairs}
  first = list(itertools.islice(task.train_problems(5), 300))
  assert [p.prompt_messages for p in first[:20]] == [p.prompt_messages for p in
                                                     itertools.islice(task.train_problems(5), 20)]
  assert {json.dumps(p.prompt_messages) for p in first} <= {json.dumps(p.chosen[:-1]) for p in train_pairs}
  assert all(len(chat_template.render_prompt(tok, p.prompt_messages)) + 64 <= 256 for p in first + held)
  with pytest.raises(ValueError, match='no prompt leaves'):
    preferences.PromptTask('hh_rlhf_harmless_base', data_dir, tok, seq_len=16, room=8, val_fraction=0.1)


def test_alpaca_heldout_prompts_are_distinct_and_never_trained_on(data_dir, tok):
  from llm.data import preferences
  task = preferences.PromptTask('alpaca_eval_ai_preferences', data_dir, tok, seq_len=256, room=64, val_fraction=0.1)
  held = [json.dumps(p.prompt_messages) for p in task.heldout(10**6)]
  train_pairs, _ = preferences.load('alpaca_eval_ai_preferences', data_dir, 0.1, 0)
  trained = {json.dumps(p.chosen[:-1]) for p in train_pairs}
  assert len(held) > 10 and len(set(held)) == len(held) and not set(held) & trained


def _proxy_config(folder, **reward_model):
  """A run folder whose config.json is a reward model's of these reward_model fields (all rlhf reads)."""
  folder.mkdir()
  (folder / 'config.json').write_text(json.dumps({'task': 'reward_model', 'reward_model': reward_model}))
  return str(folder)


def test_rlhf_holds_out_only_prompts_every_proxy_held_out(tmp_path, data_dir, tok):
  """The split at the proxies' reward_model.val_fraction (their smallest), not always at 0.1: at 0.1,
  a proxy that held out 5% trained on about half the held-out prompts."""
  from llm.data import preferences
  from llm.tasks import rlhf
  source = 'hh_rlhf_harmless_base'
  narrow = _proxy_config(tmp_path / 'narrow', source=source, val_fraction=0.05)
  wide = _proxy_config(tmp_path / 'wide', source=source, val_fraction=0.3)
  gold_proxy = _proxy_config(tmp_path / 'gold', source='gold', val_fraction=0.01)  # trained on no hh prompt
  config = tiny_rlhf_config(**{'rlhf.prompts': source, 'rlhf.proxy': f'{wide},{narrow},{gold_proxy}',
                               'train.seq_len': 256, 'grpo.max_new_tokens': 64})
  held = {json.dumps(p.prompt_messages, sort_keys=True) for p in rlhf._prompt_task(config, tok).heldout(10**6)}
  prompts = lambda pairs: {json.dumps(p.chosen[:-1], sort_keys=True) for p in pairs}
  narrow_train, narrow_val = preferences.load(source, data_dir, 0.05, 0)
  assert held and held <= prompts(narrow_val) and not held & prompts(narrow_train)
  assert not held & prompts(preferences.load(source, data_dir, 0.3, 0)[0])


def test_rlhf_held_out_prompts_leave_out_those_the_policys_sft_trained_on(tmp_path, hh_sft, data_dir, tok):
  from llm.data import preferences
  from llm.tasks import rlhf
  source = 'hh_rlhf_harmless_base'
  proxy = _proxy_config(tmp_path / 'proxy', source=source, val_fraction=0.1)
  config = tiny_rlhf_config(**{'init_from': str(hh_sft), 'rlhf.prompts': source, 'rlhf.proxy': proxy,
                               'train.seq_len': 256, 'grpo.max_new_tokens': 64})
  task = rlhf._prompt_task(config, tok)
  opened = hh_sft_openings(hh_sft, data_dir, tok)
  _, val = preferences.load(source, data_dir, 0.1, 0)
  held = task.heldout(10**6)
  assert held and not {request_words(p.prompt_messages[0]['content']) for p in held} & opened
  assert task.left_out == len({json.dumps(p.chosen[:-1]) for p in val if request_words(p.chosen[0]['content']) in opened}) > 0


def test_rlhf_held_out_prompts_leave_out_those_an_rlhf_run_up_the_chain_trained_on(tmp_path, pretrained, data_dir, tok):
  """Trained on from an RLHF run's weights (its resume refusal's remedy) against a proxy that holds out
  more: the held-out prompts leave out those the first run trained on, split where it recorded when it
  started, not where its proxy, retrained since, splits now."""
  from llm.data import preferences
  from llm.tasks import rlhf
  source = 'hh_rlhf_harmless_base'
  first_proxy = _proxy_config(tmp_path / 'first_proxy', source=source, val_fraction=0.05)  # not the 0.1 of old runs
  config = lambda init_from, proxy: tiny_rlhf_config(**{'init_from': str(init_from), 'rlhf.prompts': source,
                                                        'rlhf.proxy': proxy, 'train.seq_len': 256,
                                                        'grpo.max_new_tokens': 64})
  first = tmp_path / 'first'
  first.mkdir()
  (first / 'data_record.json').write_text(json.dumps({'rlhf_proxies_val_fraction': 0.05}))  # as it started
  (first / 'config.json').write_text(config(pretrained, first_proxy).to_json_best_effort())
  (tmp_path / 'first_proxy' / 'config.json').write_text(json.dumps(
      {'task': 'reward_model', 'reward_model': {'source': source, 'val_fraction': 0.3}}))  # retrained in place
  wide = _proxy_config(tmp_path / 'wide', source=source, val_fraction=0.3)
  task = rlhf._prompt_task(config(first, wide), tok)
  trained = {request_words(p.chosen[0]['content']) for p in preferences.load(source, data_dir, 0.05, 0)[0]}
  _, val = preferences.load(source, data_dir, 0.3, 0)
  held = task.heldout(10**6)
  assert held and not {request_words(p.prompt_messages[0]['content']) for p in held} & trained
  left_out = {json.dumps(p.chosen[:-1]) for p in val if request_words(p.chosen[0]['content']) in trained}
  assert task.left_out == len(left_out) > 0


def test_rlhf_records_how_many_held_out_prompts_it_evaluates_and_warns_when_fewer_than_asked(tmp_path, hh_sft, data_dir,
                                                                                         caplog):
  """A preference source may hold out fewer prompts than rlhf.eval_prompts asks for (the proxy's
  val_fraction, less the prompts the policy's SFT trained on and those too long for the window):
  summary.json says how many each eval point samples, and the log says it is fewer, naming the knob."""
  from llm import chat_template
  from llm.data import preferences
  from llm.tasks import rlhf
  source = 'hh_rlhf_harmless_base'
  proxy = _proxy_config(tmp_path / 'proxy', source=source, val_fraction=0.1)
  tok = tokenizer_lib.load_any(hh_sft / 'tokenizer.model')  # the policy's, as data() loads it
  opened = hh_sft_openings(hh_sft, data_dir, tok)
  _, val = preferences.load(source, data_dir, 0.1, 0)
  fresh = {json.dumps(p.chosen[:-1], sort_keys=True): p.chosen[:-1] for p in val
           if request_words(p.chosen[0]['content']) not in opened}
  held_out = sum(len(chat_template.render_prompt(tok, m)) + 64 <= 256 for m in fresh.values())

  def facts(eval_prompts):
    config = tiny_rlhf_config(**{'init_from': str(hh_sft), 'rlhf.prompts': source, 'rlhf.proxy': proxy,
                                 'rlhf.eval_prompts': eval_prompts, 'train.seq_len': 256, 'grpo.max_new_tokens': 64})
    return rlhf.make_task(config).data(config, tmp_path / f'run{eval_prompts}').facts

  assert 2 < held_out < 1000
  with caplog.at_level('WARNING'):
    assert facts(2)['rlhf_heldout_prompts'] == 2
    assert 'rlhf.eval_prompts' not in caplog.text
    assert facts(1000)['rlhf_heldout_prompts'] == held_out
  warned = [r.getMessage() for r in caplog.records if 'rlhf.eval_prompts=1000' in r.getMessage()]
  assert len(warned) == 1 and f'samples the {held_out} held-out' in warned[0]
  assert 'reward_model.val_fraction' in warned[0]


def test_resuming_rlhf_whose_proxies_split_the_prompts_elsewhere_is_refused(tmp_path, pretrained, data_dir):
  """A preference source's training prompts are those left by the split at the proxies' val_fraction,
  and the checkpoint's data position is an index into them: a resume whose proxies give another
  fraction (another proxy, or the same one retrained) would read on in another list. Another proxy
  of the same fraction gives the same list."""
  import re
  from llm import train
  from llm.tasks import rlhf
  source = 'hh_rlhf_harmless_base'
  started, same, narrow = (_proxy_config(tmp_path / name, source=source, val_fraction=fraction)
                           for name, fraction in (('started', 0.1), ('same', 0.1), ('narrow', 0.05)))
  workdir = tmp_path / 'run'
  workdir.mkdir()  # as the loop makes it, before task.data
  config = lambda proxy: tiny_rlhf_config(**{'init_from': str(pretrained), 'rlhf.prompts': source,
                                             'rlhf.proxy': proxy})
  checkpointer = types.SimpleNamespace(close=lambda: None)  # the check closes it before refusing

  def resume(proxy):  # from a checkpoint of step 2, as the loop checks it
    task = rlhf.make_task(config(proxy))
    train._check_same_record(checkpointer, 2, task.data(config(proxy), workdir).record, task.record_before, workdir)

  record = rlhf.make_task(config(started)).data(config(started), workdir).record
  (workdir / train.DATA_RECORD).write_text(json.dumps(record))  # as the loop writes it when the run starts
  refused = lambda before, now, where: (rf'{re.escape(str(workdir))} resumes from step 2 on other data than it started '
                                        rf'with \(rlhf_proxies_val_fraction: {re.escape(str(before))} -> '
                                        rf'{re.escape(str(now))}; what it started with from {re.escape(where)}\): '
                                        r'.*: resume with the run.s own settings and code, or train on from its '
                                        r'weights in a new --workdir')
  with pytest.raises(ValueError, match=refused(0.1, 0.05, 'data_record.json')):
    resume(narrow)
  resume(same)
  (tmp_path / 'same' / 'config.json').write_text(json.dumps(
      {'task': 'reward_model', 'reward_model': {'source': source, 'val_fraction': 0.05}}))  # retrained in place
  with pytest.raises(ValueError, match=refused(0.1, 0.05, 'data_record.json')):
    resume(same)
  # A run started before the record was kept: the split it kept in rlhf_split.json ...
  (workdir / train.DATA_RECORD).unlink()
  (workdir / 'rlhf_split.json').write_text(json.dumps({'val_fraction': 0.05, 'proxy': narrow}))
  resume(narrow)
  with pytest.raises(ValueError, match=refused(0.05, 0.1, 'rlhf_split.json, kept by runs started before '
                                                         'data_record.json')):
    resume(started)
  # ... and one started before that split at 0.1, whatever its proxy's fraction.
  (workdir / 'rlhf_split.json').unlink()
  resume(started)
  with pytest.raises(ValueError, match=refused(0.1, 0.05, 'the default every run used before data_record.json or '
                                                         'rlhf_split.json was kept')):
    resume(narrow)


def test_a_broken_rlhf_data_record_is_refused_with_advice_that_lets_the_resume_pass(tmp_path, pretrained):
  """Advised to remove a data_record.json that is not JSON, an RLHF run whose proxies split at 0.2 then
  took the default split of runs older than the record for its own, 0.1: its resume was refused, and
  the runs trained on from it held out the wrong prompts. The advice is to write the record instead."""
  from llm import train
  from llm.tasks import rlhf
  source = 'hh_rlhf_harmless_base'
  proxy = _proxy_config(tmp_path / 'proxy', source=source, val_fraction=0.2)
  config = tiny_rlhf_config(**{'init_from': str(pretrained), 'rlhf.prompts': source, 'rlhf.proxy': proxy})
  workdir = tmp_path / 'run'
  workdir.mkdir()
  task = rlhf.make_task(config)
  record = task.data(config, workdir).record
  resume = lambda: train._check_same_record(None, 2, record, task.record_before, workdir)  # pylint: disable=protected-access
  broken = workdir / 'data_record.json'
  broken.write_text('{"rlhf_proxies_val_fr')  # cut short
  stand_in = ('(removed, the default every run used before data_record.json or rlhf_split.json was kept would '
              'stand in for it)')
  with pytest.raises(ValueError) as resumed:
    resume()
  assert str(resumed.value) == (
      f'{broken} is not valid JSON (Unterminated string starting at: line 1 column 2); restore it, or write in its '
      'place the record the run started with, {"rlhf_proxies_val_fraction": 0.2} where it started on the data this '
      f'code builds {stand_in}')
  with pytest.raises(ValueError) as split:  # as a run trained on from this one reads it: no record of its own to show
    rlhf.started_split(workdir)
  assert str(split.value) == (
      f'{broken} is not valid JSON (Unterminated string starting at: line 1 column 2); restore it, or write in its '
      f'place the record the run started with, {{"rlhf_proxies_val_fraction": <as it started>}} {stand_in}')
  broken.write_text('{"rlhf_proxies_val_fraction": 0.2}')  # as advised
  resume()
  assert rlhf.started_split(workdir) == 0.2


def test_prompts_all_trained_on_up_the_chain_are_refused_naming_every_kind_of_run(data_dir, tok):
  """Every held-out prompt left out as trained on: the error names each kind of run that counts, as
  RLHF and reward-model runs up the chain count too, not only SFT."""
  from llm.data import conversations, preferences
  source = 'hh_rlhf_harmless_base'
  _, val = preferences.load(source, data_dir, 0.1, 0)
  everything = frozenset(conversations.request_key(p.chosen) for p in val)
  with pytest.raises(ValueError, match=rf'{source}: the runs up the policy\'s init_from chain trained on the opening '
                     rf'requests of all {len({json.dumps(p.chosen[:-1]) for p in val})} held-out prompts \(SFT on '
                     r'sft.mixture sources hh_chosen, refusals, alpaca_gpt4, RLHF on its training prompts, a reward '
                     r'model on its training pairs\)'):
    preferences.PromptTask(source, data_dir, tok, 256, 64, 0.1, everything)


def test_hacking_report_without_out_is_refused_naming_it_and_with_one_says_where_it_wrote(tmp_path, python_env):
  """--out defaulted to results/reward_hacking: a report run without it overwrote the committed study."""
  command = [sys.executable, '-m', 'llm.rl.hacking_report']
  r = subprocess.run(command, cwd=tmp_path, env=python_env, capture_output=True, text=True, timeout=120)
  assert r.returncode == 1 and 'Traceback' not in r.stderr and '--out' in r.stderr.splitlines()[0], r.stderr
  assert list(tmp_path.iterdir()) == []
  r = subprocess.run([*command, f'--out={tmp_path / "out"}'], cwd=tmp_path, env=python_env, capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip().splitlines()[-1] == f'wrote the report to {tmp_path / "out"}'
  assert (tmp_path / 'out' / 'table.md').is_file()
