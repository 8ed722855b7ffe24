"""Reward models: the Bradley-Terry loss, learning a toy preference, the gold rubric and pairs, the
preference readers, and task=reward_model in the training loop (sharded, killed, resumed)."""
import contextlib
import dataclasses
import gzip
import json
import math
import re
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import ROOT, hh_sft_openings, request_words, kill_then_resume, losses_by_step, xla_flags
from llm import model as model_lib, train
from llm.data import preferences
from llm.rl import gold, reward_model


def test_bradley_terry_gradient_pushes_chosen_above_rejected():
  r_c, r_r = jnp.array([0.0, 1.0, -2.0]), jnp.array([0.0, 2.0, -1.0])
  loss = lambda c, r: reward_model.bradley_terry(c, r)[0]
  g_c, g_r = jax.grad(loss, argnums=(0, 1))(r_c, r_r)
  assert (g_c < 0).all() and (g_r > 0).all()  # descent raises chosen, lowers rejected
  # d/d r_c of -log sigmoid(r_c - r_r) is -(1 - sigmoid(r_c - r_r)): -0.5 at a tie.
  np.testing.assert_allclose(g_c, -(1 - jax.nn.sigmoid(r_c - r_r)), rtol=1e-6)
  np.testing.assert_allclose(loss(r_c[:1], r_r[:1]), np.log(2), rtol=1e-6)
  # Gradient steps on the scores alone widen the gap until every pair is ranked right.
  for _ in range(50):
    g_c, g_r = jax.grad(loss, argnums=(0, 1))(r_c, r_r)
    r_c, r_r = r_c - 0.5 * g_c, r_r - 0.5 * g_r
  assert (r_c > r_r).all()
  _, _, aux = reward_model.bradley_terry(r_c, r_r)
  assert float(aux['accuracy'][0]) == 3.0


def test_margin_and_centring_enter_the_loss_as_trl_defines_them():
  r_c, r_r = jnp.array([2.0]), jnp.array([1.0])
  with_margin, n, _ = reward_model.bradley_terry(r_c, r_r, margin_B=jnp.array([1.0]))
  np.testing.assert_allclose(with_margin / n, np.log(2), rtol=1e-6)  # -log sigmoid(2 - 1 - 1)
  centred, _, _ = reward_model.bradley_terry(r_c, r_r, center_coefficient=0.1)
  np.testing.assert_allclose(centred, np.log1p(np.exp(-1.0)) + 0.1 * 9.0, rtol=1e-6)
  # The centring term pulls a shared offset back to 0 without changing the ranking term.
  g = jax.grad(lambda o: reward_model.bradley_terry(r_c + o, r_r + o, center_coefficient=0.1)[0])(0.0)
  np.testing.assert_allclose(g, 0.1 * 2 * 3.0 * 2, rtol=1e-6)


def _tiny_scalar_model(vocab=16, T=8):
  cfg = model_lib.ModelConfig(vocab_size=vocab, num_layers=1, num_heads=2, num_kv_heads=2, dim=32, mlp_dim=64,
                              max_seq_len=T, position='learned', norm='layernorm', mlp='gelu', qk_norm=False,
                              tied_embeddings=True, rope_theta=1e4, dtype='float32', remat='none',
                              scan_layers=False, init_std=0.02, head='scalar')
  return model_lib.Transformer(cfg)


def _toy_pairs(rng, n, T=8):
  """Rows of random tokens 3..15 ending in token 2 (the scoring position); the chosen row holds a 1
  somewhere, the rejected one a 0: separable by the presence of one token."""
  def rows(mark):
    tokens = rng.integers(3, 16, size=(n, T))
    tokens[np.arange(n), rng.integers(0, T - 1, size=n)] = mark
    tokens[:, -1] = 2
    return tokens.astype(np.int32)
  end = np.full(n, T - 1, np.int32)
  return {'chosen': rows(1), 'rejected': rows(0), 'chosen_end': end, 'rejected_end': end}


def test_a_reward_model_learns_a_separable_toy_preference():
  model = _tiny_scalar_model()
  rng = np.random.default_rng(0)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params']
  assert 'reward_head' in params and 'lm_head' not in params
  tx = optax.adam(3e-3)
  cfg = ml_collections.ConfigDict(dict(use_margin=False, center_rewards_coefficient=0.0))
  step = jax.jit(train.make_train_step(model, tx, lambda s: 3e-3, reward_model.make_loss_fn(cfg), grad_accum=1))
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  heldout = _toy_pairs(np.random.default_rng(1), 256)
  score = jax.jit(lambda p, b: reward_model.pair_scores(model, p, b))
  before = np.mean(np.subtract(*score(params, heldout)) > 0)
  for _ in range(150):
    state, metrics = step(state, _toy_pairs(rng, 32))
  r_c, r_r = score(state.params, heldout)
  assert 0.2 < before < 0.8  # chance at the start
  assert np.mean(np.asarray(r_c) > np.asarray(r_r)) > 0.97
  assert float(metrics['accuracy']) > 0.9 and float(metrics['margin']) > 1.0


def test_scores_are_read_at_the_end_of_turn():
  """The score of a row is the head's value at its last <|end|>: a token after it changes nothing."""
  model = _tiny_scalar_model()
  params = model.init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))['params']
  tokens = np.array([[5, 6, 7, 2, 0, 0, 0, 0], [5, 6, 7, 2, 9, 9, 9, 9]], np.int32)
  _, end = reward_model.pad_rows([list(t) for t in tokens], 8, 0, end_id=2, assistant_id=4)
  assert end.tolist() == [3, 3]
  r = reward_model.scores_at(model.apply({'params': params}, tokens), jnp.asarray(end))
  assert float(r[0]) == float(r[1])
  cut, end = reward_model.pad_rows([[5, 6, 7, 8, 9, 10, 11, 12, 13]], 8, 0, end_id=2, assistant_id=4)
  assert end.tolist() == [7] and cut.shape == (1, 8)  # cut short: scored at its last token
  # A response that never closed its turn (user turn, <|end|>, assistant turn 4, the response):
  # scored at its last token, not at the user turn's <|end|>, so what it says counts.
  _, end = reward_model.pad_rows([[3, 5, 2, 4, 6, 7], [3, 5, 2, 4, 6, 7, 2]], 8, 0, end_id=2, assistant_id=4)
  assert end.tolist() == [5, 6]


def test_gold_rubric_on_hand_written_responses():
  on = 'The river is old. The river is cold.'
  assert gold.components('river', on) == {'relevance': 1.0, 'length': 8 / 30, 'repetition': 0.0}
  half = gold.components('river', 'The river is old. The horse is cold.')
  assert half['relevance'] == 0.5
  # 'river' as a word only: 'rivers' and 'riverbank' do not count.
  assert gold.components('river', 'The riverbank is old.')['relevance'] == 0.0
  repeated = gold.components('river', 'The river is old. The river is old. The river is old.')
  assert repeated['repetition'] == pytest.approx(-1.5 * 2 / 3)
  long = ' '.join(['The river is very old and cold today.'] * 1) + ' ' + ' '.join(
      f'Word{i} number {i} here.' for i in range(15))
  words = len(long.split())
  assert words > gold.MAX_GOOD_WORDS
  assert gold.components('river', long)['length'] == pytest.approx(1 - (words - 45) / 15)
  assert gold.gold_reward('river', '') == 0.0
  # Gold peaks in length: 30-45 words beat 10, and rambling to 75 words is worse than 10.
  ten, forty, seventy_five = (' '.join(['The river is good.'] * 1 + [f'A{i} b c d.' for i in range(k)])
                              for k in (1, 9, 18))
  assert gold.gold_reward('river', forty) > gold.gold_reward('river', ten) > gold.gold_reward('river', seventy_five)


def test_gold_pairs_are_labelled_by_gold_and_noise_flips_a_quarter():
  clean = gold.pairs(400, seed=3)
  assert all(gold.gold_reward(gold.topic_of(p.prompt), p.chosen) - gold.gold_reward(gold.topic_of(p.prompt), p.rejected)
             == pytest.approx(p.gold_margin) and p.gold_margin >= 0.1 for p in clean)
  noisy = gold.pairs(2000, seed=3, noise=0.25)
  flipped = [p for p in noisy if p.flipped]
  assert 0.21 < len(flipped) / len(noisy) < 0.29
  assert all(gold.gold_reward(gold.topic_of(p.prompt), p.chosen) < gold.gold_reward(gold.topic_of(p.prompt), p.rejected)
             for p in flipped)
  heldout = gold.pairs(100, seed=3, noise=0.25, heldout=True)
  assert not any(p.flipped for p in heldout)
  assert {gold.topic_of(p.prompt) for p in heldout} <= set(gold.HELDOUT_TOPICS)
  assert not {gold.topic_of(p.prompt) for p in clean} & set(gold.HELDOUT_TOPICS)


def test_seen_topic_pairs_are_training_topics_never_trained_on():
  first = preferences.gold_seen_topic_pairs([], 200, seed=0)
  train = [preferences.Pair(p.rejected, p.chosen, p.margin) for p in first[:50]]  # trained on, label flipped
  seen = preferences.gold_seen_topic_pairs(train, 200, seed=0)
  key = lambda p: frozenset((json.dumps(p.chosen), json.dumps(p.rejected)))
  assert len(seen) == 200 and not {key(p) for p in seen} & {key(p) for p in train}
  assert {key(p) for p in seen} >= {key(p) for p in first[50:]}  # only the trained-on ones left out
  topics = {gold.topic_of(p.chosen[:1]) for p in seen}
  assert topics <= set(gold.TOPICS) - set(gold.HELDOUT_TOPICS) and len(topics) > 20
  assert all(gold.gold_reward(gold.topic_of(p.chosen[:1]), p.chosen[1]['content'])
             > gold.gold_reward(gold.topic_of(p.chosen[:1]), p.rejected[1]['content']) for p in seen)  # true labels


def test_accuracy_by_gap_buckets_pairs_by_their_gold_gap():
  from llm.tasks import reward_model as rm_task
  diff = np.array([0.5, -0.1, 0.0, 2.0, 1.0, -3.0, 0.2])
  gap = np.array([0.1, 0.15, 0.19, 0.3, 0.9, 1.5, 5.0])
  # [0.1, 0.2): 1 of 3 right (a tie is wrong); [0.2, 0.4): 1 of 1; nothing in [0.4, 0.8); [0.8, inf): 2 of 3
  assert rm_task.accuracy_by_gap(diff, gap) == {0.1: pytest.approx(1 / 3), 0.2: 1.0, 0.8: pytest.approx(2 / 3)}


def test_length_baseline_counts_ties_half():
  rendered = {'chosen_len': np.array([5, 3, 4, 1]), 'rejected_len': np.array([2, 3, 9, 0])}
  assert preferences.length_baseline(rendered) == (1 + 0.5 + 0 + 1) / 4


def _prompts(pairs):
  return {json.dumps(p.chosen[:-1]) for p in pairs}


def test_pairs_of_one_prompt_land_on_one_side_of_the_split():
  # AlpacaEval's shape: each instruction judged three times, one reference answer in every pair.
  def pair(i, model):
    user = {'role': 'user', 'content': f'instruction {i}'}
    return preferences.Pair([user, {'role': 'assistant', 'content': f'reference answer {i}'}],
                            [user, {'role': 'assistant', 'content': f'model {model} answer {i}'}])
  pairs = [pair(i, model) for model in range(3) for i in range(200)]
  train, val = preferences.split(pairs + pairs[:5], 0.1)  # 5 duplicates, dropped
  assert len(train) + len(val) == 600 and 0.05 < len(val) / 600 < 0.15
  assert not _prompts(train) & _prompts(val)
  assert len(val) == 3 * len(_prompts(val))  # each held-out prompt with all three of its pairs
  assert (train, val) == preferences.split(list(reversed(pairs)), 0.1)


def test_real_preference_pairs_are_read_and_split_by_prompt(data_dir):
  hh = preferences.hh_pairs(data_dir)
  assert len(hh) > 2000
  assert all(p.chosen[-1]['role'] == p.rejected[-1]['role'] == 'assistant' and p.chosen != p.rejected for p in hh[:50])
  alpaca = preferences.alpaca_pairs(data_dir)
  assert len(alpaca) > 2000
  train, val = preferences.split(hh, 0.1)
  again_train, again_val = preferences.split(list(reversed(hh)), 0.1)
  assert val == again_val and 0.05 < len(val) / len(hh) < 0.15
  assert not {json.dumps(p.chosen) + json.dumps(p.rejected) for p in train} & {
      json.dumps(p.chosen) + json.dumps(p.rejected) for p in val}
  train, val = preferences.split(alpaca, 0.1)
  assert 0.05 < len(val) / len(alpaca) < 0.15 and not _prompts(train) & _prompts(val)


def _write_hh(data_dir, records):
  path = data_dir / 'hh_rlhf_harmless_base' / 'test.jsonl.gz'
  path.parent.mkdir(parents=True)
  with gzip.open(path, 'wt') as f:
    f.writelines(json.dumps(r) + '\n' for r in records)
  return path


def _write_alpaca(data_dir, text):
  path = data_dir / 'alpaca_eval_ai_preferences' / 'some_model' / 'annotations.json'
  path.parent.mkdir(parents=True)
  path.write_text(text)
  return path


def _no_alpaca_annotations(data_dir, _):
  """The source's folder with no annotations.json in it; the files alpaca_pairs reads."""
  (data_dir / 'alpaca_eval_ai_preferences').mkdir()
  return data_dir / 'alpaca_eval_ai_preferences' / '*' / 'annotations.json'


_GOOD_HH = {'chosen': '\n\nHuman: hi\n\nAssistant: hello', 'rejected': '\n\nHuman: hi\n\nAssistant: go away'}
_GOOD_ALPACA = {'instruction': 'Say hi.', 'output_1': 'Hi!', 'output_2': 'No.', 'preference': 1.0}


@pytest.mark.parametrize('source, write, content, message', [
    ('hh_rlhf_harmless_base', _write_hh, [_GOOD_HH, {'prompt': 'hi', 'chosen_text': 'x'}],
     r": record 2 has no field 'chosen' \(keys: \['chosen_text', 'prompt'\]\); the file should hold JSONL records"),
    ('hh_rlhf_harmless_base', _write_hh, [dict(_GOOD_HH, rejected=3)],
     r": record 1's 'rejected' is a int, not a string; "),
    ('alpaca_eval_ai_preferences', _write_alpaca, '{"not": "a list"}', r' holds a JSON dict, not a list: '),
    ('alpaca_eval_ai_preferences', _write_alpaca, '[{"a": 1},\n', r' is not valid JSON \(Expecting value: line 2 '),
    ('alpaca_eval_ai_preferences', _write_alpaca, json.dumps([_GOOD_ALPACA, 'text']),
     r': record 2 is a str, not an object: '),
    ('alpaca_eval_ai_preferences', _write_alpaca,
     json.dumps([_GOOD_ALPACA, {'prompt': 'q', 'output_1': 'a', 'output_2': 'b', 'preference': 2.0}]),
     r": record 2 has no field 'instruction' \(keys: "),
    ('alpaca_eval_ai_preferences', _write_alpaca, json.dumps([dict(_GOOD_ALPACA, preference='first')]),
     r": record 1 has preference 'first', not a number: 1 means output_1 won"),
])
def test_a_malformed_preference_file_is_refused_naming_the_file_record_and_field(tmp_path, source, write, content,
                                                                               message):
  path = write(tmp_path, content)
  with pytest.raises(ValueError, match='^' + re.escape(str(path)) + message):
    preferences.load(source, tmp_path, 0.1, 0)


@pytest.mark.parametrize('source, write, content, message', [
    ('hh_rlhf_harmless_base', _write_hh, [], r'no preference pairs in {path}: source hh_rlhf_harmless_base reads '
                                             r"JSONL records whose 'chosen' and 'rejected' are dialogues"),
    # The speakers without the blank lines before them: no record is a dialogue.
    ('hh_rlhf_harmless_base', _write_hh, [{'chosen': 'Human: hi Assistant: hello', 'rejected': 'Human: hi Assistant: no'}],
     r'no preference pairs in {path}: '),
    ('alpaca_eval_ai_preferences', _no_alpaca_annotations, None,
     r'no preference pairs in {path}: source alpaca_eval_ai_preferences reads a JSON list of records'),
    ('hh_rlhf_harmless_base', _write_hh,
     [{'chosen': f'\n\nHuman: hi\n\nAssistant: hello {i}', 'rejected': '\n\nHuman: hi\n\nAssistant: no'} for i in range(9)],
     r'{path}: all 9 preference pairs share one prompt, which leaves none to hold out'),
])
def test_a_source_with_no_pairs_or_one_prompt_is_refused_naming_its_file(tmp_path, source, write, content, message):
  """Not as a seq_len too short for the pairs (0 read), nor as 'the corpus is one document' (one prompt)."""
  path = write(tmp_path, content)
  with pytest.raises(ValueError, match='^' + message.replace('{path}', re.escape(str(path)))):
    preferences.load(source, tmp_path, 0.1, 0)


def test_too_few_gold_pairs_for_a_batch_are_not_blamed_on_seq_len(pretrained):
  from tiny_config import tiny_reward_model_config
  from llm.tasks import reward_model as rm_task
  config = tiny_reward_model_config(**{'init_from': str(pretrained), 'reward_model.gold_pairs': 5})
  with pytest.raises(ValueError) as error:
    rm_task.data(config, workdir=None)
  assert str(error.value) == ('gold: 5 training and 24 held-out pairs, fewer than a batch of train.batch_size=8: '
                              'raise reward_model.gold_pairs or lower train.batch_size')


def _rm_cmd(workdir, pretrained, *extra):
  return [sys.executable, '-m', 'llm.main', f'--config={ROOT}/tests/tiny_config.py:reward_model',
          f'--workdir={workdir}', f'--config.init_from={pretrained}', *extra]


def test_reward_model_shards_over_eight_devices_and_resumes_after_a_kill(tmp_path, pretrained, subprocess_env):
  """The same run on one device straight through and on 8 (data 4 x fsdp 2), killed after its
  checkpoint of step 2 and resumed: the same losses, and held-out accuracy in metrics.jsonl."""
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  subprocess.run(_rm_cmd(straight, pretrained), env=subprocess_env, check=True, capture_output=True)
  eight = dict(subprocess_env, XLA_FLAGS=xla_flags(8))
  kill_then_resume(_rm_cmd(resumed, pretrained, '--config.mesh.data=4', '--config.mesh.fsdp=2'), eight, resumed,
                   kill_after_checkpoint=2, total=8)
  a, b = losses_by_step(straight), losses_by_step(resumed)
  assert sorted(b) == list(range(1, 9))
  np.testing.assert_allclose([a[s] for s in range(1, 9)], [b[s] for s in range(1, 9)], rtol=2e-4)
  rows = [json.loads(l) for l in (resumed / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows if 'rm_val_accuracy' in r] == [0, 4, 8]
  assert [r['step'] for r in rows if 'rm_val_seen_topics_accuracy' in r] == [0, 4, 8]
  assert all(any(k.startswith('rm_val_seen_topics_accuracy_gap_') for k in r) for r in rows if 'rm_val_accuracy' in r)
  assert all('accuracy' in r and 'margin' in r for r in rows if 'loss' in r)
  summary = json.loads((resumed / 'summary.json').read_text())
  assert summary['devices'] == 8 and 0 <= summary['rm_val_accuracy'] <= 1
  assert summary['rm_train_pairs'] == 200 and 0 < summary['rm_val_length_baseline'] < 1
  assert 0 <= summary['rm_val_seen_topics_accuracy'] <= 1 and 0 < summary['rm_val_seen_topics_length_baseline'] < 1


def test_init_state_takes_the_trunk_from_init_from_and_keeps_the_fresh_head(pretrained, cache_dir):
  from tiny_config import tiny_reward_model_config
  from llm import init_from, sharding
  from llm.tasks import reward_model as rm_task
  config = tiny_reward_model_config(cache_dir, init_from=str(pretrained))
  setup = train.build(config, 512, sharding.make_mesh(config.mesh))
  with setup.context():
    fresh = setup.init(jax.random.key(7))
    head = np.asarray(fresh.params['reward_head'])
    state = rm_task.init_state(config, fresh, setup.abstract_state)
    lm = init_from.base_params(config.copy_and_resolve_references(), {
        k: v for k, v in setup.abstract_state.params.items() if k != 'reward_head'})
  jax.tree.map(np.testing.assert_array_equal, {k: v for k, v in state.params.items() if k != 'reward_head'}, lm)
  np.testing.assert_array_equal(state.params['reward_head'], head)
  assert not np.array_equal(np.asarray(state.params['embed']['embedding']),
                            np.asarray(fresh.params['embed']['embedding']))


def test_reward_model_refuses_a_language_model_head(tmp_path, pretrained, subprocess_env):
  result = subprocess.run(_rm_cmd(tmp_path, pretrained, '--config.model.head=lm'), env=subprocess_env,
                          capture_output=True, text=True)
  assert result.returncode != 0 and 'model.head=scalar' in result.stderr.splitlines()[-1]


@pytest.mark.parametrize('setting, value', [('reward_model.gold_val_pairs', 0),
                                            ('reward_model.val_fraction', 0.0), ('reward_model.val_fraction', 1.0)])
def test_a_setting_that_leaves_no_held_out_pairs_is_refused_by_name(setting, value, pretrained):
  """Named as the setting it is, not as train.seq_len's fault or as config.data.val_fraction."""
  from tiny_config import tiny_reward_model_config
  from llm.tasks import reward_model as rm_task
  overrides = {setting: value, 'init_from': str(pretrained)}
  if setting == 'reward_model.val_fraction':  # the real sources split by it; gold holds gold_val_pairs out
    overrides['reward_model.source'] = 'hh_rlhf_harmless_base'
  with pytest.raises(ValueError, match='^' + re.escape(f'{setting}={value} ')):
    rm_task.data(tiny_reward_model_config(**overrides), workdir=None)


def test_held_out_pairs_leave_out_the_prompts_the_trunks_sft_trained_on(hh_sft, data_dir):
  """configs/reward_model_hh.py's trunk trained on hh-rlhf's chosen dialogues (hh_chosen): a held-out
  pair whose dialogue SFT trained on is one the reward model may know by familiarity."""
  from tiny_config import tiny_reward_model_config
  from llm import tokenizer as tokenizer_lib
  from llm.tasks import reward_model as rm_task
  source = 'hh_rlhf_harmless_base'
  config = tiny_reward_model_config(**{'init_from': str(hh_sft), 'reward_model.source': source,
                                       'reward_model.truncate': True})
  facts = rm_task.data(config, workdir=None).facts
  opened = hh_sft_openings(hh_sft, data_dir, tokenizer_lib.load_any(hh_sft / 'tokenizer.model'))
  _, val = preferences.load(source, data_dir, config.reward_model.val_fraction, 0)
  trained = [p for p in val if request_words(p.chosen[0]['content']) in opened]
  assert 0 < len(trained) < len(val) and facts['rm_val_left_out_trained'] == len(trained)
  assert 0 < facts['rm_val_pairs'] <= len(val) - len(trained)


def test_held_out_pairs_leave_out_the_prompts_a_reward_model_up_the_chain_trained_on(tmp_path, pretrained, data_dir):
  """A reward model trained on from another's weights, holding out more of the source: the pairs
  whose prompt the first trained on are no held-out pairs of the second."""
  from tiny_config import tiny_reward_model_config
  from llm.tasks import reward_model as rm_task
  source = 'hh_rlhf_harmless_base'
  config = lambda init_from, val_fraction: tiny_reward_model_config(**{
      'init_from': str(init_from), 'reward_model.source': source, 'reward_model.val_fraction': val_fraction,
      'reward_model.truncate': True})
  first = tmp_path / 'first'  # reads as a finished reward model run of pretrained (no checkpoint)
  first.mkdir()
  (first / 'config.json').write_text(config(pretrained, 0.1).to_json_best_effort())
  for name in ('summary.json', 'tokenizer.model'):
    (first / name).write_bytes((pretrained / name).read_bytes())
  facts = rm_task.data(config(first, 0.3), workdir=None).facts
  trained = {request_words(p.chosen[0]['content']) for p in preferences.load(source, data_dir, 0.1, 0)[0]}
  _, val = preferences.load(source, data_dir, 0.3, 0)
  assert facts['rm_val_left_out_trained'] == sum(request_words(p.chosen[0]['content']) in trained for p in val) > 0


class _Tok:
  pad_id = 0
  vocab_size = 16

  @staticmethod
  def special_id(name):
    return {'<|end|>': 2, '<|assistant|>': 1}[name]


def test_scorer_scores_in_fixed_blocks_as_one_row_at_a_time():
  """Seven sequences of different lengths through blocks of 4 rows (the last padded) score as each
  would alone, at its last <|end|>."""
  from llm import config as config_lib, sharding
  model = _tiny_scalar_model()
  params = model.init(jax.random.key(2), jnp.zeros((1, 8), jnp.int32))['params']
  mesh_cfg = config_lib.base_config().mesh
  scorer = reward_model.Scorer(model.cfg, params, _Tok(), sharding.make_mesh(mesh_cfg),
                               sharding.logical_rules(mesh_cfg.rules), seq_len=8, batch=4)
  rng = np.random.default_rng(3)
  sequences = [list(rng.integers(3, 16, size=k)) + [2] + list(rng.integers(3, 16, size=7 - k)) for k in range(7)]
  scores = scorer.score(sequences)
  alone = [float(model.apply({'params': params}, jnp.asarray([s]))[0, s.index(2)]) for s in sequences]
  np.testing.assert_allclose(scores, alone, rtol=1e-5, atol=1e-6)
  assert scorer.score([]).shape == (0,)
  with pytest.raises(ValueError, match="head='scalar'"):
    reward_model.Scorer(dataclasses.replace(model.cfg, head='lm'), params, _Tok(), sharding.make_mesh(mesh_cfg),
                        sharding.logical_rules(mesh_cfg.rules), seq_len=8, batch=4)


class _ReadsItsTokens:
  """A stand-in reward model whose score at each position is the token id there."""

  def apply(self, variables, tokens_BxT):
    return tokens_BxT.astype(jnp.float32)


def test_held_out_metrics_of_known_score_differences():
  """Five pairs scored by _ReadsItsTokens, r_c - r_r = 2, -3, 0 (a tie: wrong), 5, 1, in blocks of 2
  (the last padded with a copy of pair 5, not counted): accuracy 3/5, margin 1, loss the mean of
  log(1 + exp(-d))."""
  from llm import sharding
  from llm.tasks import reward_model as rm_task
  from tiny_config import tiny_reward_model_config
  config = tiny_reward_model_config(**{'train.batch_size': 2})
  chosen_scores, rejected_scores = [3, 1, 2, 5, 1], [1, 4, 2, 0, 0]
  n = len(chosen_scores)
  # Read at position 1 of the chosen rows and 2 of the rejected; the other positions would say otherwise.
  val = {'chosen': np.array([[9, c, 9, 9] for c in chosen_scores], np.int32),
         'rejected': np.array([[0, 0, r, 0] for r in rejected_scores], np.int32),
         'chosen_end': np.full(n, 1, np.int32), 'rejected_end': np.full(n, 2, np.int32),
         'margin': np.zeros(n, np.float32)}
  empty = {k: v[:0] for k, v in val.items()}
  setup = types.SimpleNamespace(model=_ReadsItsTokens(), mesh=sharding.make_mesh(config.mesh),
                                context=contextlib.nullcontext)
  data = types.SimpleNamespace(heldout={'rm_val': val, 'rm_val_seen_topics': empty})
  np.testing.assert_array_equal(rm_task._score_differences(config, setup, {}, val, {}), [2, -3, 0, 5, 1])
  metrics = rm_task.heldout_metrics(config, setup, {}, data, {})
  loss = sum(math.log(1 + math.exp(-d)) for d in (2, -3, 0, 5, 1)) / 5
  assert metrics == {'rm_val_accuracy': pytest.approx(0.6), 'rm_val_margin': pytest.approx(1.0),
                     'rm_val_loss': pytest.approx(loss)}


class _CharTok(_Tok):
  """One id per character (3 + ord % 10), bos 1, <|end|> 2, every other special token 0."""
  bos_id = 1

  @staticmethod
  def special_id(name):
    return 2 if name == '<|end|>' else 0

  @staticmethod
  def encode(text):
    return [3 + ord(ch) % 10 for ch in text]


def test_long_responses_are_dropped_or_cut_to_fit_with_their_turn_closed():
  user = {'role': 'user', 'content': 'hi'}
  pair = preferences.Pair([user, {'role': 'assistant', 'content': 'x' * 30}],
                          [user, {'role': 'assistant', 'content': 'ok'}])
  # bos, <|user|>, 'hi', <|end|>, <|assistant|> = a 6-token prompt; the long side renders to 37 tokens.
  dropped, n = preferences.render([pair], _CharTok(), 16)
  assert n == 1 and len(dropped['chosen']) == 0
  cut, n = preferences.render([pair], _CharTok(), 16, truncate=True)
  assert n == 0
  hi, x = [3 + ord('h') % 10, 3 + ord('i') % 10], 3 + ord('x') % 10
  assert cut['chosen'][0].tolist() == [1, 0] + hi + [2, 0] + [x] * 9 + [2]
  assert cut['chosen_end'].tolist() == [15] and cut['rejected_end'].tolist() == [8]
  assert cut['chosen_len'].tolist() == [30]  # the length baseline sees the whole response
  long_prompt = preferences.Pair([{'role': 'user', 'content': 'q' * 20}, pair.chosen[1]],
                                 [{'role': 'user', 'content': 'q' * 20}, pair.rejected[1]])
  assert preferences.render([long_prompt], _CharTok(), 16, truncate=True)[1] == 1  # no room for a response


def test_the_gold_configs_take_typed_arguments_and_name_the_usage():
  from configs import reward_model_gold, rlhf_gold
  c = reward_model_gold.get_config('pairs=1000,noise=0.25')
  assert (c.reward_model.gold_pairs, c.reward_model.gold_noise, c.seed) == (1000, 0.25, 0)
  c = rlhf_gold.get_config('beta=0.1')
  assert (c.rlhf.proxy, c.grpo.beta) == ('runs/rm_gold_4k', 0.1)
  for bad in ('pairs', 'pears=10'):
    with pytest.raises(ValueError, match=r'write pairs=N\[,noise=F\]\[,seed=S\]'):
      reward_model_gold.get_config(bad)


def test_bradley_terry_accuracy_counts_a_tie_as_wrong():
  """Differences 0 (a tie), 1 and -1: one pair of three ranked right."""
  _, n, aux = reward_model.bradley_terry(jnp.array([0.5, 2.0, 0.0]), jnp.array([0.5, 1.0, 1.0]))
  assert (float(aux['accuracy'][0]), float(n)) == (1.0, 3.0)


def test_a_gold_gap_on_a_bucket_edge_lands_in_the_upper_bucket_only():
  from llm.tasks import reward_model as rm_task
  assert rm_task.accuracy_by_gap(np.array([1.0, -1.0]), np.array([0.2, 0.8])) == {0.2: 1.0, 0.8: 0.0}
