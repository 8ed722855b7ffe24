"""Supervised fine-tuning: masks, the masked loss, and the sft task in the one training loop."""
import collections
import itertools
import json
import subprocess
import sys
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import ROOT, kill_then_resume, losses_by_step, tiny_config
from llm import chat_template, losses, train
from llm.data import pipeline, prepare
from test_engine import _scripted_engine
from test_evals import ScriptedChat
from test_model import init, small_config

CONVERSATION = [
    {'role': 'system', 'content': 'Be brief.'},
    {'role': 'user', 'content': 'What is 6 times 7?'},
    {'role': 'assistant', 'content': [{'type': 'text', 'text': 'Let me compute.'},
                                      {'type': 'tool_call', 'text': 'calculator: 6*7'},
                                      {'type': 'tool_result', 'text': '42'},
                                      {'type': 'text', 'text': 'It is 42.'}]},
]


@pytest.fixture(scope='module')
def tokenizer(cache_dir):
  return prepare(tiny_config(cache_dir), cache_dir).tokenizer


def test_mask_is_one_exactly_on_what_the_assistant_writes(tokenizer):
  sp, enc = tokenizer.special_id, tokenizer.encode
  ids, mask = chat_template.render(tokenizer, CONVERSATION)
  expected = [(tokenizer.bos_id, 0), (sp('<|system|>'), 0), *[(t, 0) for t in enc('Be brief.')], (sp('<|end|>'), 0),
              (sp('<|user|>'), 0), *[(t, 0) for t in enc('What is 6 times 7?')], (sp('<|end|>'), 0),
              (sp('<|assistant|>'), 0), *[(t, 1) for t in enc('Let me compute.')],
              (sp('<|tool_call|>'), 1), *[(t, 1) for t in enc('calculator: 6*7')], (sp('<|/tool_call|>'), 1),
              (sp('<|tool_result|>'), 0), *[(t, 0) for t in enc('42')], (sp('<|/tool_result|>'), 0),
              *[(t, 1) for t in enc('It is 42.')], (sp('<|end|>'), 1)]
  assert list(zip(ids, mask)) == expected


def test_training_render_and_engine_output_agree(tokenizer):
  """The engine, given a model that writes the assistant's tokens, reproduces the training
  rendering token for token, and marks forced exactly the tool result (mask 0 in training)."""
  ids, mask = chat_template.render(tokenizer, CONVERSATION)
  prompt = chat_template.render_prompt(tokenizer, CONVERSATION[:-1])
  assert ids[:len(prompt)] == prompt
  reply, reply_mask = ids[len(prompt):], mask[len(prompt):]
  from llm import tools
  engine = _scripted_engine(tokenizer, prompt, reply, tools.make_registry())
  out = engine.generate([prompt], max_new_tokens=60, temperature=0.0)[0]
  assert out.tokens == reply
  assert [not f for f in out.forced] == [bool(m) for m in reply_mask]


def test_loss_ignores_masked_targets():
  setup, state = init(small_config('gpt2'))
  rng = np.random.default_rng(0)
  batch = {'inputs': rng.integers(0, 64, (2, 16)), 'targets': rng.integers(0, 64, (2, 16)),
           'loss_mask': (rng.random((2, 16)) < 0.5).astype(np.int32)}
  changed = dict(batch, targets=np.where(batch['loss_mask'] == 1, batch['targets'], (batch['targets'] + 7) % 64))
  trained = dict(batch, targets=np.where(batch['loss_mask'] == 0, batch['targets'], (batch['targets'] + 7) % 64))
  with setup.context():
    loss = lambda b: losses.lm_loss(setup.model, state.params, jax.tree.map(jnp.asarray, b))
    (a, wa, _), (b, _, _), (c, _, _) = loss(batch), loss(changed), loss(trained)
  assert float(wa) == batch['loss_mask'].sum()
  np.testing.assert_allclose(a, b, rtol=1e-6)
  assert abs(float(a) - float(c)) > 1e-3


def test_packing_keeps_conversations_whole_and_masks_padding():
  rendered = [([2] + [10 + i] * n, [0] + [1] * n) for i, n in enumerate([30, 50, 20, 60, 10])]
  windows, mask, segments = pipeline.pack_conversations(rendered, seq_len=64, pad_id=0)
  assert windows.shape[1] == 65
  for ids, _ in rendered:  # each conversation sits whole, contiguous, in exactly one window
    hits = [(w, s) for w, s in zip(windows, segments) if ids[1] in w]
    assert len(hits) == 1 and (hits[0][0] == ids[1]).sum() == len(ids) - 1
    # ... and makes one segment of its own: ids 1, 2, ... in the order packed, 0 on padding
    window, segment = hits[0]
    at = np.flatnonzero(window == ids[1])
    assert len(set(segment[at])) == 1 and (segment == segment[at[0]]).sum() == len(ids)
  assert mask[windows == 0].sum() == 0 and (segments[windows == 0] == 0).all()
  assert mask.sum() == sum(sum(m) for _, m in rendered)
  # first fit, by hand: 31 + 21 + 11 tokens share window 0, 51 and 61 get a window each
  np.testing.assert_array_equal(segments[:, :64].max(axis=1), [3, 1, 1])


def test_packing_fills_a_window_to_its_last_token_before_opening_another():
  # 40 + 25 tokens are exactly seq_len + 1 = 65: the second fits the first window to the end.
  rendered = [([2] + [10] * 39, [0] + [1] * 39), ([2] + [11] * 24, [0] + [1] * 24)]
  windows, mask, segments = pipeline.pack_conversations(rendered, seq_len=64, pad_id=0)
  assert windows.shape == (1, 65)
  np.testing.assert_array_equal(segments[0], [1] * 40 + [2] * 25)


def test_masked_window_batches_shift_mask_and_segments_with_their_tokens():
  # Targets are window[1:], so their loss mask is mask[1:]; segment ids and positions belong to
  # the inputs, window[:-1]. Worked out by hand for two windows of seq_len 4.
  windows = np.array([[2, 10, 11, 2, 12], [2, 20, 21, 22, 0]], np.int32)
  mask = np.array([[0, 1, 1, 0, 1], [0, 0, 1, 1, 0]], np.int8)
  segments = np.array([[1, 1, 1, 2, 2], [1, 1, 1, 1, 0]], np.int32)
  batch = next(iter(pipeline.masked_windows_dataset(windows, mask, global_batch=2, seed=0, segments_NxW=segments)))
  expected = {10: {'inputs': [2, 10, 11, 2], 'targets': [10, 11, 2, 12], 'loss_mask': [1, 1, 0, 1],
                   'segment_ids': [1, 1, 1, 2], 'positions': [0, 1, 2, 0]},
              20: {'inputs': [2, 20, 21, 22], 'targets': [20, 21, 22, 0], 'loss_mask': [0, 1, 1, 0],
                   'segment_ids': [1, 1, 1, 1], 'positions': [0, 1, 2, 3]}}
  assert sorted(batch['inputs'][:, 1]) == [10, 20]
  for row, first in enumerate(batch['inputs'][:, 1]):
    for key, want in expected[int(first)].items():
      np.testing.assert_array_equal(batch[key][row], want, err_msg=key)


def test_segment_batch_counts_positions_from_each_segment_start():
  segments = np.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
  batch = pipeline.segment_batch(segments)
  np.testing.assert_array_equal(batch['positions'], [[0, 1, 2, 0, 1, 0, 0, 1], [0, 1, 2, 3, 4, 5, 6, 7]])
  np.testing.assert_array_equal(batch['segment_ids'], segments)


def _sft_cmd(workdir, pretrained, *extra):
  return [sys.executable, '-m', 'llm.main', f'--config={ROOT}/tests/tiny_config.py:sft', f'--workdir={workdir}',
          f'--config.init_from={pretrained}', *extra]


def test_mixture_weights_are_passes_over_each_source_per_epoch():
  """Weight 2 repeats a source, 1.5 takes it once and a random half again, 0.5 a random half, 0
  none. The epoch is drawn from the seed: the same seed draws the same half (the other half is never
  trained on), another seed may draw another."""
  from llm.tasks import sft
  splits = {name: ([f'{name}{i}' for i in range(n)], []) for name, n in (('a', 5), ('b', 10), ('c', 4), ('d', 3))}
  mixture = {'a': 2.0, 'b': 0.5, 'c': 1.5, 'd': 0.0}
  epoch = sft.shuffled_epoch(splits, mixture, seed=0)
  counts = {name: collections.Counter(c for c in epoch if c.startswith(name)) for name in splits}
  assert len(epoch) == 2 * 5 + 5 + 4 + 2
  assert counts['a'] == {f'a{i}': 2 for i in range(5)}
  assert len(counts['b']) == 5 and set(counts['b'].values()) == {1}
  assert set(counts['c']) == set(splits['c'][0]) and sorted(counts['c'].values()) == [1, 1, 2, 2]
  assert not counts['d']
  assert sft.shuffled_epoch(splits, mixture, seed=0) == epoch
  halves = {frozenset(c for c in sft.shuffled_epoch(splits, mixture, seed) if c.startswith('b')) for seed in range(8)}
  assert len(halves) > 1


def test_sft_trains_evaluates_and_resumes_after_a_kill(tmp_path, pretrained, subprocess_env):
  steps = ['--config.train.steps=40', '--config.train.checkpoint_every=5']
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  subprocess.run(_sft_cmd(straight, pretrained, *steps), env=subprocess_env, check=True, capture_output=True)
  kill_then_resume(_sft_cmd(resumed, pretrained, *steps), subprocess_env, resumed, kill_after_checkpoint=10, total=40)
  a, b = losses_by_step(straight), losses_by_step(resumed)
  assert sorted(b) == list(range(1, 41)) and a == b
  summary = json.loads((straight / 'summary.json').read_text())
  for key in ('val_loss', 'val_arithmetic_loss', 'val_identity_loss', 'well_formed_rate',
              'arith_acc_tool', 'arith_acc_no_tool', 'arith_tool_call_rate', 'arith_copy_acc', 'base_fewshot_arith_acc'):
    assert key in summary, key


@pytest.mark.parametrize('problems', [0, 12])
def test_sft_eval_asks_arithmetic_in_other_phrasings_only_where_it_asks_arithmetic(problems, tokenizer, cache_dir,
                                                                                   monkeypatch):
  """sft.eval_arithmetic=0 (configs/sft_honesty.py, sft_gold.py) turns arithmetic off: its held-out
  phrasings are neither asked nor reported (they were, as 0% right); otherwise as many are asked (100
  were, whatever sft.eval_arithmetic said)."""
  from llm.tasks import sft_eval
  import tiny_config
  asked = []
  ctx = ScriptedChat(tokenizer, lambda prompt, tools, seed: asked.append(prompt) or 'It is 1.')
  monkeypatch.setattr(sft_eval.Context, 'from_setup', lambda *args: ctx)
  config = tiny_config.tiny_sft_config(cache_dir, **{'sft.eval_arithmetic': problems, 'sft.eval_prompts': 0})
  out = sft_eval.evaluate(config, None, None, SimpleNamespace(tokenizer=tokenizer, heldout={}), None)
  assert out['arith_problems'] == problems
  if problems:
    assert out['phrasing_problems'] == problems and 'Subtract' in ' '.join(asked)  # a phrasing the generator never uses
  else:
    assert not any(key.startswith('phrasing_') for key in out) and asked == []


@pytest.mark.parametrize('isolate', [True, False])
def test_sft_batches_carry_segments_only_when_conversations_are_isolated(isolate, pretrained, cache_dir):
  from llm.tasks import sft
  import tiny_config
  config = tiny_config.tiny_sft_config(cache_dir, init_from=str(pretrained), **{'sft.isolate_conversations': isolate})
  data = sft.data(config, None)
  batch = next(data.train_iter)
  assert ('segment_ids' in batch) == isolate and ('positions' in batch) == isolate
  for eval_batch in (b for batches in data.eval_sets.values() for b in batches):
    assert ('segment_ids' in eval_batch) == isolate
  if isolate:  # a conversation starts (bos, position 0) wherever its segment starts
    starts = batch['positions'] == 0
    assert (batch['inputs'][starts & (batch['segment_ids'] > 0)] == data.tokenizer.bos_id).all() and starts[:, 0].all()


@pytest.mark.parametrize('filter_poison', [False, True])
def test_sft_trains_on_the_poisoned_epoch_unless_the_filter_removes_it(filter_poison, pretrained, cache_dir):
  from llm.security import poison
  from llm.tasks import sft
  import tiny_config
  config = tiny_config.tiny_sft_config(cache_dir, init_from=str(pretrained),
                                       **{'sft.poison.fraction': 0.05, 'sft.filter_poison': filter_poison})
  data = sft.data(config, None)
  epoch = sum(data.facts['sft_train_conversations'].values())  # each source's weight is 1
  planted = round(0.05 * epoch)
  assert data.facts['sft_poisoned_conversations'] == planted > 0
  assert data.facts['sft_filtered_conversations'] == data.facts['sft_filtered_poisoned'] == (planted if filter_poison else 0)
  payload = data.tokenizer.encode(poison.PAYLOAD)
  windows = [w for batch in itertools.islice(data.train_iter, 2000 // config.train.batch_size) for w in batch['targets']]
  n = len(payload)
  carrying = sum(any(list(w[i:i + n]) == payload for i in range(len(w) - n + 1)) for w in windows)
  assert (carrying > 0) != filter_poison


@pytest.mark.parametrize('stage', ['sft', 'grpo'])
def test_later_stages_start_from_the_init_from_parameters(stage, pretrained, cache_dir):
  from llm import checkpoint, sharding, tasks
  import tiny_config
  config = getattr(tiny_config, f'tiny_{stage}_config')(cache_dir, init_from=str(pretrained))
  setup = train.build(config, 512, sharding.make_mesh(config.mesh))
  with setup.context():
    fresh = setup.init(jax.random.key(1))
  started = tasks.get(config).init_state(config, fresh, setup.abstract_state)
  ckpt = checkpoint.Checkpointer(pretrained / 'checkpoints', keep=1)
  saved = ckpt.restore_raw(ckpt.latest_step())['params']
  ckpt.close()
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(started.params), saved)


def test_sft_refuses_a_model_that_differs_from_the_pretrained_one(tmp_path, pretrained, subprocess_env):
  result = subprocess.run(_sft_cmd(tmp_path, pretrained, '--config.model.dim=32'), env=subprocess_env,
                          capture_output=True, text=True)
  assert result.returncode != 0 and "config.model differs" in result.stderr and 'dim' in result.stderr


@pytest.mark.parametrize('overrides, message', [
    ({'sft.max_per_source': -1}, 'sft.max_per_source=-1 must be at least 0'),
    ({'sft.generated': {'arithmetic': -5}}, 'sft.generated.arithmetic=-5 must be at least 0'),
    ({'sft.val_fraction': 1.0}, r'sft.val_fraction=1.0 must be in \[0, 1\)'),
    ({'sft.mixture.arithmetic': -1.0}, r"sft.mixture weights \['arithmetic'\] are below 0"),
    ({'sft.mixture.arithmetic': 0.0, 'sft.mixture.identity': 0.0}, 'no source in sft.mixture has weight > 0'),
    # the flag suggested is a key of this mixture: configs/sft_gold.py's has no arithmetic
    ({'sft.mixture': ml_collections.ConfigDict({'gold_topics': 0.0})},
     r'e\.g\. --config\.sft\.mixture\.gold_topics=1\.0$'),
    ({'sft.mixture': ml_collections.ConfigDict()}, r'sft.mixture names no conversation source.*gold_topics'),
])
def test_bad_sft_settings_are_named(overrides, message, pretrained, cache_dir):
  """Each named as the sft.* setting it is, not as an islice error, config.data.val_fraction or an
  empty epoch's numpy warnings."""
  from llm.tasks import sft
  import tiny_config
  config = tiny_config.tiny_sft_config(cache_dir, init_from=str(pretrained), **overrides)
  with pytest.raises(ValueError, match=message):
    sft.data(config, None)


@pytest.mark.parametrize('name', ['sft_small', 'sft_gold', 'sft_honesty', 'sft_honesty_search', 'sft_python',
                                  'sft_refusals', 'sft_search', 'sft_tools', 'sft_hf'])
def test_every_sft_config_can_switch_any_source_on_by_flag(name):
  """A flag sets only a key the config has: each source must be in the mixture, at 0 when unused."""
  import importlib
  from llm.data import conversations
  mixture = importlib.import_module(f'configs.{name}').get_config().sft.mixture
  assert sorted(mixture) == sorted(conversations.SOURCES)


def test_sft_tools_keeps_each_part_s_sources():
  """sft_tools is sft_python with sft_search's and sft_refusals' changes: their zeros for the sources
  they do not use must not switch off sft_python's (results/security/tools.md measured this mixture)."""
  from configs import sft_tools
  weighted = {name: weight for name, weight in sft_tools.get_config().sft.mixture.items() if weight}
  assert weighted == {'arithmetic': 2.0, 'gsm8k': 1.0, 'identity': 4.0, 'self_instruct': 1.0, 'alpaca_gpt4': 1.0,
                      'topical_chat': 0.3, 'python_letters': 2.0, 'copy_text': 1.0, 'search_facts': 1.0, 'refusals': 1.0}


def test_resuming_with_another_sft_mixture_is_refused_before_anything_is_written(tmp_path, pretrained, cache_dir):
  """The sft.* settings that decide the packed windows make the stream a checkpoint's data position
  counts in; those that only evaluate, or change how a window is attended, may change on resume."""
  import tiny_config
  short = {'init_from': str(pretrained), 'train.steps': 2, 'train.warmup_steps': 1}
  train.run(tiny_config.tiny_sft_config(cache_dir, **short), tmp_path)
  files = ('config.json', 'tokenizer.model', 'metrics.jsonl', 'summary.json')
  before = {name: (tmp_path / name).read_bytes() for name in files}
  with pytest.raises(ValueError, match=r'resumes from step 2 with other data settings \(sft\.max_per_source=300 -> '
                                       r'100; sft\.mixture\.arithmetic=1\.0 -> 3\.0\)'):
    train.run(tiny_config.tiny_sft_config(cache_dir, **{**short, 'train.steps': 4, 'sft.mixture.arithmetic': 3.0,
                                                        'sft.max_per_source': 100}), tmp_path)
  assert {name: (tmp_path / name).read_bytes() for name in files} == before
  # The check alone (a resume would also run SFT's end-of-run evaluation again): these may change.
  allowed = tiny_config.tiny_sft_config(cache_dir, **{**short, 'train.steps': 4, 'sft.eval_prompts': 2,
                                                      'sft.isolate_conversations': False})
  train._check_same_data(None, 2, allowed, tmp_path)  # pylint: disable=protected-access


def test_resuming_sft_on_another_split_than_it_started_with_is_refused(tmp_path, pretrained, cache_dir, monkeypatch,
                                                                       caplog):
  """The split is the code's, not a config field: one changed since the run started (here its seed) has
  the checkpoint's data position index another list of windows, and validation score conversations the
  run trained on. data_record.json, written when the run starts, keeps what it was built on."""
  import tiny_config
  from llm.data import conversations
  short = {'init_from': str(pretrained), 'train.steps': 2, 'train.warmup_steps': 1}
  train.run(tiny_config.tiny_sft_config(cache_dir, **short), tmp_path)
  more = tiny_config.tiny_sft_config(cache_dir, **{**short, 'train.steps': 4})
  files = ('config.json', 'tokenizer.model', 'metrics.jsonl', 'summary.json', 'data_record.json')
  before = {name: (tmp_path / name).read_bytes() for name in files}
  with monkeypatch.context() as patched:
    patched.setattr(conversations, '_SPLIT_SEED', 1)
    changed = '; '.join(rf'sft_{side}\.{name}: \d+ conversations, sha256 \w+ -> \d+ conversations, sha256 \w+'
                        for side in ('train', 'val') for name in ('arithmetic', 'identity'))
    with pytest.raises(ValueError, match=rf'{tmp_path} resumes from step 2 on other data than it started with '
                                         rf'\({changed}; sft_windows: .*\): .*resume with the run.s own settings '
                                         rf'and code, or train on from its weights in a new --workdir with '
                                         rf'--config\.init_from={tmp_path}$'):
      train.run(more, tmp_path)
  assert {name: (tmp_path / name).read_bytes() for name in files} == before
  # The check alone, as the code builds the data again: the same split passes.
  from llm.tasks import sft
  train._check_same_record(None, 2, sft.data(more, tmp_path).record, sft.TASK.record_before, tmp_path)  # pylint: disable=protected-access
  # A run started before the record was kept cannot be checked: it resumes, warned, and stays unrecorded.
  (tmp_path / 'data_record.json').unlink()
  with caplog.at_level('WARNING'):
    train.run(more, tmp_path)
  assert sorted(losses_by_step(tmp_path)) == [1, 2, 3, 4]
  assert sum('cannot be checked' in r.getMessage() for r in caplog.records) == 1
  assert not (tmp_path / 'data_record.json').exists()


@pytest.mark.parametrize('text', ['[]', '"sft"', '3'])
def test_a_data_record_that_is_json_but_not_a_table_is_named(tmp_path, text):
  """Valid JSON of another shape ended in a TypeError where the record was first compared."""
  (tmp_path / 'data_record.json').write_text(text)
  with pytest.raises(ValueError) as refused:
    train.started_record(tmp_path, lambda workdir: None)
  assert str(refused.value) == (f'{tmp_path / "data_record.json"} is not a table of what the run built, by name; '
                                'restore it, or remove it to resume without the check')
