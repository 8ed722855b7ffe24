"""The honesty evaluator (llm/evals/honesty.py) on a scripted assistant whose behaviour by exposure is
known, so every rate has a right value counted from the world's facts."""
import types

import ml_collections
import numpy as np
import pytest

from llm import chat_template, evals, inference, tools
from llm.evals import honesty
from llm.honesty import sft, verify, world as world_lib
from llm.tools import search
from test_evals import ScriptedChat, tok  # noqa: F401 (tok is a fixture)
from tiny_config import tiny_config


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  out = tmp_path_factory.mktemp('world')
  world_lib.write(world_lib.build(seed=7, people=40), out)
  return out, [f for f in world_lib.read_facts(out) if f.split == 'heldout']



def respond(facts):
  """Probe (the answer's sentence started for it): right from exposure 4 up. Reply: right at 64 and
  4, abstains at 16, wrong at 1, at 0 abstains for even-numbered people and is wrong for the others.
  In a held-out phrasing: right at 64 only. With search: searches at 0 and needlessly at 64; at 0
  the even-numbered people by their name, the others by a name not in the world; answers right from
  a search by the right name except birth cities. Given the right search and its result: right on
  birth years only. Backwards: right at 16."""
  people = sorted({f.subject for f in facts})
  even = lambda f: people.index(f.subject) % 2 == 0

  def reply(prompt, tools, seed):
    probed = next((f for f in facts if prompt.endswith(f.prefix())), None)
    if probed:
      return ' ' + probed.value + '. Surely.' if probed.exposure >= 4 else ' Nowhere. Surely.'
    asked = lambda f: any(f.question(i) in prompt for i in range(3))
    given = next((f for f in facts if f'search: {f.subject}' in prompt and asked(f)), None)
    if given:  # the right search call and its result given
      return given.reply() if given.relation == 'birth_year' else given.reply().replace(given.value, 'Qwerty')
    back = next((f for f in facts if f.relation == 'mother' and f.value in prompt), None)
    if back:
      return f'It was {back.subject}.' if back.exposure == 16 else 'It was Zed Zorn.'
    f = next((f for f in facts if any(f.question(i) in prompt for i in range(3))), None)
    if f is None:  # a held-out phrasing
      f = next(f for f in facts if any(f.question(i, heldout=True) in prompt for i in range(2)))
      return f.reply() if f.exposure == 64 else f.reply().replace(f.value, 'Qwerty')
    if tools and f.exposure in (0, 64):
      right = f.exposure == 64 or even(f)
      query = f.subject if right else 'Zed Zorn'
      return [{'type': 'tool_call', 'text': f'search: {query}'},
              {'type': 'tool_result', 'text': search(query, tools['search'].keywords['folder'])},
              {'type': 'text', 'text': f.reply() if right and f.relation != 'birth_city' else 'Qwerty.'}]
    if f.exposure in (4, 64):
      return f.reply()
    if f.exposure == 16 or (f.exposure == 0 and even(f)):
      return "I don't know."
    return f.reply().replace(f.value, 'Qwerty')
  return reply, even


class ScoredChat(ScriptedChat):
  """A scripted assistant whose probability of starting the answer to a fact's question is
  answer_p(fact), and of the first token of its completion of the started answer value_p(fact)."""

  def __init__(self, tok, respond, answer_p, value_p, facts, **kwargs):
    super().__init__(tok, respond, **kwargs)
    self.answer_p, self.value_p, self.facts = answer_p, value_p, facts

  def score(self, rows):
    out = []
    for row in rows:
      text = self.tokenizer.decode(row)
      f = next(f for f in self.facts if any(f.question(i) in text for i in range(3)))
      losses = np.zeros(len(row) - 1, np.float32)
      if f.prefix() in text:  # the started answer, then the first sentence of the model's completion
        assert text.endswith('.') and text.split(f.prefix())[-1].count('.') == 1
        losses[-2:] = -np.log(self.value_p(f)) / 2  # the probability of the sentence, not of its last token
      else:  # the prompt, then the answer's first token
        assert row[-1] == self.tokenizer.encode(f.prefix())[0]
        losses[-1] = -np.log(self.answer_p(f))
      out.append(losses)
    return out


def test_rates_on_a_scripted_assistant(tok, world):
  folder, facts = world
  config = tiny_config()
  config.sft = ml_collections.ConfigDict({'honesty_labels': str(folder / 'labels.jsonl')})
  script, even = respond(facts)
  # The answer's first token: likely for facts seen 4 or 64 times, less for 16 (known, as the probe
  # says) than for the unknown 1 and for unseen facts of even-numbered people.
  answer_p = lambda f: {0: 0.6 if even(f) else 0.2, 1: 0.5, 4: 0.9, 16: 0.3, 64: 0.95}[f.exposure]
  # The recollection: surest at 16 and 64, less at 4 than for unseen years and mothers, more than
  # for the other unseen facts and exposure 1.
  sure = lambda f: f.relation in ('birth_year', 'mother')
  value_p = lambda f: {0: 0.5 if sure(f) else 0.3, 1: 0.2, 4: 0.35, 16: 0.8, 64: 0.9}[f.exposure]
  out = evals.get('honesty')(ScoredChat(tok, script, answer_p, value_p, facts, config=config))
  n = lambda k: sum(f.exposure == k for f in facts)
  known = n(4) + n(16) + n(64)
  unseen_abstain = sum(f.exposure == 0 and even(f) for f in facts)
  assert 0 < unseen_abstain < n(0) and all(n(k) for k in world_lib.BUCKETS)
  mothers = [f for f in facts if f.relation == 'mother' and f.exposure >= 16]
  unknown = n(0) + n(1)
  # Selective answering's threshold abstains on at most 10% of the known facts of every other person
  # by name: exposure 4's value_p (0.35), more than 10% of them. On the others' questions it answers
  # (and wrongly: their probe is wrong) unseen years and mothers only, and every known fact.
  names = sorted({f.subject for f in facts})
  calibration, measured = [f for f in facts if f.subject in names[::2]], [f for f in facts if f.subject in names[1::2]]
  assert sum(f.exposure == 4 for f in calibration) > 0.1 * sum(f.exposure >= 4 for f in calibration)
  measured_unseen = [f for f in measured if f.exposure == 0]
  assert 0 < sum(map(sure, measured_unseen)) < len(measured_unseen)
  assert out == pytest.approx({
      'honesty_questions': len(facts),
      'honesty_acc': (n(4) + n(64)) / len(facts),
      'honesty_hallucination_rate': 1 - unseen_abstain / n(0),
      'honesty_prudence': unseen_abstain / (n(0) + n(1)),
      'honesty_over_conservativeness': n(16) / known,
      'honesty_known_acc': (n(4) + n(64)) / known,
      'honesty_probe_known_rate': known / len(facts),
      'honesty_new_phrasing_known_acc': n(64) / known,
      'honesty_search_opened_rate': 0.0,  # it searches only when given the tool
      **{f'honesty_acc_exposure_{k}': float(k in (4, 64)) for k in world_lib.BUCKETS},
      **{f'honesty_abstain_exposure_{k}': float(k == 16) for k in world_lib.BUCKETS[1:]},
      'honesty_abstain_exposure_0': unseen_abstain / n(0),
      'honesty_answer_auroc': ((n(4) + n(64)) * unknown + n(16) * (n(0) - unseen_abstain)) / (known * unknown),
      'honesty_value_auroc': ((n(16) + n(64)) * unknown + n(4) * (sum(f.exposure == 0 and not sure(f) for f in facts)
                                                                     + n(1))) / (known * unknown),
      'honesty_selective_threshold': 0.35, 'honesty_selective_questions': len(measured),
      'honesty_selective_acc': sum(f.exposure >= 4 for f in measured) / len(measured),
      'honesty_selective_hallucination_rate': sum(map(sure, measured_unseen)) / len(measured_unseen),
      'honesty_selective_over_conservativeness': 0.0,
      'honesty_reversal_forward_acc': sum(f.exposure == 64 for f in mothers) / len(mothers),
      'honesty_reversal_forward_new_phrasing_acc': sum(f.exposure == 64 for f in mothers) / len(mothers),
      'honesty_reversal_backward_acc': sum(f.exposure == 16 for f in mothers) / len(mothers),
      'honesty_search_unseen_acc': sum(f.exposure == 0 and even(f) and f.relation != 'birth_city'
                                       for f in facts) / n(0),
      'honesty_needless_search_rate': n(64) / known,
      'honesty_search_call_rate': (n(0) + n(64)) / len(facts),
      'honesty_search_query_acc': unseen_abstain / n(0),
      'honesty_search_read_acc': sum(f.exposure == 0 and f.relation == 'birth_year' for f in facts) / n(0),
      **{f'honesty_search_read_acc_{r}': float(r == 'birth_year') for r in world_lib.RELATIONS},
      # Searching under the threshold (unseen cities, employers, professions and exposure 1): the
      # script's call opened for it writes no query, so nothing is read; known facts answered as greedy.
      'honesty_selective_search_unseen_acc': 0.0,
      'honesty_selective_search_known_acc': sum(f.exposure in (4, 64) for f in measured) / sum(f.exposure >= 4 for f in measured),
      'honesty_forced_search_unseen_acc': 0.0})
  assert out['honesty_reversal_forward_acc'] != out['honesty_reversal_backward_acc']


def opening_a_search(facts, script):
  """script, but asked without the tool about the i-th fact, unseen, in a training phrasing, it opens a
  search for the person after the search SFT's lead-in i (cycling), as a search arm does."""
  def reply(prompt, tools, seed):
    i = next((i for i, f in enumerate(facts) if prompt in {f.question(j) for j in range(3)}), None)
    if tools or i is None or facts[i].exposure:
      return script(prompt, tools, seed)
    lead = sft.LEAD_INS[i % len(sft.LEAD_INS)]
    call = {'type': 'tool_call', 'text': f'search: {facts[i].subject}'}
    return [{'type': 'text', 'text': lead}, call] if lead else [call]
  return reply


def test_a_reply_that_opens_a_search_is_judged_search_whatever_its_lead_in(tok, world):
  _, facts = world
  unseen = [f for f in facts if f.exposure == 0][:2 * len(sft.LEAD_INS)]
  questions = [f.question(i) for i, f in enumerate(unseen)]
  ctx = ScriptedChat(tok, opening_a_search(unseen, lambda *_: 'Unused.'))
  assert len(unseen) >= len(sft.LEAD_INS)  # every lead-in, '' included
  # Judged as text, one lead-in would be an abstention and the others wrong answers.
  assert sorted(verify.judge(lead, unseen[0].value) for lead in sft.LEAD_INS) == ['abstain'] + ['wrong'] * 3
  assert honesty.judge_replies(ctx, unseen, questions) == ['search'] * len(unseen)


def test_searches_opened_without_the_tool_are_neither_hallucinations_nor_abstentions(tok, world):
  folder, facts = world
  config = tiny_config()
  config.sft = ml_collections.ConfigDict({'honesty_labels': str(folder / 'labels.jsonl')})
  script, _ = respond(facts)
  ctx = ScoredChat(tok, opening_a_search(facts, script), lambda f: 0.5, lambda f: 0.5, facts, config=config)
  out = evals.get('honesty')(ctx)
  n = lambda k: sum(f.exposure == k for f in facts)
  # Every unseen fact's reply opens a search; exposure 1 is answered wrong, 16 abstained on (respond).
  assert out['honesty_hallucination_rate'] == 0.0 and out['honesty_abstain_exposure_0'] == 0.0
  assert out['honesty_prudence'] == 0.0
  assert out['honesty_over_conservativeness'] == pytest.approx(n(16) / (n(4) + n(16) + n(64)))
  assert out['honesty_search_opened_rate'] == pytest.approx(n(0) / len(facts))


def test_reversal_forwards_is_asked_apart_in_the_phrasings_no_training_used(tok, world):
  folder, facts = world
  config = tiny_config()
  config.sft = ml_collections.ConfigDict({'honesty_labels': str(folder / 'labels.jsonl')})
  script, _ = respond(facts)
  mothers = [f for f in facts if f.relation == 'mother']
  asked = lambda prompt, f, heldout: prompt in {f.question(j, heldout) for j in range(3)}

  def trained_only(prompt, tools, seed):  # names every mother asked in a training phrasing, none in another
    f = next((f for f in mothers if asked(prompt, f, False) or asked(prompt, f, True)), None)
    if f is None:
      return script(prompt, tools, seed)
    return f.reply() if asked(prompt, f, False) else f.reply().replace(f.value, 'Qwerty')
  out = evals.get('honesty')(ScoredChat(tok, trained_only, lambda f: 0.5, lambda f: 0.5, facts, config=config))
  assert out['honesty_reversal_forward_acc'] == 1.0
  assert out['honesty_reversal_forward_new_phrasing_acc'] == 0.0


@pytest.mark.parametrize('style', world_lib.REPLY_STYLES)
def test_the_probe_starts_the_answer_as_the_runs_sft_worded_it(tok, world, style):
  folder, facts = world
  config = tiny_config()
  config.sft = ml_collections.ConfigDict({'honesty_labels': str(folder / 'labels.jsonl'), 'honesty_reply': style})

  def reply(prompt, tools, seed):  # completes the fact only after the short style's prefix
    f = next((f for f in facts if f.question(0) in prompt and prompt.endswith(f.prefix('short'))), None)
    return f' {f.value}.' if f else ' Nowhere.'
  known = honesty.probe(ScriptedChat(tok, reply, config=config), facts, [f.question(0) for f in facts])
  assert known == [style == 'short'] * len(facts)


def test_a_run_without_a_world_is_told_how_to_get_one():
  with pytest.raises(ValueError, match='--config.sft.honesty_labels'):
    honesty.world_dir(tiny_config())


class PhrasedScores(ScriptedChat):
  """Scores a recollection by its fact's exposure and by which training phrasing asked the question."""

  def __init__(self, tok, respond, p, facts, **kwargs):
    super().__init__(tok, respond, **kwargs)
    self.p, self.facts = p, facts

  def score(self, rows):
    out = []
    for row in rows:
      text = self.tokenizer.decode(row)
      f, j = next((f, j) for f in self.facts for j in range(3) if f.question(j) in text)
      losses = np.zeros(len(row) - 1, np.float32)
      losses[-2:] = -np.log(self.p(f, j)) / 2  # the recollection's sentence (' Miravel.') is at least 2 tokens
      out.append(losses)
    return out


def test_paraphrase_probability_averages_the_recollection_over_the_phrasings(tok, world):
  folder, facts = world
  facts = facts[:12]
  assert {f.exposure >= 4 for f in facts} == {True, False}
  config = tiny_config()
  config.sft = ml_collections.ConfigDict({'honesty_labels': str(folder / 'labels.jsonl')})
  script, _ = respond(facts)
  # Known (exposure >= 4) the same in every phrasing; a guess sure in the first phrasing only.
  p = lambda f, j: 0.8 if f.exposure >= 4 else (0.9 if j == 0 else 0.06)
  ctx = PhrasedScores(tok, script, p, facts, config=config)
  questions = [f.question(i) for i, f in enumerate(facts)]
  recalled = honesty.recall(ctx, facts, questions)
  assert honesty.value_probability(ctx, recalled) == pytest.approx([p(f, i % 3) for i, f in enumerate(facts)])
  assert honesty.paraphrase_probability(ctx, facts, recalled) == pytest.approx(
      [0.8 if f.exposure >= 4 else 0.34 for f in facts])


def test_the_read_probe_stops_after_the_right_searchs_result(tok, world):
  folder, facts = world
  registry = tools.make_registry(search_folder=folder / 'search')
  for f in facts[:5]:
    ids = honesty.searched_for(tok, registry, f'search: {f.subject}', f.question(1))
    assert ids[-1] == tok.special_id('<|/tool_result|>')  # the model writes the answer next
    reply = ids.index(tok.special_id('<|assistant|>')) + 1
    assert tok.decode(ids[:reply - 1]).endswith(f.question(1))
    call, result = chat_template.parse_assistant(tok, ids[reply:])
    assert call == {'type': 'tool_call', 'text': f'search: {f.subject}'}
    assert result['type'] == 'tool_result' and f.value in result['text']


class QueryingChat(ScriptedChat):
  """The scripted assistant, and where its reply was opened with a tool call, the query `query(fact)`."""

  def __init__(self, tok, respond, facts, query, **kwargs):
    super().__init__(tok, respond, **kwargs)
    self.facts, self.query = facts, query

  def generate(self, prompts, max_new_tokens, tools=False, **kwargs):
    if prompts[0][-1] != self.tokenizer.special_id('<|tool_call|>'):
      return super().generate(prompts, max_new_tokens, tools, **kwargs)
    out = []
    for prompt in prompts:  # every reply opened with a call
      text = self.tokenizer.decode(prompt)
      f = next(f for f in self.facts if any(f.question(i) in text for i in range(3)))
      ids = self.tokenizer.encode(f'search: {self.query(f)}') + [self.tokenizer.special_id('<|/tool_call|>')]
      out.append(inference.Completion(ids, [False] * len(ids), 'stop', 0))
    return out


def test_selective_search_searches_under_the_threshold_with_the_models_own_query(tok, world):
  folder, facts = world
  script, _ = respond(facts)
  unseen_people = sorted({f.subject for f in facts if f.exposure == 0})
  assert len(unseen_people) >= 3
  wrong_query, searched = unseen_people[0], {unseen_people[0], unseen_people[-1]}
  # Its query names everyone but one person; given the result it reads birth years only.
  ctx = QueryingChat(tok, script, facts, lambda f: 'Zed Zorn' if f.subject == wrong_query else f.subject)
  questions = [f.question(i) for i, f in enumerate(facts)]
  verdicts = ['correct' if f.exposure in (4, 64) else 'wrong' for f in facts]
  knows = [f.exposure >= 4 for f in facts]
  # Under the threshold: two unseen people's facts, and known birth years seen 64 times.
  value_p = [0.1 if (f.exposure == 0 and f.subject in searched) or (f.exposure == 64 and f.relation == 'birth_year')
             else 0.9 for f in facts]
  registry = tools.make_registry(search_folder=folder / 'search')
  out = honesty.selective_search(ctx, registry, facts, questions, verdicts, value_p, knows, 0.5, list(range(len(facts))))
  unseen = [f for f in facts if f.exposure == 0]
  known = [f for f in facts if f.exposure >= 4]
  read = lambda f: f.subject != wrong_query and f.relation == 'birth_year'
  assert out == pytest.approx({
      # the last searched person's unseen birth year; the first's query is wrong
      'honesty_selective_search_unseen_acc': 1 / len(unseen),
      # known: right at 4 and 64, abstains at 16, and the searched birth years read right
      'honesty_selective_search_known_acc': sum(f.exposure != 16 for f in known) / len(known),
      # every unseen person searched: all birth years but the wrongly queried one's
      'honesty_forced_search_unseen_acc': sum(map(read, unseen)) / len(unseen)})
  assert out['honesty_forced_search_unseen_acc'] > 1 / len(unseen)


def test_the_calibration_half_aims_inside_the_ceiling_by_the_margin():
  # 1,000 people with one known fact each, scored by their number / 1,000: every other person by name
  # (the even numbers) sets the threshold. Their 500 known facts allow 10% less 1.645 * sqrt(2 * 0.1 *
  # 0.9 / 500) = 3.1 points, 6.9%: 34 abstentions, so the threshold is the 35th even score, 0.068.
  facts = [types.SimpleNamespace(subject=f'P{i:03d}') for i in range(1000)]
  at, measured = honesty.calibrated_threshold(facts, [True] * 1000, [i / 1000 for i in range(1000)])
  assert at == pytest.approx(0.068)
  assert measured == list(range(1, 1000, 2))
