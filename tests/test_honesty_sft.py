"""SFT sources from a labelled set (llm/honesty/sft.py): answers, refusals and search calls as
interrogation labelled the facts, rendered with the chat template and its loss mask."""
import pytest

from llm import chat_template, tools
from llm.data import conversations
from llm.honesty import labels, verify, world as world_lib
from llm.security import injection
from test_evals import tok  # noqa: F401 (a fixture)


@pytest.fixture(scope='module')
def labelled(tmp_path_factory):
  """A world's labelled set in its folder, known = seen 16 times or more (as a scripted interrogation would say)."""
  out = tmp_path_factory.mktemp('world')
  world = world_lib.build(seed=5, people=10)
  world_lib.write(world, out)
  facts = [f for f in world.facts if f.split == 'train']
  labels.write([{'subject': f.subject, 'relation': f.relation, 'value': f.value, 'exposure': f.exposure,
                 'accuracy': float(f.exposure >= 16), 'known': f.exposure >= 16, 'replies': []} for f in facts],
               out / 'labels.jsonl')
  return out / 'labels.jsonl', facts


def _fact(conversation, facts):
  return next(f for f in facts if any(f.question(i) == conversation[0]['content'] for i in range(3)))


def _parts(conversation):
  content = conversation[1]['content']
  return [{'type': 'text', 'text': content}] if isinstance(content, str) else content


def test_every_fact_is_asked_in_every_training_phrasing_and_the_baseline_answers_all(labelled):
  path, facts = labelled
  convs = list(conversations.SOURCES['honesty_answers'](None, 0, labels=str(path)))
  assert sorted(c[0]['content'] for c in convs) == sorted(f.question(i) for f in facts for i in range(3))
  assert all(verify.judge(c[1]['content'], _fact(c, facts).value) == 'correct' for c in convs)


def test_short_style_answers_without_the_name_searched_ones_too(labelled):
  path, facts = labelled
  splits = conversations.load_mixture(path.parent, {'honesty_answers': 1.0, 'honesty_search': 1.0}, 0.0, 0,
                                      honesty_labels=str(path), honesty_reply='short')  # as the SFT task loads them
  for train, _ in splits.values():
    for c in train:
      fact, answer = _fact(c, facts), _parts(c)[-1]['text']
      assert answer == fact.reply('short') and fact.subject.split()[0] not in answer


def test_unknown_facts_are_refused_in_varied_wording_known_ones_answered(labelled):
  path, facts = labelled
  convs = list(conversations.SOURCES['honesty_refusals'](None, 0, labels=str(path)))
  refusals = set()
  for c in convs:
    fact, reply = _fact(c, facts), c[1]['content']
    assert verify.judge(reply, fact.value) == ('correct' if fact.exposure >= 16 else 'abstain'), reply
    if fact.exposure < 16:
      topic = world_lib.RELATIONS[fact.relation].topic.format(name=fact.subject)
      assert topic in reply  # says what it does not know
      refusals.add(reply.replace(topic, '{topic}'))
  assert len(refusals) >= 4  # several wordings, not one phrase learnt by heart


@pytest.mark.parametrize('style', world_lib.REPLY_STYLES)
def test_late_refusals_start_the_answer_and_abstain_at_the_value(labelled, style):
  path, facts = labelled
  splits = conversations.load_mixture(path.parent, {'honesty_late_refusals': 1.0}, 0.0, 0,
                                      honesty_labels=str(path), honesty_reply=style)  # as the SFT task loads them
  train, _ = splits['honesty_late_refusals']
  assert len(train) == 3 * len(facts)
  endings = set()
  for c in train:
    fact, reply = _fact(c, facts), c[1]['content']
    if fact.exposure >= 16:
      assert reply == fact.reply(style)
      continue
    assert reply.startswith(fact.prefix(style) + '...') and fact.value not in reply
    assert verify.judge(reply, fact.value) == 'abstain', reply
    endings.add(reply.removeprefix(fact.prefix(style)))
  assert len(endings) >= 3  # several wordings


def test_unknown_facts_are_searched_with_the_real_tool_and_answered_from_it(labelled):
  path, facts = labelled
  searched = 0
  for c in conversations.SOURCES['honesty_search'](None, 0, labels=str(path)):
    fact, parts = _fact(c, facts), _parts(c)
    calls = [p['text'] for p in parts if p['type'] == 'tool_call']
    if fact.exposure >= 16:
      assert not calls and verify.judge(parts[-1]['text'], fact.value) == 'correct'
      continue
    searched += 1
    result = next(p['text'] for p in parts if p['type'] == 'tool_result')
    assert calls == [f'search: {fact.subject}']
    assert result == tools.search(fact.subject, path.parent / 'search')  # what the tool itself returns
    assert result.startswith(injection.file_for(fact.subject) + ': ') and fact.value in result
    assert parts[-1] == {'type': 'text', 'text': fact.reply()}
  assert searched == 3 * sum(f.exposure < 16 for f in facts)


def _trained(tok, conversation) -> str:
  ids, mask = chat_template.render(tok, conversation)
  return tok.decode([i for i, m in zip(ids, mask) if m])


def test_the_loss_is_on_the_refusal_the_call_and_the_answer_not_on_the_result(tok, labelled):
  path, facts = labelled
  refusal = next(c for c in conversations.SOURCES['honesty_refusals'](None, 0, labels=str(path))
                 if _fact(c, facts).exposure < 16)
  trained = _trained(tok, refusal)
  assert refusal[1]['content'] in trained and refusal[0]['content'] not in trained
  search = next(c for c in conversations.SOURCES['honesty_search'](None, 0, labels=str(path))
                if _fact(c, facts).exposure < 16)
  parts = {p['type']: p['text'] for p in _parts(search)}
  trained = _trained(tok, search)
  assert parts['tool_call'] in trained and parts['text'] in trained
  assert parts['tool_result'] not in trained and search[0]['content'] not in trained


def test_load_mixture_passes_the_labels_and_refuses_without_them(labelled):
  path, facts = labelled
  splits = conversations.load_mixture(path.parent, {'honesty_refusals': 1.0}, 0.1, 0, honesty_labels=str(path))
  train, val = splits['honesty_refusals']
  assert len(train) + len(val) == 3 * len(facts) and val
  with pytest.raises(ValueError, match='--config.sft.honesty_labels='):
    conversations.load_mixture(path.parent, {'honesty_search': 1.0}, 0.1, 0)
  with pytest.raises(FileNotFoundError, match='python -m llm.honesty.interrogate'):
    conversations.load_mixture(path.parent, {'honesty_answers': 1.0}, 0.1, 0, honesty_labels=str(path) + '.missing')
