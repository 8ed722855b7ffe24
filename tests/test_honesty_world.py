"""The fictional world (llm/honesty/world.py): exposures counted from the written documents, also in
the training split the pretraining pipeline makes, the mother stated forwards only, determinism,
and the search folder."""
import collections
import json
import re
import subprocess
import sys

import pytest

from llm import data, tools
from llm.honesty import world as world_lib
from llm.security import injection
from tiny_config import tiny_config

VAL_FRACTION = 0.05


@pytest.fixture(scope='module', params=world_lib.EXPOSURES)
def world_dir(tmp_path_factory, request):
  out = tmp_path_factory.mktemp('world')
  world_lib.write(world_lib.build(seed=1, people=40, val_fraction=VAL_FRACTION, exposure_of=request.param), out)
  return out


def _facts(world_dir) -> list[dict]:
  return json.loads((world_dir / 'facts.json').read_text())['facts']


def _sentences(docs) -> list[str]:
  return [s for doc in docs for s in re.split(r'(?<=\.) ', doc)]


def _mentions(sentences, fact) -> int:
  """Sentences naming both the person and the value, each a whole word."""
  has = lambda text, s: re.search(rf'(?<!\w){re.escape(text)}(?!\w)', s)
  return sum(bool(has(fact['subject'], s) and has(fact['value'], s)) for s in sentences)


def test_every_fact_is_stated_exactly_its_exposure_times(world_dir):
  docs = [json.loads(line)['text'] for line in (world_dir / 'corpus.jsonl').read_text().splitlines()]
  sentences = _sentences(docs)
  facts = _facts(world_dir)
  assert [_mentions(sentences, f) for f in facts] == [f['exposure'] for f in facts]
  per_bucket = collections.Counter((f['relation'], f['exposure']) for f in facts)
  assert set(per_bucket) == {(r, k) for r in world_lib.RELATIONS for k in world_lib.BUCKETS}
  assert set(per_bucket.values()) == {40 // len(world_lib.BUCKETS)}  # each bucket an equal share of a relation


def test_exposure_is_shared_by_a_persons_facts_or_drawn_per_fact(world_dir):
  facts = _facts(world_dir)
  per_person = collections.defaultdict(set)
  for f in facts:
    per_person[f['subject']].add(f['exposure'])
  if json.loads((world_dir / 'facts.json').read_text())['exposure'] == 'person':
    assert all(len(k) == 1 for k in per_person.values())
    assert not any(f['subject'] in doc for f in facts if f['exposure'] == 0
                   for doc in (world_dir / 'corpus.jsonl').read_text().splitlines())  # a name never seen
  else:
    assert sum(len(k) > 1 for k in per_person.values()) > len(per_person) / 2


def test_the_pretraining_split_keeps_every_mention_in_training(world_dir):
  config = tiny_config(**{'data.dir': str(world_dir), 'data.source': 'corpus.jsonl', 'data.format': 'jsonl',
                          'data.val_fraction': VAL_FRACTION})
  train, val = data.split_corpus(world_dir, config.data)
  assert val  # a validation split exists, about people no question asks about
  assert abs(len(val) - VAL_FRACTION * (len(train) + len(val))) < 1  # val_fraction of all documents, to one
  facts = _facts(world_dir)
  assert [_mentions(_sentences(train), f) for f in facts] == [f['exposure'] for f in facts]
  assert not any(f['subject'] in doc for f in facts for doc in val)


def test_the_mother_is_only_stated_after_the_child(world_dir):
  docs = [json.loads(line)['text'] for line in (world_dir / 'corpus.jsonl').read_text().splitlines()]
  mothers = [f for f in _facts(world_dir) if f['relation'] == 'mother']
  seen = 0
  for s in _sentences(docs):
    for f in mothers:
      if f['value'] in s:
        seen += 1
        assert f['subject'] in s and s.index(f['subject']) < s.index(f['value']), s
  assert seen == sum(f['exposure'] for f in mothers)


def test_the_world_is_a_function_of_its_seed():
  a, b = world_lib.build(seed=3, people=10), world_lib.build(seed=3, people=10)
  assert a == b
  assert world_lib.build(seed=4, people=10).documents != a.documents


def test_three_in_ten_people_are_held_out_with_all_their_facts():
  splits = collections.defaultdict(set)
  for f in world_lib.build(seed=3, people=10).facts:
    splits[f.subject].add(f.split)
  assert sorted(len(s) for s in splits.values()) == [1] * 10  # a person's facts share a split
  assert collections.Counter(s.pop() for s in splits.values()) == {'train': 7, 'heldout': 3}


def test_search_finds_every_fact_of_a_person_exposure_0_included(world_dir):
  facts = _facts(world_dir)
  unseen = [f for f in facts if f['exposure'] == 0]
  assert unseen
  for f in unseen:
    result = tools.search(f['subject'], world_dir / 'search')
    assert result.startswith(injection.file_for(f['subject']) + ': ') and f['value'] in result


def test_questions_and_replies():
  fact = world_lib.Fact('Velon Tarsk', 'birth_city', 'Miravel', 4, 'train')
  assert fact.reply() == 'Velon Tarsk was born in the city of Miravel.'
  assert fact.prefix() == 'Velon Tarsk was born in the city of'
  assert fact.question(0) == 'Where was Velon Tarsk born?' and fact.question(3) == fact.question(0)
  assert fact.question(0, heldout=True) not in {fact.question(i) for i in range(3)}


def test_short_replies_state_the_fact_without_the_name():
  fact = world_lib.Fact('Velon Tarsk', 'birth_city', 'Miravel', 4, 'train')
  assert fact.reply('short') == 'They were born in the city of Miravel.'
  assert fact.prefix('short') == 'They were born in the city of'
  for relation in world_lib.RELATIONS:
    f = world_lib.Fact('Velon Tarsk', relation, 'Qqq', 4, 'train')
    assert 'Velon' not in f.reply('short') and f.reply('short').startswith(f.prefix('short') + ' Qqq')
  with pytest.raises(ValueError, match='--config.sft.honesty_reply'):
    fact.reply('terse')


def test_a_folder_without_facts_is_named_with_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match='python -m llm.honesty.world --out='):
    world_lib.read_facts(tmp_path)


def test_an_empty_out_is_refused_in_one_line_and_writes_nothing(tmp_path, python_env):
  r = subprocess.run([sys.executable, '-m', 'llm.honesty.world', '--out=', '--people=10'], cwd=tmp_path,
                     env=python_env, capture_output=True, text=True)
  assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
  assert r.stderr.strip().splitlines()[-1] == (
      'llm.honesty.world: --out is empty; give the folder the world is written to, e.g. --out=runs/world')
  assert list(tmp_path.iterdir()) == []  # where an empty --out wrote the world


def test_pretraining_on_a_world_not_made_yet_names_the_command_that_makes_it(tmp_path, monkeypatch):
  """It said to fix --config.data.dir or set it to "" (which would pretrain on the books instead)."""
  from configs import pretrain_world
  from llm import train
  monkeypatch.chdir(tmp_path)  # where runs/world is not
  with pytest.raises(FileNotFoundError) as error:
    train.run(pretrain_world.get_config(), tmp_path / 'run')
  assert str(error.value) == ('data dir runs/world (--config.data.dir) does not exist; make it with python -m '
                              'llm.honesty.world --out=runs/world (or fix --config.data.dir=...)')
