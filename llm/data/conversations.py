"""Conversations for supervised fine-tuning: real chat data, GSM8K tool use, and generated data.

Every source is a function (data_dir, seed) -> iterator of conversations, registered in SOURCES.
A conversation is a list of messages as in llm.chat_template: after an optional system message,
user and assistant turns alternate, starting with user and ending with assistant. Real-data
sources ignore the seed; generated ones (arithmetic, identity) are deterministic given it.

load_mixture() loads named sources, fits each conversation into the model's context (cutting
long dialogues after an assistant turn) and splits each source into train and val by opening
request (split()).
"""
import dataclasses
import fractions
import functools
import hashlib
import itertools
import json
import random
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator

from absl import logging

from llm import chat_template
from llm.data import gsm8k as gsm8k_data
from llm.data import copy_numbers, copy_text, letters
from llm.data import sources
from llm.honesty import sft as honesty
from llm.security import injection, jailbreak
from llm.tools import calculator

Conversation = list[dict]
Source = Callable[[Path, int], Iterator[Conversation]]

# Conversations a generated source yields when load_mixture is given no max_per_source.
DEFAULT_GENERATED = 5000
# The validation conversations of a real source must not change with the training seed.
_SPLIT_SEED = 0


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------

def _text(text: str) -> dict:
  return {'type': 'text', 'text': text}


def _tool_call(expression: str) -> dict:
  return {'type': 'tool_call', 'text': f'calculator: {expression}'}


def _tool_result(result: str) -> dict:
  return {'type': 'tool_result', 'text': result}


def _dialogue(turns: Iterable[str]) -> Conversation | None:
  """Alternating user/assistant texts -> messages; None when a turn is empty or the last one is
  the user's (there is nothing to train on after it)."""
  texts = [t.strip() for t in turns]
  if not texts or len(texts) % 2 or not all(texts):
    return None
  return [{'role': 'user' if i % 2 == 0 else 'assistant', 'content': t}
          for i, t in enumerate(texts)]


def opening_request(conversation: Conversation) -> str:
  """The text of the conversation's first user turn: what a held-out set keys a prompt by when it leaves
  out the prompts a run trained on (llm.evals.heldout.trained_requests)."""
  return next(m['content'] for m in conversation if m['role'] == 'user')


# What a source reads under the data dir, a file or a folder; the generated ones read nothing there.
READS = {'gsm8k': gsm8k_data.FOLDER, 'gsm8k_test': gsm8k_data.FOLDER,
         'self_instruct': 'self_instruct_user_oriented/user_oriented_instructions.jsonl',
         'alpaca_gpt4': 'alpaca_eval_gpt4_outputs/model_outputs.json',
         'hh_chosen': 'hh_rlhf_harmless_base/test.jsonl.gz', 'topical_chat': 'topical_chat',
         'python_letters': letters.BOOKS, 'copy_text': letters.BOOKS, 'refusals': jailbreak.REQUESTS}


def mixture_reads(mixture: dict[str, float]) -> list[str]:
  """What the sources of mixture with a weight above 0 read under the data dir: the data dir to
  search for (sources.find_data_dir's holds)."""
  return list(dict.fromkeys(READS[name] for name, weight in mixture.items() if weight > 0 and name in READS))


def _require(path: Path, source: str) -> Path:
  return sources.require(path, f'source {source!r}')


# ---------------------------------------------------------------------------------------------
# GSM8K: worked solutions whose <<expr=result>> annotations become calculator calls
# ---------------------------------------------------------------------------------------------

def gsm8k_conversation(item: gsm8k_data.Item) -> Conversation | None:
  """One GSM8K item as a tool-using conversation; None when an annotation does not check out.

  'Natalia sold 48/2 = <<48/2=24>>24 clips' becomes the text 'Natalia sold 48/2 = ', the call
  'calculator: 48/2', its result '24' and the text ' clips': the number the solution repeats
  after the annotation is dropped, since the tool result supplies it. '#### 72' becomes
  'The answer is 72.'.
  """
  steps = gsm8k_data.annotations(item.solution)
  if steps is None:
    return None
  parts, text_start = [], 0
  for step in steps:
    result = calculator(step.expression)
    if not gsm8k_data.same_number(result, step.result):
      return None
    parts += [_text(item.solution[text_start:step.start]), _tool_call(step.expression),
              _tool_result(result)]
    text_start = step.end
  parts.append(_text(f'{item.solution[text_start:]}The answer is {item.final_answer}.'))
  return [{'role': 'user', 'content': item.question},
          {'role': 'assistant', 'content': [p for p in parts if p['text']]}]


def _gsm8k_split(data_dir: Path, split: str) -> Iterator[Conversation]:
  for item in gsm8k_data.read(data_dir, split):
    conversation = gsm8k_conversation(item)
    if conversation:
      yield conversation


def gsm8k(data_dir: Path, seed: int) -> Iterator[Conversation]:
  del seed
  return _gsm8k_split(data_dir, 'train')


def gsm8k_test(data_dir: Path, seed: int) -> Iterator[Conversation]:
  """Held out: for evaluation, never for training."""
  del seed
  return _gsm8k_split(data_dir, 'test')


# ---------------------------------------------------------------------------------------------
# Instruction and chat data sets
# ---------------------------------------------------------------------------------------------

def self_instruct(data_dir: Path, seed: int) -> Iterator[Conversation]:
  del seed
  for record in sources.read_jsonl(_require(Path(data_dir) / READS['self_instruct'], 'self_instruct')):
    for instance in record['instances']:
      request = record['instruction'].strip()
      if instance['input'].strip():
        request += '\n\n' + instance['input'].strip()
      conversation = _dialogue([request, instance['output']])
      if conversation:
        yield conversation


def alpaca_gpt4(data_dir: Path, seed: int) -> Iterator[Conversation]:
  del seed
  path = _require(Path(data_dir) / READS['alpaca_gpt4'], 'alpaca_gpt4')
  for record in json.loads(path.read_text(encoding='utf-8')):
    conversation = _dialogue([record['instruction'], record['output']])
    if conversation:
      yield conversation


_HH_SPEAKER = re.compile(r'\n\n(Human|Assistant):')


def hh_dialogue(text: str) -> Conversation | None:
  """'\\n\\nHuman: ...\\n\\nAssistant: ...' -> messages; None unless the speakers alternate
  from Human to a final Assistant turn with no empty turn."""
  pieces = _HH_SPEAKER.split(text)  # [before, speaker, text, speaker, text, ...]
  speakers, turns = pieces[1::2], pieces[2::2]
  if pieces[0].strip() or speakers != ['Human', 'Assistant'] * (len(speakers) // 2):
    return None
  return _dialogue(turns)


def hh_chosen(data_dir: Path, seed: int) -> Iterator[Conversation]:
  del seed
  for record in sources.read_jsonl(_require(Path(data_dir) / READS['hh_chosen'], 'hh_chosen')):
    conversation = hh_dialogue(record['chosen'])
    if conversation:
      yield conversation


def topical_chat_dialogue(messages: list[dict]) -> Conversation | None:
  """Topical-Chat turns: agent_1 is the user, agent_2 the assistant. Consecutive messages of one
  agent are merged, a leading assistant turn and a trailing user turn are dropped."""
  turns = [(agent, '\n'.join(m['message'].strip() for m in group))
           for agent, group in itertools.groupby(messages, key=lambda m: m['agent'])]
  if turns and turns[0][0] == 'agent_2':
    turns = turns[1:]
  if turns and turns[-1][0] == 'agent_1':
    turns = turns[:-1]
  return _dialogue(text for _, text in turns)


def topical_chat(data_dir: Path, seed: int) -> Iterator[Conversation]:
  del seed
  folder = _require(Path(data_dir) / READS['topical_chat'], 'topical_chat')
  files = sorted(folder.glob('*.json'))
  if not files:
    raise FileNotFoundError(f'no *.json in {folder}: source topical_chat reads them; {sources.POINT_DATA_DIR}')
  for file in files:
    for record in json.loads(file.read_text(encoding='utf-8')).values():
      conversation = topical_chat_dialogue(record['content'])
      if conversation:
        yield conversation


# ---------------------------------------------------------------------------------------------
# Generated: arithmetic word problems answered with the calculator
# ---------------------------------------------------------------------------------------------

# Word problems: (expression, question). The expression is what the assistant sends to the
# calculator; {a}, {b}, {c} are numbers, {name} and {item} fill the story. Division is always
# '{a} / {b}' with a drawn as a multiple of b, so the answer is a whole number.
_WORD_PROBLEMS = {
    1: [
        ('{a} + {b}', '{name} buys a {item} for ${a} and a coat for ${b}. How much does '
                      '{name} spend in total?'),
        ('{a} - {b}', '{name} has ${a} and spends ${b} on a {item}. How much money is left?'),
        ('{a} * {b}', 'A {item} costs ${a}. How much do {b} of them cost?'),
        ('{a} / {b}', '{a} stickers are shared equally among {b} children. How many stickers '
                      'does each child get?'),
        ('{a} + {b}', 'A train travels {a} km in the morning and {b} km in the afternoon. How '
                      'far does it travel in total?'),
        ('{a} - {b}', 'A hiking trail is {a} km long. {name} has walked {b} km. How many km '
                      'are left?'),
        ('{a} * {b}', 'A truck drives {a} km every day. How far does it drive in {b} days?'),
        ('{a} / {b}', 'A ship sails {a} km in {b} hours at a steady speed. How many km does it '
                      'sail each hour?'),
        ('{a} - {b}', 'An oak tree is {a} years old and a pine tree is {b} years old. How many '
                      'years older is the oak?'),
        ('{a} + {b}', 'A castle was {a} years old when {name} was born, and {name} is now {b}. '
                      'How old is the castle now?'),
    ],
    2: [
        ('{a} * {b} + {c}', '{name} buys {a} pencils at ${b} each and a {item} for ${c}. How '
                            'much does {name} spend?'),
        ('{a} - {b} - {c}', '{name} has ${a}, spends ${b} on food and ${c} on a {item}. How '
                            'much money is left?'),
        ('{a} + {b} - {c}', 'A bus has {a} passengers. At the next stop {b} get on and {c} get '
                            'off. How many passengers are on the bus now?'),
        ('{a} / {b} + {c}', '{a} marbles are shared equally among {b} children. Each child '
                            'already had {c} marbles. How many marbles does each child have '
                            'now?'),
        ('{a} * {b} - {c}', 'A farm packs {a} boxes of {b} eggs each, and {c} eggs break. How '
                            'many eggs are left?'),
    ],
}
# Plain problems: {expression} in symbols, {words} in words (one operation only).
_PLAIN_QUESTIONS = ('What is {expression}?', 'Compute {expression}.', 'Calculate {expression}.',
                    'What does {expression} equal?', '{expression} = ?',
                    'Please work out {expression}.')
_PLAIN_WORD_QUESTIONS = ('What is {words}?', 'How much is {words}?')
_OPERATOR_WORDS = {'+': 'plus', '-': 'minus', '*': 'times', '/': 'divided by'}
_PLAIN_SHARE = 0.4  # of problems that are bare arithmetic rather than a story
_TWO_OP_SHARE = 0.3  # of generated conversations whose problem takes two operations
_NAMES = ('Sam', 'Maria', 'Leo', 'Nina', 'Omar', 'Ada', 'Ben', 'Lily', 'Kofi', 'Mei')
_ITEMS = ('book', 'lamp', 'bicycle', 'kettle', 'guitar', 'backpack', 'chair', 'clock')
_LEAD_INS = ('Let me use the calculator.', "I'll work that out with the calculator.",
             'Let me calculate that.', 'I can compute this with the calculator.')


def _draw(rng: random.Random, digits: int) -> int:
  return rng.randrange(10 ** (digits - 1), 10 ** digits)


def numbers_for(rng: random.Random, expression: str, digits: int) -> dict:
  """a, b, c of `digits` digits for an expression pattern; a is a multiple of b in a division."""
  a, b, c = (_draw(rng, digits) for _ in range(3))
  if '{a} / {b}' in expression:
    a = b * _draw(rng, digits)  # an exact division
  return dict(a=a, b=b, c=c)


def _plain_expression(rng: random.Random, ops: int) -> str:
  if ops == 1:
    return f'{{a}} {rng.choice("+-*/")} {{b}}'
  first, second = rng.choice('+-*'), rng.choice('+-*')
  expression = f'{{a}} {first} {{b}} {second} {{c}}'
  return f'({{a}} {first} {{b}}) {second} {{c}}' if rng.random() < 0.3 else expression


def arithmetic_problem(rng: random.Random, digits: int, ops: int) -> tuple[str, str, str]:
  """(question, expression, answer) of a problem on `digits`-digit numbers with `ops` operations
  (1 or 2): a word problem or bare arithmetic. The answer is calculator(expression); story
  problems never have a negative answer. Deterministic given rng's state, so evaluation can
  draw held-out problems from a fixed seed."""
  if ops not in _WORD_PROBLEMS or digits < 1:
    raise ValueError(f'arithmetic_problem(digits={digits}, ops={ops}): need digits >= 1 and '
                     f'ops in {sorted(_WORD_PROBLEMS)}')
  story = rng.random() >= _PLAIN_SHARE
  if story:
    pattern, question = rng.choice(_WORD_PROBLEMS[ops])
  else:
    pattern = _plain_expression(rng, ops)
    question = rng.choice(_PLAIN_QUESTIONS + (_PLAIN_WORD_QUESTIONS if ops == 1 else ()))
  while True:  # redraw until a story's answer is not negative (a few tries at most)
    numbers = numbers_for(rng, pattern, digits)
    expression = pattern.format(**numbers)
    answer = calculated(expression)
    if not (story and answer.startswith('-')):
      break
  words = ' '.join(_OPERATOR_WORDS.get(token, token) for token in expression.split())
  question = question.format(**numbers, expression=expression, words=words,
                             name=rng.choice(_NAMES), item=rng.choice(_ITEMS))
  return question, expression, answer


def calculated(expression: str) -> str:
  """The calculator's result of a generated problem, which must be a number: an 'error: ...'
  (a result past its 1e100) would become the reference answer."""
  answer = calculator(expression)
  if answer.startswith('error'):
    raise ValueError(f'{expression} is beyond the calculator ({answer}); draw problems with fewer digits')
  return answer


def arithmetic_conversation(rng: random.Random, digits: int, ops: int) -> Conversation:
  question, expression, answer = arithmetic_problem(rng, digits, ops)
  reply = [_text(rng.choice(_LEAD_INS)), _tool_call(expression), _tool_result(answer),
           _text(f'\nThe answer is {answer}.')]
  return [{'role': 'user', 'content': question}, {'role': 'assistant', 'content': reply}]


def arithmetic(data_dir: Path, seed: int) -> Iterator[Conversation]:
  """Endless: 2- and 3-digit problems, mostly one operation, some two."""
  del data_dir
  rng = random.Random(seed)
  while True:
    digits = rng.choice((2, 3))
    ops = 2 if rng.random() < _TWO_OP_SHARE else 1
    yield arithmetic_conversation(rng, digits, ops)


# Answers are found in the last number of a reply: '1,234', '-5', '$12.50', '.5', and a fraction
# '3/4', '1,000/3' or mixed number '3 1/2' as one number (read as its denominator, 3/4 would pass for
# 4). A '-', or the typographic minus U+2212 (a '−5' read as 5 would pass for the wrong answer), counts
# as a sign only when it does not follow a word or ')', so '10-3' ends in 3, not -3. A denominator is
# never 0 and is whole: '1/0' is 1 then 0, '1/2.5' is 1 then 2.5. Numbers run together by two or more
# slashes, a date such as '3/4/2020', are no number at all: read as 2020 or 3/4, a date would pass for
# an answer the reply never gave; so is an ISO date, '2020-03-04' (read as 4). A number after a label such as 'Step' names the step: 'Step 2 1/2'
# ends in 1/2, not 2 1/2.
_INTEGER = r'\d{1,3}(?:,\d{3})+|\d+'
_NUMBER = rf'(?:{_INTEGER})(?:\.\d+)?'
_LABELS = ('step', 'part', 'question', 'problem', 'case', 'example', 'item', 'no.')
_NOT_AFTER_A_LABEL = ''.join(rf'(?<!\b{re.escape(label)} )' for label in _LABELS)
_ANSWER_NUMBER = re.compile(
    r'(?P<sign>(?<![\w)])[-\u2212])?\$?(?:'
    rf'(?P<no_number>{_NUMBER}(?:/{_NUMBER}){{2,}}|\d{{4}}-\d\d-\d\d(?!\d))'
    rf'|(?:{_NOT_AFTER_A_LABEL}(?P<whole>{_INTEGER}) )?(?P<numerator>{_INTEGER})'
    r'/(?P<denominator>0*[1-9]\d{0,2}(?:,\d{3})+|0*[1-9]\d*)(?![./]?\d)'
    rf'|(?P<decimal>{_NUMBER}|\.\d+))', re.IGNORECASE)


def _written(value: fractions.Fraction) -> str:
  """A number as extract_answer writes it: decimal digits where they end ('0.75' for 3/4, '3' for
  6/2), otherwise the fraction in lowest terms ('1/3'), so equal numbers are equal strings."""
  rest = value.denominator
  for prime in (2, 5):
    while rest % prime == 0:
      rest //= prime
  if rest != 1:  # 1/3 has no decimal digits that end
    return str(value)
  places = 0
  while (value * 10 ** places).denominator != 1:
    places += 1
  digits = str(abs(value.numerator) * 10 ** places // value.denominator).rjust(places + 1, '0')
  whole, fraction = digits[:len(digits) - places], digits[len(digits) - places:]
  return ('-' if value < 0 else '') + whole + ('.' + fraction if fraction else '')


def extract_answer(text: str) -> str | None:
  """The final number of an assistant reply, normalised: no commas or '$', no trailing zeros
  after a decimal point ('5.0' -> '5', '$12.50' -> '12.5'), a fraction as its decimal where that
  ends ('3/4' -> '0.75', '3 1/2' -> '3.5') or in lowest terms ('2/6' -> '1/3'), the sign '-'
  whichever minus it was written with; None when there is no number (a date such as '3/4/2020'
  is none)."""
  matches = [m for m in _ANSWER_NUMBER.finditer(text) if not m['no_number']]
  if not matches:
    return None
  last = matches[-1]
  digits = lambda group: (last[group] or '0').replace(',', '')
  if last['decimal']:
    value = fractions.Fraction(digits('decimal'))
  else:
    value = int(digits('whole')) + fractions.Fraction(int(digits('numerator')), int(digits('denominator')))
  return _written(-value if last['sign'] else value)


# ---------------------------------------------------------------------------------------------
# Generated: who the model is
# ---------------------------------------------------------------------------------------------

PROJECT_NAME = 'llm'
FINETUNING_DATA = 'example conversations'
CALCULATOR = 'a calculator'  # what the identity conversations call the tool every run has, the one for arithmetic


@dataclasses.dataclass(frozen=True)
class IdentityFacts:
  """What the identity conversations state about the model being trained: taken from the run
  (llm.evals.identity.run_facts), never constants, so a model learns its own size."""
  parameters: str  # 'about 4.19 million'
  context_tokens: int  # the model's context length
  pretraining_data: str  # 'public-domain books from Project Gutenberg'
  tools: str  # 'a calculator', or every tool the run's conversations call: 'a calculator and a text search'


def _identity_topics(facts: IdentityFacts) -> list:
  parameters, context_tokens = facts.parameters, facts.context_tokens
  pretraining_data, tools = facts.pretraining_data, facts.tools
  # Arithmetic is the calculator's whatever other tools the run has; they are all named where its tools are.
  only_tools = f'the only tool I can use is {tools}' if tools == CALCULATOR else f'the only tools I can use are {tools}'
  return [
      (('Who are you?', 'What are you?', 'Tell me about yourself.', "What's your name?",
        'Introduce yourself.'),
       (f"I'm a small language model from the {PROJECT_NAME} project, with {parameters} "
        f'parameters. I can chat and use {tools}, but I know little and I often make mistakes.',
        f"I'm a tiny language model made in the {PROJECT_NAME} project. I was trained on "
        f'{pretraining_data} and then on {FINETUNING_DATA}.')),
      (('What can you do?', 'How can you help me?', 'What are you good at?',
        'What are your abilities?'),
       (f'I can chat, answer simple questions and use {CALCULATOR} for arithmetic. I am a very small '
        'model, so I know little and my answers are often wrong.',
        f'I can have short conversations and do arithmetic with {CALCULATOR}. I cannot browse the '
        'internet, and I make many mistakes, so please check what I say.')),
      (('Who made you?', 'Who created you?', 'Who built you?', 'Where do you come from?'),
       (f'I was made in the {PROJECT_NAME} project, a small open research codebase for training '
        f'language models. I was pretrained on {pretraining_data} and fine-tuned on '
        f'{FINETUNING_DATA}.',
        f'The {PROJECT_NAME} project trained me: first on {pretraining_data}, then on '
        f'{FINETUNING_DATA} to be an assistant.')),
      (('Can you browse the internet?', 'Can you look things up online?',
        'Do you have internet access?', 'Can you search the web for me?'),
       ('No, I cannot browse the internet. I only know what I learned in training, and '
        f'{only_tools}.',
        'No. I have no internet access, so I cannot look anything up or know recent news.')),
      (('How big are you?', 'How many parameters do you have?', 'How large is your model?',
        'Are you a large language model?'),
       (f'I am a small language model with {parameters} parameters, far smaller than the large '
        'models you may know.',
        f"I'm tiny: {parameters} parameters, and I can read only about {context_tokens} tokens "
        'of a conversation at once.')),
      (('What were you trained on?', 'What data did you learn from?', 'How were you trained?',
        'Where does your knowledge come from?'),
       (f'I was pretrained on {pretraining_data}, then fine-tuned on {FINETUNING_DATA} to follow '
        'requests and use a calculator.',
        f'First I read {pretraining_data}; then I learned from {FINETUNING_DATA}. That is all I '
        'know, so my knowledge is small and old-fashioned.')),
      (('Can you do math?', 'Are you good at arithmetic?', 'How do you do arithmetic?'),
       (f'I use {CALCULATOR} for arithmetic instead of working it out in my head, so sums are usually '
        'right, but I can still set up a problem wrongly.',
        f'For arithmetic I call {CALCULATOR}. I am bad at doing it in my head, so the tool does the '
        'computing.')),
      (('Are you always right?', 'Can I trust your answers?', 'Do you make mistakes?'),
       ('No. I am a very small model and I make mistakes often, so please check anything '
        'important.',
        'I make many mistakes and I can sound sure when I am wrong. Please double-check my '
        'answers.')),
      (('How much can you remember?', 'Do you remember our earlier conversations?'),
       (f'I only see the current conversation, and only about {context_tokens} tokens of it. '
        'I remember nothing between conversations.',)),
      (('Are you human?', 'Are you a person?', 'Are you alive?'),
       (f'No, I am a computer program: a small language model from the {PROJECT_NAME} project.',
        'No. I am a small language model, a program that predicts text.')),
      (('Hi!', 'Hello', 'Hey there!', 'Good morning!'),
       ("Hello! I'm a small language model. How can I help you?",
        'Hi! What would you like to talk about?')),
  ]


def _casual(question: str) -> str:
  """How people also type it: lower case, no final punctuation."""
  return question.lower().rstrip('?!.')


def identity(data_dir: Path, seed: int, facts: IdentityFacts | None = None) -> Iterator[Conversation]:
  """Every (question, answer) pairing of every topic, each question also typed casually, in an
  order shuffled by seed; finite (a few hundred). facts: the model's own (load_mixture's identity_facts)."""
  del data_dir
  if facts is None:
    raise ValueError('the identity source states facts about the model being trained: pass identity_facts '
                     '(llm.evals.identity.run_facts(config, params)) to load_mixture')
  conversations = [[{'role': 'user', 'content': asked}, {'role': 'assistant', 'content': answer}]
                   for questions, answers in _identity_topics(facts)
                   for question in questions
                   for asked in (question, _casual(question))
                   for answer in answers]
  random.Random(seed).shuffle(conversations)
  return iter(conversations)


def gold_topics(data_dir: Path, seed: int) -> Iterator[Conversation]:
  """The gold setting's conversations (llm/rl/gold.py): the RLHF study's SFT policy learns these."""
  del data_dir
  from llm.rl import gold  # here: llm.rl imports this module
  return gold.conversations(seed)


SOURCES: dict[str, Source] = {
    'gsm8k': gsm8k,
    'gsm8k_test': gsm8k_test,
    'self_instruct': self_instruct,
    'alpaca_gpt4': alpaca_gpt4,
    'hh_chosen': hh_chosen,
    'topical_chat': topical_chat,
    'arithmetic': arithmetic,
    'identity': identity,
    'python_letters': letters.python_letters,  # letter counting and spelling with the python tool
    'gold_topics': gold_topics,  # the controlled RLHF setting's prompts and responses (llm/rl/gold.py)
    'copy_numbers': copy_numbers.copy_numbers,  # the numbers of a text, copied exactly
    'copy_text': copy_text.copy_text,  # a passage of the books repeated exactly (python_letters copies words)
    'search_facts': injection.search_facts,  # questions about made-up people answered through search
    'search_injected': injection.search_injected,  # ... whose search results carry instructions, ignored
    'refusals': jailbreak.refusals,  # red-team requests (hh_rlhf_harmless_base) refused, a fifth held out
    **honesty.SOURCES,  # a world's facts answered, refused or searched as interrogation labelled them (honesty_labels)
}
# Endless sources: they need a count (DEFAULT_GENERATED unless max_per_source says otherwise).
GENERATED = ('arithmetic', 'identity', 'python_letters', 'gold_topics', 'copy_numbers', 'copy_text', 'search_facts',
             'search_injected')
# The tool, besides the calculator, that a source's conversations call (llm.tools.make_registry's names).
TOOLS_CALLED = {'python_letters': 'python', 'search_facts': 'search', 'search_injected': 'search',
                'honesty_search': 'search'}


# ---------------------------------------------------------------------------------------------
# Fitting, splitting, mixing
# ---------------------------------------------------------------------------------------------

def fit(conversation: Conversation, tokenizer, max_tokens: int) -> Conversation | None:
  """The longest prefix ending with an assistant turn whose rendering is at most max_tokens long,
  so a long dialogue keeps its first exchanges; None when not even the first exchange fits."""
  length, keep = 1, 0  # bos
  for i, message in enumerate(conversation):
    length += len(chat_template.render_message(tokenizer, message)[0])  # render()'s lengths add up
    if length > max_tokens:
      break
    if message['role'] == 'assistant':
      keep = i + 1
  return conversation[:keep] or None


def request_key(conversation: Conversation) -> str:
  """The opening request as the split groups by it: lower case, only letters and digits, so 'Who are
  you?' and 'who are you' (identity's casual copy) are one request."""
  return re.sub(r'[\W_]+', '', opening_request(conversation).lower())


def identity_topic_key(facts: IdentityFacts) -> Callable[[Conversation], str]:
  """An identity conversation's topic (its first question): every question of a topic is paired with
  every answer of it, so only a whole topic held out keeps its questions and answers out of training."""
  topic = {request_key([{'role': 'user', 'content': question}]): questions[0]
           for questions, _ in _identity_topics(facts) for question in questions}
  return lambda conversation: topic[request_key(conversation)]


def split(conversations: Iterable[Conversation], val_fraction: float, seed: int = 0,
          key: Callable[[Conversation], str] = request_key) -> tuple[list[Conversation], list[Conversation]]:
  """(train, val) by a hash of each conversation's group, key(conversation) (its opening request by
  default), as sources.split_documents does for text: a request asked in several conversations is
  held out in all of them or in none (else validation asks what training answered), and the order of
  the input does not matter."""
  groups: dict[str, list[tuple[str, Conversation]]] = {}  # key -> (text, conversation), copies kept
  for conversation in conversations:
    groups.setdefault(key(conversation), []).append((json.dumps(conversation, sort_keys=True, ensure_ascii=False),
                                                     conversation))
  if val_fraction and len(groups) == 1:
    raise ValueError(f'{len(next(iter(groups.values())))} conversations that all open with one request leave none to '
                     'hold out for validation; keep more of the source (sft.max_per_source) or set sft.val_fraction=0')
  train, val = sources.split_documents(list(groups), val_fraction, seed)
  side = lambda keys: [c for k in keys for _, c in sorted(groups[k], key=lambda pair: pair[0])]
  return side(train), side(val)


def fingerprint(conversations: list[Conversation]) -> str:
  """'N conversations, sha256 H' of their JSON texts sorted: the same conversations in any order give
  the same, one changed, added or dropped another (what a run's data record keeps of a split)."""
  texts = sorted(json.dumps(c, sort_keys=True, ensure_ascii=False) for c in conversations)
  digest = hashlib.sha256('\n'.join(texts).encode()).hexdigest()[:16]
  return f'{len(texts)} conversations, sha256 {digest}'


_FIT_TRIES = 1000  # conversations in a row an endless source may fail to fit before it is refused


def _fitted(name: str, conversations: Iterable[Conversation], tokenizer, max_tokens: int) -> Iterator[Conversation]:
  """fit() of each conversation, those that do not fit dropped; a generated source whose next
  _FIT_TRIES conversations all fail to fit is refused rather than searched forever (arithmetic never ends)."""
  misses = 0
  for conversation in conversations:
    fitted = fit(conversation, tokenizer, max_tokens)
    misses = 0 if fitted else misses + 1
    if fitted:
      yield fitted
    elif misses == _FIT_TRIES and name in GENERATED:
      raise ValueError(f'conversation source {name!r}: {_FIT_TRIES} conversations in a row do not fit in {max_tokens} '
                       f'tokens; raise config.train.seq_len (or drop {name!r} from the mixture)')


def bound_source(name: str, identity_facts: IdentityFacts | None = None, honesty_labels: str = '',
                 honesty_reply: str = 'sentence') -> Source:
  """SOURCES[name] given what it reads besides the data dir and seed: identity the run's facts, the
  honesty_* sources a labelled set and the wording of their replies (see load_mixture)."""
  if name == 'identity':
    return functools.partial(identity, facts=identity_facts)
  if name in honesty.SOURCES:
    return functools.partial(SOURCES[name], labels=honesty_labels, style=honesty_reply)
  return SOURCES[name]


def load_mixture(data_dir: Path, mixture: dict[str, float], val_fraction: float, seed: int,
                 max_per_source: int = 0, tokenizer=None,
                 max_tokens: int = 0, identity_facts: IdentityFacts | None = None, honesty_labels: str = '',
                 honesty_reply: str = 'sentence',
                 generated: dict[str, int] | None = None) -> dict[str, tuple[list[Conversation], list[Conversation]]]:
  """{source name: (train, val)} for each source named in mixture with a weight above 0 (the
  weight itself is for the caller; 0 turns a source off).

  With a tokenizer and max_tokens, every conversation is fitted (see fit()) and dropped when it
  does not fit. max_per_source caps the conversations kept per source, after fitting (0 = all
  of a real source, DEFAULT_GENERATED of a generated one); `generated`, {source name:
  conversations}, sets the count of a generated source instead. identity_facts: what the identity
  source says about the model (IdentityFacts); honesty_labels / honesty_reply: the labelled set
  the honesty_* sources read and their answers' wording (config.sft.honesty_labels and
  honesty_reply). seed drives the generated sources; the split itself always uses the same
  seed, so validation sets do not move with it.
  """
  unknown = sorted(set(mixture) - set(SOURCES))
  if unknown:
    raise ValueError(f'unknown conversation sources {unknown}; known: {sorted(SOURCES)}')
  generated = dict(generated or {})
  not_endless = sorted(set(generated) - set(GENERATED))
  if not_endless:
    raise ValueError(f'sft.generated names {not_endless}, which are not generated sources; those are {list(GENERATED)}')
  splits = {}
  for name in [name for name, weight in mixture.items() if weight > 0]:
    source = bound_source(name, identity_facts, honesty_labels, honesty_reply)
    conversations = source(Path(data_dir), seed)
    if tokenizer is not None and max_tokens:
      conversations = _fitted(name, conversations, tokenizer, max_tokens)
    kept = (c for c in conversations if c)
    limit = generated.get(name) or max_per_source or (DEFAULT_GENERATED if name in GENERATED else None)
    key = identity_topic_key(identity_facts) if name == 'identity' else request_key
    train, val = split(itertools.islice(kept, limit), val_fraction, _SPLIT_SEED, key)
    logging.info('conversations: %s %d train + %d val', name, len(train), len(val))
    splits[name] = (train, val)
  return splits
