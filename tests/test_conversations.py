import collections
import itertools
import json
import pathlib
import random
import re
import subprocess
import sys

import pytest

from llm import chat_template, tools
from llm.data import conversations as cv
from llm.data import gsm8k
from llm.honesty import sft as honesty_sft
from conftest import ROOT
from test_honesty_sft import labelled  # noqa: F401 (a fixture)


# Conversations each real source yields from the shared files (which are byte-identical to
# upstream): everything but hh-rlhf's 12 malformed dialogues and GSM8K test's one annotation
# that is no number ('<<3/4=3/4>>').
REAL_SOURCE_COUNTS = {'gsm8k': 7473, 'gsm8k_test': 1318, 'self_instruct': 252,
                      'alpaca_gpt4': 805, 'hh_chosen': 2300, 'topical_chat': 2156,
                      'refusals': 1718}  # 2,178 distinct red-team requests less a held-out fifth (test_jailbreak)

NATALIA_QUESTION = ('Natalia sold clips to 48 of her friends in April, and then she sold half as '
                    'many clips in May. How many clips did Natalia sell altogether in April and '
                    'May?')
NATALIA_ANSWER = ('Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = '
                  '<<48+24=72>>72 clips altogether in April and May.\n#### 72')
NATALIA = gsm8k.parse(NATALIA_QUESTION, NATALIA_ANSWER)
FACTS = cv.IdentityFacts(parameters='about 124 million', context_tokens=1024, pretraining_data='web pages',
                         tools='a calculator')




def parts(message) -> list[dict]:
  content = message['content']
  return [{'type': 'text', 'text': content}] if isinstance(content, str) else content


def assert_well_formed(conversation):
  messages = conversation[1:] if conversation[0]['role'] == 'system' else conversation
  assert [m['role'] for m in messages] == ['user', 'assistant'] * (len(messages) // 2)
  assert messages, conversation
  for message in conversation:
    message_parts = parts(message)
    assert message_parts and all(p['text'].strip() for p in message_parts), message
    allowed = chat_template.PART_TYPES if message['role'] == 'assistant' else ('text',)
    assert all(p['type'] in allowed for p in message_parts), message
    known = tuple(f'{name}: ' for name in tools.make_registry(search_folder='.', python_tool=True))
    assert all(p['text'].startswith(known) for p in message_parts if p['type'] == 'tool_call'), message


def assistant_text(conversation) -> str:
  return ''.join(p['text'] for p in parts(conversation[-1]) if p['type'] == 'text')


# --- sources ---------------------------------------------------------------------------------

@pytest.mark.parametrize('name', sorted(REAL_SOURCE_COUNTS))
def test_real_source_yields_well_formed_conversations(data_dir, name):
  conversations = list(cv.SOURCES[name](data_dir, 0))
  assert len(conversations) == REAL_SOURCE_COUNTS[name]
  for conversation in conversations:
    assert_well_formed(conversation)


@pytest.mark.parametrize('name', cv.GENERATED)
def test_generated_source_yields_well_formed_conversations(tmp_path, name, request):
  # python_letters and copy_text read the Gutenberg books; the others need no data.
  data = request.getfixturevalue('data_dir') if name in ('python_letters', 'copy_text') else tmp_path
  conversations = list(itertools.islice(cv.SOURCES[name](data, 0, **_facts(name)), 500))
  assert len(conversations) >= 100
  for conversation in conversations:
    assert_well_formed(conversation)


def test_every_source_is_registered_with_a_uniform_signature(data_dir):
  assert set(cv.SOURCES) == set(REAL_SOURCE_COUNTS) | set(cv.GENERATED) | set(honesty_sft.SOURCES)
  for name, source in cv.SOURCES.items():
    if name not in honesty_sft.SOURCES:  # those read a labelled set: tests/test_honesty_sft.py
      assert next(source(data_dir, 3, **_facts(name))), name


def _facts(source: str) -> dict:
  """The identity source also needs the facts of the model it describes."""
  return {'facts': FACTS} if source == 'identity' else {}


def test_gsm8k_natalia_example_becomes_calls_results_and_a_final_answer():
  conversation = cv.gsm8k_conversation(NATALIA)
  assert conversation == [
      {'role': 'user', 'content': NATALIA_QUESTION},
      {'role': 'assistant', 'content': [
          {'type': 'text', 'text': 'Natalia sold 48/2 = '},
          {'type': 'tool_call', 'text': 'calculator: 48/2'},
          {'type': 'tool_result', 'text': '24'},
          {'type': 'text', 'text': ' clips in May.\nNatalia sold 48+24 = '},
          {'type': 'tool_call', 'text': 'calculator: 48+24'},
          {'type': 'tool_result', 'text': '72'},
          {'type': 'text', 'text': ' clips altogether in April and May.\nThe answer is 72.'}]}]


def test_gsm8k_source_starts_with_natalia(data_dir):
  assert next(cv.gsm8k(data_dir, 0)) == cv.gsm8k_conversation(NATALIA)


def test_gsm8k_tool_results_are_the_calculators_output(data_dir):
  checked = 0
  for conversation in itertools.islice(cv.gsm8k(data_dir, 0), 200):
    reply = parts(conversation[-1])
    for call, result in zip(reply, reply[1:]):
      if call['type'] == 'tool_call':
        assert result['type'] == 'tool_result'
        assert result['text'] == tools.calculator(call['text'].removeprefix('calculator: '))
        checked += 1
    assert re.search(r'\nThe answer is -?[\d.]+\.$', assistant_text(conversation))
  assert checked > 400


def test_gsm8k_drops_wrong_annotations_and_cleans_repeated_numbers():
  assert cv.gsm8k_conversation(gsm8k.parse('q', 'It is 2+2 = <<2+2=5>>5.\n#### 5')) is None
  assert cv.gsm8k_conversation(gsm8k.parse('q', 'It is <<2+x=4>>4.\n#### 4')) is None
  assert cv.gsm8k_conversation(gsm8k.parse('q', 'It is <<2+2>>4.\n#### 4')) is None  # no result
  reply = cv.gsm8k_conversation(gsm8k.parse(
      'q', 'He pays 0.2 x 50 = $<<0.2 x 50=10>>10 and 150*150 = <<150*150=22500>>22,500 '
      'apples.\n#### 22,500'))[-1]['content']
  assert [p['text'] for p in reply] == [
      'He pays 0.2 x 50 = $', 'calculator: 0.2 * 50', '10', ' and 150*150 = ',
      'calculator: 150*150', '22500', ' apples.\nThe answer is 22500.']


def test_hh_dialogue_parsing():
  assert cv.hh_dialogue('\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: ok') == [
      {'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'hello'},
      {'role': 'user', 'content': 'bye'}, {'role': 'assistant', 'content': 'ok'}]
  assert cv.hh_dialogue('\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye') is None
  assert cv.hh_dialogue('\n\nHuman: hi\n\nAssistant:') is None
  assert cv.hh_dialogue('\n\nAssistant: hello\n\nHuman: hi\n\nAssistant: ok') is None
  assert cv.hh_dialogue('\n\nHuman: hi\n\nHuman: again\n\nAssistant: ok') is None


def test_topical_chat_merges_turns_and_drops_a_trailing_user_turn():
  messages = [{'agent': 'agent_1', 'message': 'Hi.'}, {'agent': 'agent_1', 'message': 'Music?'},
              {'agent': 'agent_2', 'message': 'Yes!'}, {'agent': 'agent_1', 'message': 'Bye.'}]
  assert cv.topical_chat_dialogue(messages) == [{'role': 'user', 'content': 'Hi.\nMusic?'},
                                                {'role': 'assistant', 'content': 'Yes!'}]
  assert cv.topical_chat_dialogue(messages[:2]) is None


def test_identity_states_the_facts_it_is_given(tmp_path):
  conversations = list(cv.identity(tmp_path, 0, FACTS))
  answers = {c[0]['content']: set() for c in conversations}
  for question, reply in conversations:
    answers[question['content']].add(reply['content'])
  assert {'Who are you?', 'What can you do?', 'Who made you?', 'Can you browse the internet?',
          'How big are you?', 'What were you trained on?', 'who are you'} <= set(answers)
  assert all(a.startswith('No') for a in answers['Can you browse the internet?'])
  assert any('about 124 million parameters' in a for a in answers['How big are you?'])
  assert any('1024 tokens' in a for a in answers['How much can you remember?'])
  assert any('web pages' in a for a in answers['What were you trained on?'])
  assert not any(re.search(r'\b4 million', a) for group in answers.values() for a in group)
  assert len(answers['Who are you?']) >= 2  # several phrasings of each answer
  assert sorted(map(str, conversations)) == sorted(map(str, cv.identity(tmp_path, 1, FACTS)))
  with pytest.raises(ValueError, match='identity_facts'):
    next(cv.identity(tmp_path, 0))


# --- arithmetic ------------------------------------------------------------------------------

def python_value(expression: str) -> float:
  assert re.fullmatch(r'[\d\s+\-*/()]+', expression), expression
  return eval(expression, {'__builtins__': {}})  # safe: digits and operators only, checked above


@pytest.mark.parametrize('digits,ops', [(2, 1), (3, 1), (2, 2), (3, 2)])
def test_arithmetic_problems_are_correct(digits, ops):
  rng = random.Random(digits * 10 + ops)
  for _ in range(300):
    question, expression, answer = cv.arithmetic_problem(rng, digits, ops)
    assert float(answer) == python_value(expression)
    assert re.fullmatch(r'-?\d+', answer)  # divisions are exact
    assert len(re.findall(r' [-+*/] ', expression)) == ops
    dividend = re.match(r'(\d+) / ', expression)
    operands = [int(n) for n in re.findall(r'\d+', expression)]
    for n in operands[1:] if dividend else operands:
      assert len(str(n)) == digits, expression
    for n in operands:
      assert str(n) in question, (question, expression)


def test_arithmetic_conversation_calls_the_calculator_and_states_the_answer(tmp_path):
  for conversation in itertools.islice(cv.arithmetic(tmp_path, 0), 300):
    reply = parts(conversation[-1])
    assert [p['type'] for p in reply] == ['text', 'tool_call', 'tool_result', 'text']
    expression = reply[1]['text'].removeprefix('calculator: ')
    assert reply[2]['text'] == tools.calculator(expression)
    assert float(reply[2]['text']) == python_value(expression)
    assert reply[3]['text'] == f'\nThe answer is {reply[2]["text"]}.'
    assert cv.extract_answer(assistant_text(conversation)) == reply[2]['text']


def test_arithmetic_is_deterministic_per_seed_and_varies_across_seeds(tmp_path):
  def first(seed):
    return list(itertools.islice(cv.arithmetic(tmp_path, seed), 100))
  assert first(0) == first(0)
  assert first(0) != first(1)
  assert cv.arithmetic_problem(random.Random(5), 3, 2) == cv.arithmetic_problem(random.Random(5), 3, 2)


def test_arithmetic_has_many_phrasings(tmp_path):
  shapes = collections.Counter()
  for conversation in itertools.islice(cv.arithmetic(tmp_path, 0), 2000):
    question = conversation[0]['content']
    for word in cv._NAMES + cv._ITEMS:
      question = re.sub(rf'\b{word}\b', 'X', question)
    shapes[re.sub(r'\(?\d+ [-+*/] \d+\)?( [-+*/] \d+)?|\d+', 'N', question)] += 1
  assert len(shapes) >= 16  # word problems and plain ones
  assert any(q.startswith('What is N') for q in shapes) and any('shared equally' in q for q in shapes)


def test_arithmetic_problem_rejects_unsupported_shapes():
  with pytest.raises(ValueError, match='ops'):
    cv.arithmetic_problem(random.Random(0), 2, 3)
  rng = random.Random(0)
  with pytest.raises(ValueError, match='beyond the calculator'):  # a product of two 60-digit numbers
    for _ in range(50):
      cv.arithmetic_problem(rng, 60, 1)


@pytest.mark.parametrize('text,expected', [
    ('The answer is 936.', '936'), ('1,234', '1234'), ('It is 1,234,567 apples.', '1234567'),
    ('-5', '-5'), ('The answer is -17.', '-17'), ('5.0', '5'), ('$12.50', '12.5'),
    ('costs $1,250.00.', '1250'), ('0.25', '0.25'), ('.5 cups', '0.5'), ('10-3', '3'),
    ('First 12, then 7 and finally 40.', '40'), ('no number here', None), ('', None),
    ('The answer is \u221242.', '-42'), ('10\u22123', '3'),  # U+2212, the typographic minus
    ('(3+4)-2', '2'), ('(3+4)\u22122', '2'),  # after ')' a minus subtracts too
    # a fraction is one number, not its denominator: as decimals where they end, else in lowest terms
    ('The answer is 3/4.', '0.75'), ('1/2', '0.5'), ('12/4 apples', '3'), ('2/6 of them', '1/3'),
    ('-1/3', '-1/3'), ('3 1/2 cups', '3.5'), ('It is -2 3/4.', '-2.75'), ('\u22121/8', '-0.125'),
    ('1/0', '0'), ('1/2.5', '2.5'),  # no denominator of 0, nor one with a decimal point
    # digits grouped by commas stay one number in a fraction too: 1000/3 = 333 1/3, not 3
    ('The answer is 1,000/3.', '1000/3'), ('1,000/8', '125'), ('1/1,000', '0.001'), ('2 1,000/2,000', '2.5'),
    # numbers run together by slashes (a date) are no number: neither 2020 nor 3/4 of anything
    ('On 3/4/2020 it rained.', None), ('I had 5 apples on 3/4/2020.', '5'), ('-1/2/3', None),
    ('2 3/4/2020', '2'), ('1,000/3/4', None), ('2.5/3/4', None),
    ('Due 2020-03-04.', None), ('5 apples on 2020-03-04', '5'), ('2020-03-045', '45'), ('10-3-2', '2'),
    # a number after a label names the step, it is no whole part of a mixed number
    ('Step 2 1/2 of the pie is left.', '0.5'), ('step 3 3/4', '0.75'), ('Problem 12 5/8', '0.625'),
    ('The answer is 3 1/2.', '3.5'), ('Step 2: 3 1/2', '3.5')])
def test_extract_answer(text, expected):
  assert cv.extract_answer(text) == expected


# --- split and mixture -----------------------------------------------------------------------

def test_split_is_deterministic_and_independent_of_order(data_dir):
  conversations = list(itertools.islice(cv.arithmetic(data_dir, 0), 300))
  train, val = cv.split(conversations, 0.1)
  assert (train, val) == cv.split(list(reversed(conversations)), 0.1)
  assert 10 <= len(val) <= 60
  assert sorted(map(str, train + val)) == sorted(map(str, conversations))
  assert cv.split(conversations, 0.1, seed=1) != (train, val)
  assert len(cv.split(conversations[:2], 0.01)[1]) == 1  # at least one val conversation
  assert cv.split(conversations, 0.0)[1] == []


def test_split_holds_a_request_out_in_all_its_conversations_or_none():
  """Validation must ask what training never answered: a request asked in several conversations (other
  replies, other casing or punctuation) is held out whole, or val_*_loss measures trained prompts."""
  conversations = [[{'role': 'user', 'content': asked.format(i)}, {'role': 'assistant', 'content': f'reply {j}'}]
                   for i in range(100) for j, asked in enumerate(('What is {}?', 'what is {}', 'WHAT IS {} !!'))]
  train, val = cv.split(conversations, 0.2)
  assert 30 <= len(val) <= 90 and len(val) % 3 == 0
  numbers = lambda side: {re.search(r'\d+', c[0]['content']).group() for c in side}
  assert not numbers(train) & numbers(val)
  with pytest.raises(ValueError, match='3 conversations that all open with one request leave none to hold out'):
    cv.split(conversations[:3], 0.2)


def test_identity_validation_holds_out_whole_topics():
  """identity pairs every question of a topic with every answer of it (and a casual copy of each
  question): no question or answer of a validation conversation may be trained in another pairing."""
  splits = cv.load_mixture(pathlib.Path('.'), {'identity': 1.0}, 0.2, seed=0, identity_facts=FACTS)
  train, val = splits['identity']
  assert val and train
  asked = lambda side: {c[0]['content'].lower().rstrip('?!.') for c in side}
  answered = lambda side: {c[1]['content'] for c in side}
  assert not asked(train) & asked(val) and not answered(train) & answered(val)


def test_identity_eval_questions_stay_trained_at_the_configs_val_fraction():
  """llm/evals/identity.py asks about facts as training taught them: at configs/sft_small.py's
  val_fraction no topic it asks about is the one held out."""
  from configs import sft_small
  from llm.evals import identity
  val_fraction = sft_small.get_config().sft.val_fraction
  train, _ = cv.split(cv.identity(None, 0, FACTS), val_fraction, 0, cv.identity_topic_key(FACTS))
  trained = {c[0]['content'] for c in train}
  assert {q for questions in identity.QUESTIONS.values() for q in questions} <= trained


def test_identity_names_the_tools_the_run_was_taught():
  """A run taught python and search must not be taught that its only tool is a calculator; arithmetic
  stays the calculator's, and a calculator-only run's conversations keep their wording."""
  from configs import sft_small, sft_tools
  from llm import model as model_lib
  from llm.evals import identity
  facts_of = lambda config: identity.run_facts(config, model_lib.ModelConfig.from_config(config.model, 512))
  answers = lambda facts: {c[1]['content'] for c in cv.identity(None, 0, facts)}
  tools = facts_of(sft_tools.get_config())
  assert tools.tools == 'a calculator, a text search and a Python interpreter'
  said = answers(tools)
  assert not any('only tool I can use is a calculator' in a for a in said)
  assert any('the only tools I can use are a calculator, a text search and a Python interpreter' in a for a in said)
  assert 'For arithmetic I call a calculator. I am bad at doing it in my head, so the tool does the computing.' in said
  calculator_only = facts_of(sft_small.get_config())
  assert calculator_only.tools == 'a calculator'
  assert any(a.endswith('and the only tool I can use is a calculator.') for a in answers(calculator_only))


def test_an_rl_run_states_the_tools_of_the_sft_run_it_started_from(tmp_path):
  """An RL run's config has no sft section: the identity eval takes the tools from the SFT run up its
  init_from chain, as the well-formed eval takes its held-out prompts."""
  import ml_collections
  from configs import sft_search
  from llm.evals import identity
  sft = sft_search.get_config()
  sft.init_from = ''
  (tmp_path / 'config.json').write_text(sft.to_json_best_effort())
  rl = json.loads(sft.to_json_best_effort())
  del rl['sft']
  rl.update(task='grpo', init_from=str(tmp_path))
  assert identity.tools_taught(ml_collections.ConfigDict(rl)) == ['calculator', 'search']


def test_load_mixture_counts_and_splits(data_dir):
  splits = cv.load_mixture(data_dir, {'self_instruct': 1.0, 'arithmetic': 2.0}, 0.1, seed=0)
  assert set(splits) == {'self_instruct', 'arithmetic'}
  assert sum(map(len, splits['self_instruct'])) == REAL_SOURCE_COUNTS['self_instruct']
  assert sum(map(len, splits['arithmetic'])) == cv.DEFAULT_GENERATED
  capped = cv.load_mixture(data_dir, {'gsm8k': 1.0, 'identity': 1.0}, 0.2, 0, max_per_source=40,
                           identity_facts=FACTS)
  assert sum(map(len, capped['gsm8k'])) == 40
  assert sum(map(len, capped['identity'])) == 40
  assert capped['gsm8k'][1], 'validation split is empty'
  # sft.generated sets one generated source's count; the others and the real sources keep theirs.
  counted = cv.load_mixture(data_dir, {'arithmetic': 1.0, 'identity': 1.0, 'gsm8k': 1.0}, 0.1, 0, max_per_source=40,
                            identity_facts=FACTS, generated={'arithmetic': 70})
  assert [sum(map(len, counted[n])) for n in ('arithmetic', 'identity', 'gsm8k')] == [70, 40, 40]


def test_load_mixture_errors_name_the_problem(data_dir, tmp_path):
  with pytest.raises(ValueError, match=r"unknown conversation sources \['nope'\].*known.*gsm8k"):
    cv.load_mixture(data_dir, {'gsm8k': 1.0, 'nope': 1.0}, 0.1, 0)
  with pytest.raises(FileNotFoundError, match=r'gsm8k/train\.jsonl.*data\.dir'):
    cv.load_mixture(tmp_path, {'gsm8k': 1.0}, 0.1, 0)
  with pytest.raises(FileNotFoundError, match=r'topical_chat.*data\.dir'):
    cv.load_mixture(tmp_path, {'topical_chat': 1.0}, 0.1, 0)
  assert cv.load_mixture(tmp_path, {'identity': 1.0}, 0.1, 0, identity_facts=FACTS)['identity'][0]  # no files
  with pytest.raises(ValueError, match=r"sft.generated names \['gsm8k'\], which are not generated"):
    cv.load_mixture(data_dir, {'gsm8k': 1.0}, 0.1, 0, generated={'gsm8k': 10})


def test_an_endless_source_that_never_fits_is_refused_not_searched_forever(tmp_path):
  """arithmetic never ends: in a context no conversation of it fits in, load_mixture looped forever."""
  from llm.tokenizer import train_tokenizer
  rng = random.Random(0)
  text = '\n\n'.join(str(cv.arithmetic_conversation(rng, 2, 1)) for _ in range(200))
  tok = train_tokenizer([text], 600, tmp_path / 'tok.model', 10**6)
  with pytest.raises(ValueError, match=r"'arithmetic': 1000 conversations in a row do not fit in 8 tokens.*seq_len"):
    cv.load_mixture(tmp_path, {'arithmetic': 1.0}, 0.1, 0, tokenizer=tok, max_tokens=8)
  fitted = cv.load_mixture(tmp_path, {'arithmetic': 1.0}, 0.1, 0, max_per_source=20, tokenizer=tok, max_tokens=512)
  assert sum(map(len, fitted['arithmetic'])) == 20


# --- fitting into the context and the loss mask ----------------------------------------------

def rendered_length(tok, conversation) -> int:
  return len(chat_template.render(tok, conversation)[0])


def test_fit_keeps_the_first_exchanges_of_a_long_dialogue(data_dir, tok):
  for conversation in itertools.islice(cv.topical_chat(data_dir, 0), 20):
    fitted = cv.fit(conversation, tok, 200)
    assert fitted == conversation[:len(fitted)]
    assert fitted[-1]['role'] == 'assistant'
    assert rendered_length(tok, fitted) <= 200
    assert rendered_length(tok, conversation[:len(fitted) + 2]) > 200  # the longest such prefix


def test_fit_drops_what_cannot_fit_and_keeps_what_does(data_dir, tok):
  short = next(cv.identity(data_dir, 0, FACTS))
  assert cv.fit(short, tok, 256) == short
  assert cv.fit(short, tok, rendered_length(tok, short)) == short
  assert cv.fit(short, tok, rendered_length(tok, short) - 1) is None


def test_load_mixture_with_max_tokens(data_dir, tok):
  splits = cv.load_mixture(data_dir, {'alpaca_gpt4': 1.0, 'hh_chosen': 1.0}, 0.1, 0,
                           max_per_source=30, tokenizer=tok, max_tokens=128)
  for name, (train, val) in splits.items():
    assert len(train) + len(val) == 30, name
    for conversation in train + val:
      assert rendered_length(tok, conversation) <= 128
      assert_well_formed(conversation)


def test_mask_is_one_exactly_on_what_the_assistant_produces(tok):
  conversation = cv.gsm8k_conversation(NATALIA)
  ids, mask = chat_template.render(tok, conversation)
  sp, enc = tok.special_id, tok.encode
  expected = ([(tok.bos_id, 0), (sp('<|user|>'), 0)] + [(t, 0) for t in enc(NATALIA_QUESTION)]
              + [(sp('<|end|>'), 0), (sp('<|assistant|>'), 0)])
  for part in conversation[-1]['content']:
    body = enc(part['text'])
    if part['type'] == 'text':
      expected += [(t, 1) for t in body]
    elif part['type'] == 'tool_call':
      expected += [(t, 1) for t in [sp('<|tool_call|>'), *body, sp('<|/tool_call|>')]]
    else:
      expected += [(t, 0) for t in [sp('<|tool_result|>'), *body, sp('<|/tool_result|>')]]
  expected.append((sp('<|end|>'), 1))
  assert list(zip(ids, mask)) == expected
  trained = tok.decode([t for t, m in zip(ids, mask) if m])
  assert trained == ('Natalia sold 48/2 = calculator: 48/2 clips in May.\nNatalia sold 48+24 = '
                     'calculator: 48+24 clips altogether in April and May.\nThe answer is 72.')
  assert tok.decode([t for t, m in zip(ids, mask) if not m]) == NATALIA_QUESTION + '2472'


def test_show_prints_the_conversation_with_untrained_spans_bracketed(data_dir, tok,
                                                                   subprocess_env):
  # A subprocess, not an import: the CLI's absl flags would clash with other CLIs' in one process.
  shown = subprocess.run(
      [sys.executable, '-m', 'llm.data.show', '--source=gsm8k', '--index=0',
       f'--tokenizer={tok.path}', f'--data_dir={data_dir}'],
      env=subprocess_env, capture_output=True, text=True, check=True).stdout
  assert shown.endswith(
      f'[[<s><|user|>{NATALIA_QUESTION}<|end|><|assistant|>]]Natalia sold 48/2 = '
      '<|tool_call|>calculator: 48/2<|/tool_call|>[[<|tool_result|>24<|/tool_result|>]]'
      ' clips in May.\nNatalia sold 48+24 = <|tool_call|>calculator: 48+24'
      '<|/tool_call|>[[<|tool_result|>72<|/tool_result|>]] clips altogether in April '
      'and May.\nThe answer is 72.<|end|>\n')
  assert shown.startswith('gsm8k[0]: ')


def test_show_reads_an_imported_models_tokenizer_hf_json(data_dir, tok, tmp_path, subprocess_env):
  """What a run imported with python -m llm.hf import keeps (our tokenizer exported, here)."""
  from llm.interop.tokenizer import HFTokenizer
  HFTokenizer.from_ours(tok).save(tmp_path / 'tokenizer.hf.json')
  shown = [subprocess.run([sys.executable, '-m', 'llm.data.show', '--source=gsm8k', '--index=0', f'--tokenizer={path}',
                           f'--data_dir={data_dir}'], env=subprocess_env, capture_output=True, text=True,
                          check=True).stdout for path in (tok.path, tmp_path / 'tokenizer.hf.json')]
  assert shown[0] == shown[1] and '<|tool_call|>calculator: 48/2<|/tool_call|>' in shown[0]


def test_show_shows_the_sources_that_read_a_run_or_a_labelled_set(labelled, tok, tmp_path, subprocess_env):
  """identity states a run's facts, the honesty_* sources ask a labelled set's: flags of show's own give them."""
  from llm import model as model_lib
  from llm.evals import identity
  from tiny_config import tiny_config
  config = tiny_config()
  (tmp_path / 'run').mkdir()
  (tmp_path / 'run' / 'config.json').write_text(config.to_json())

  def show(*flags):
    return subprocess.run([sys.executable, '-m', 'llm.data.show', f'--tokenizer={tok.path}', f'--data_dir={tmp_path}',
                           *flags], env=subprocess_env, capture_output=True, text=True)  # a data dir they do not read

  shown = show('--source=identity', f'--workdir={tmp_path / "run"}').stdout
  facts = identity.run_facts(config, model_lib.ModelConfig.from_config(config.model, tok.vocab_size))
  assert shown.startswith('identity[0]: ') and facts.parameters in shown
  path, _ = labelled
  shown = show('--source=honesty_search', f'--honesty_labels={path}').stdout
  assert shown.startswith('honesty_search[0]: ') and '<|tool_call|>search: ' in shown
  refused = ('llm.data.show: --source=identity states the facts of the SFT run it trains (size, context, data, tools): '
             'give one of --config=SFT_CONFIG (e.g. configs/sft_tools.py) and --workdir=RUN (an SFT run)')
  assert show('--source=identity').stderr.strip().splitlines()[-1] == refused
  assert show('--source=identity', f'--workdir={tmp_path / "run"}',
              f'--config={ROOT}/tests/tiny_config.py:sft').stderr.strip().splitlines()[-1] == refused
  assert show('--source=honesty_answers').stderr.strip().splitlines()[-1] == (
      "llm.data.show: --source=honesty_answers asks the facts of a labelled set, and --honesty_labels='' is no file: "
      'give WORLD/labels.jsonl (python -m llm.honesty.interrogate writes it)')


def test_show_states_the_tools_the_sft_configs_mixture_teaches(tok, tmp_path, subprocess_env):
  """configs/sft_tools.py's identity conversations name its python and search tools, as its SFT
  writes them; the base run it fine-tunes taught none but the calculator."""
  from tiny_config import tiny_config
  (tmp_path / 'base').mkdir()
  (tmp_path / 'base' / 'config.json').write_text(tiny_config().to_json())
  # The order of the conversations does not hang on the facts they state: the first to list the tools.
  facts = cv.IdentityFacts(parameters='P', context_tokens=1, pretraining_data='D', tools='TOOLS')
  index = next(i for i, c in enumerate(cv.identity(None, 0, facts)) if 'use TOOLS' in c[-1]['content'])

  def show(run):
    return subprocess.run([sys.executable, '-m', 'llm.data.show', '--source=identity', f'--index={index}',
                           f'--tokenizer={tok.path}', f'--data_dir={tmp_path}', run], env=subprocess_env,
                          capture_output=True, text=True, check=True).stdout

  tools = show(f'--config={ROOT}/configs/sft_tools.py')
  assert 'use a calculator, a text search and a Python interpreter, but' in tools
  assert 'use a calculator, but' in show(f'--workdir={tmp_path / "base"}')


def test_show_ends_bad_input_in_one_line_naming_its_own_flags(tmp_path, tok, subprocess_env):
  """Not llm.main's --config.* flags, which llm.data.show does not have."""
  def last_line(*flags):
    r = subprocess.run([sys.executable, '-m', 'llm.data.show', *flags], env=subprocess_env, capture_output=True,
                       text=True)
    assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
    return r.stderr.strip().splitlines()[-1]

  missing = tmp_path / 'missing'
  assert last_line(f'--tokenizer={missing}.model') == (
      f"llm.data.show: --tokenizer={missing}.model is not a file; give a run's tokenizer file, DIR/tokenizer.model "
      '(or DIR/tokenizer.hf.json of an imported model)')
  (tmp_path / 'empty.hf.json').write_text('{}')
  assert last_line(f'--tokenizer={tmp_path}/empty.hf.json').startswith(
      f'llm.data.show: {tmp_path}/empty.hf.json is not a tokenizer.hf.json as python -m llm.hf import writes')
  assert last_line(f'--tokenizer={tok.path}', f'--data_dir={missing}') == (
      f'llm.data.show: data dir {missing} (--data_dir) does not exist; fix --data_dir=... or set it to "" to '
      'search the defaults')
  assert last_line(f'--tokenizer={tok.path}', f'--data_dir={tmp_path}') == (
      f'llm.data.show: {tmp_path}/gsm8k/train.jsonl (the GSM8K train split) not found; point the data dir '
      '(--config.data.dir; llm.data.show: --data_dir; or $LLM_DATA_DIR) at the folder holding the shared data')


def test_copy_numbers_answers_with_the_numbers_of_the_question_in_order():
  import re
  from llm.data import copy_numbers
  rng = random.Random(0)
  counts = set()
  for _ in range(500):
    user, assistant = copy_numbers.copy_conversation(rng)
    in_question = re.findall(r'\d+', user['content'])
    assert assistant['content'].split() == in_question
    assert all(1 <= len(n) <= 4 for n in in_question)
    counts.add(len(in_question))
  assert counts == {2, 4, 6}
  first = next(cv.SOURCES['copy_numbers'](None, 3))
  assert first == copy_numbers.copy_conversation(random.Random(3)) and 'copy_numbers' in cv.GENERATED


def test_a_source_of_weight_zero_is_off():
  splits = cv.load_mixture(pathlib.Path('.'), {'arithmetic': 1.0, 'copy_numbers': 0.0}, 0.1, seed=0, max_per_source=20)
  assert list(splits) == ['arithmetic'] and len(splits['arithmetic'][0]) + len(splits['arithmetic'][1]) == 20
