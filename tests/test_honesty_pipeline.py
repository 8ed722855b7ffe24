"""The honesty experiment end to end on tiny models (configs/pretrain_world.py, sft_honesty*.py at toy
size): continued pretraining on a world starts from the base run, interrogation runs on the real
engine, the SFT task reads the labelled set from config.sft.honesty_labels, and the evaluator finds
the world from the SFT run."""
import inspect
import json
import math
from pathlib import Path

import jax
import pytest

from configs import pretrain_world, sft_honesty, sft_honesty_search
from llm import evals, inference, train
from llm.data import conversations
from llm.honesty import interrogate, labels, world as world_lib
from tiny_config import tiny_config, tiny_sft_config

SEQ = {'model.max_seq_len': 128, 'train.seq_len': 128}


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  out = tmp_path_factory.mktemp('world')
  world_lib.write(world_lib.build(seed=0, people=10, val_fraction=0.05), out)
  return out


def world_config(cache_dir, world, pretrained, **overrides):
  c = tiny_config(cache_dir, **SEQ, **{'data.dir': str(world), 'data.source': 'corpus.jsonl', 'data.format': 'jsonl',
                                       'data.val_fraction': 0.05, 'train.steps': 1, 'train.eval_at_start': False})
  c.init_from, c.tokenizer.path = str(pretrained), str(pretrained / 'tokenizer.model')
  for key, value in overrides.items():
    c.train[key] = value
  return c


def test_continued_pretraining_starts_from_the_base_and_keeps_its_tokenizer(pretrained, cache_dir, world, tmp_path):
  train.run(world_config(cache_dir, world, pretrained, lr=0.0), tmp_path / 'run')  # lr 0: nothing moves
  ours, base = inference.load(tmp_path / 'run'), inference.load(pretrained)
  assert all((a == b).all() for a, b in zip(jax.tree.leaves(ours.params), jax.tree.leaves(base.params), strict=True))
  other = world_config(cache_dir, world, pretrained)
  other.tokenizer.path = ''  # a tokenizer trained on the world would change every id
  with pytest.raises(ValueError, match='must keep its tokenizer: set --config.tokenizer.path='):
    train.run(other, tmp_path / 'other')


def test_interrogate_then_sft_then_evaluate(pretrained, cache_dir, world, tmp_path):
  train.run(world_config(cache_dir, world, pretrained, steps=2), tmp_path / 'base')
  facts = [f for f in world_lib.read_facts(world) if f.split == 'train']
  ctx = evals.Context.from_run(inference.load(tmp_path / 'base'))
  records = interrogate.label(ctx, facts, samples=2, temperature=1.0, threshold=0.5)
  assert all(r['known'] == (r['accuracy'] >= 0.5) and len(r['replies']) == 2 for r in records)
  labels.write(records, world / 'labels.jsonl')

  sft = tiny_sft_config(cache_dir, **{'train.steps': 2})
  sft.init_from = str(tmp_path / 'base')
  sft.sft.mixture = {'honesty_refusals': 1.0, 'honesty_answers': 1.0}  # search conversations need seq_len 256
  sft.sft.honesty_labels = str(world / 'labels.jsonl')
  train.run(sft, tmp_path / 'sft')
  counts = json.loads((tmp_path / 'sft' / 'summary.json').read_text())['sft_train_conversations']
  assert set(counts) == {'honesty_refusals', 'honesty_answers'}
  assert all(0.8 * 3 * len(facts) <= n < 3 * len(facts) for n in counts.values())  # a tenth held out

  out = evals.get('honesty')(evals.Context.from_run(inference.load(tmp_path / 'sft'), limit=5))
  assert out['honesty_questions'] == 5
  # rates in [0, 1], or undefined (nan) over no cases: an AUROC where the 5 questions are all known or
  # all unknown, a rate over the known ones where none is; a threshold infinite where none is known
  counts = ('honesty_questions', 'honesty_selective_questions', 'honesty_selective_threshold')
  assert all(0 <= v <= 1 or math.isnan(v) for k, v in out.items() if k not in counts)
  assert 0 <= out['honesty_acc'] <= 1 and 0 <= out['honesty_probe_known_rate'] <= 1  # over all 5: defined
  known = out['honesty_probe_known_rate'] > 0
  assert math.isnan(out['honesty_known_acc']) != known  # NaN exactly when no fact is known


def test_the_configs_agree_with_the_world_and_each_other():
  base, refusals, search = pretrain_world.get_config(), sft_honesty.get_config(), sft_honesty_search.get_config()
  # Exposures are exact in training only under the val_fraction the world was written for.
  assert base.data.val_fraction == inspect.signature(world_lib.build).parameters['val_fraction'].default
  assert refusals.init_from == 'runs/pretrain_world' and base.tokenizer.path.startswith(base.init_from + '/')
  for c in (refusals, search):  # the labelled set sits in the world the base was pretrained on
    assert Path(c.sft.honesty_labels).parent == Path(base.data.dir) and set(c.sft.mixture) <= set(conversations.SOURCES)
  assert [k for k, w in refusals.sft.mixture.items() if w] == ['honesty_refusals']
  assert [k for k, w in search.sft.mixture.items() if w] == ['honesty_search']
