import itertools
import re

import numpy as np
import pytest

from llm import chat_template
from llm.rl import rewards, tasks

GSM8K_TRAIN, GSM8K_TEST = 7473, 1319
_OPERATOR_WORDS = {'+': 'plus', '-': 'minus', '*': 'times', '/': 'divided by'}




@pytest.fixture(scope='module')
def gsm8k(data_dir):
  return tasks.GSM8KTask(data_dir)


@pytest.fixture(scope='module')
def arithmetic():
  return tasks.ArithmeticTask(heldout_size=200)


def operands(expression: str) -> list[str]:
  return re.findall(r'\d+', expression)


def writes_out(problem) -> bool:
  """Whether the question spells out its expression, in symbols or in words."""
  expression, asked = problem.meta['expression'], tasks.question_of(problem)
  spoken = ' '.join(_OPERATOR_WORDS.get(token, token) for token in expression.split())
  return expression in asked or spoken in asked


# ---------------------------------------------------------------------------------------------
# Verifier
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('predicted, reference', [
    ('1,234', '1234'), ('1234', '1,234'), ('-5', '-5'), ('5.0', '5'), ('$12.50', '12.5'),
    ('The answer is 42.', '42'), ('The answer is 42. Hope that helps!', '42'),
    ('I first thought 40, but the answer is 42.', '42'), ('It costs $1,080.', '1080'),
    ('3.0', '3'), ('-0.50', '-.5'),
    ('The answer is 3/4.', '0.75'), ('6/2', '3'), ('3 1/2', '3.5'), ('2/6', '1/3'),
    ('10-3', '3'),  # a minus between numbers is an operator, not a sign
    ('The answer is 1,000/3.', '1000/3'), ('Step 2 1/2 of them', '0.5'),
])
def test_answers_match_accepts(predicted, reference):
  assert tasks.answers_match(predicted, reference)


@pytest.mark.parametrize('predicted, reference', [
    ('The answer is 41.', '42'), ('-5', '5'), ('5', '-5'), ('10-3', '-3'),
    ('The answer is \u221242', '42'),  # U+2212, the typographic minus, is a sign too
    ('The answer is 42. Or maybe 43.', '42'),  # the last number counts
    ('I do not know.', '42'), ('', '0'), (None, '42'),
    ('1000001', '1000000'),  # whole numbers must be equal, not merely close
    ('0.33', '0.3333333333'),
    # nor, with a decimal point, merely within a relative 1e-6
    ('The answer is 1000000.5.', '1000000'), ('The answer is -136012825.5.', '-136012862'),
    ('0.3333333', '0.33333333333'), ('1/3', '0.33333333333'),
    ('The answer is 3/4.', '4'), ('1/2', '2'),  # a fraction is not its denominator
    ('The answer is 1,000/3.', '3'),  # nor is a fraction with a grouped numerator
    ('It was due on 3/4/2020.', '2020'),  # a date is no number
    ('Step 2 1/2 of them', '2.5'),  # the step's label is no whole part
])
def test_answers_match_rejects(predicted, reference):
  assert not tasks.answers_match(predicted, reference)


def test_verify_reads_only_what_the_model_wrote(tok, arithmetic):
  sp = tok.special_id
  problem = tasks.Problem([{'role': 'user', 'content': 'What is 48 / 2?'}], '24', {})
  call = [sp('<|tool_call|>')] + tok.encode('calculator: 48/2') + [sp('<|/tool_call|>')]
  result = [sp('<|tool_result|>')] + tok.encode('24') + [sp('<|/tool_result|>')]
  answered = (tok.encode('Let me use the calculator.') + call + result
              + tok.encode(' The answer is 24.') + [sp('<|end|>')] + tok.encode('7'))
  text = tasks.assistant_text(tok, answered)
  assert text == 'Let me use the calculator. The answer is 24.'  # after <|end|> is ignored
  assert arithmetic.verify(text, problem)
  # The calculator's result alone, never restated by the model, is no answer.
  unstated = tasks.assistant_text(tok, tok.encode('Let me see.') + call + result + [sp('<|end|>')])
  assert not arithmetic.verify(unstated, problem)


# ---------------------------------------------------------------------------------------------
# Arithmetic
# ---------------------------------------------------------------------------------------------

def test_arithmetic_is_deterministic(arithmetic):
  again = tasks.ArithmeticTask(heldout_size=200)
  assert list(itertools.islice(arithmetic.train_problems(3), 200)) == \
         list(itertools.islice(again.train_problems(3), 200))
  assert arithmetic.heldout(200) == again.heldout(200)
  assert arithmetic.heldout(50) == arithmetic.heldout(200)[:50]
  other_seed = list(itertools.islice(arithmetic.train_problems(4), 200))
  assert other_seed != list(itertools.islice(arithmetic.train_problems(3), 200))


def test_arithmetic_heldout_is_distinct_and_never_trained_on():
  # One-digit plain one-step problems number a few thousand: a stream of 5000 would meet most
  # of the 300 held-out ones (266 of them) if training did not skip them.
  task = tasks.ArithmeticTask(digits=(1,), ops=(1,), phrasing='plain', heldout_size=300)
  heldout = {tasks.question_of(p) for p in task.heldout(300)}
  assert len(heldout) == 300
  trained = {tasks.question_of(p) for p in itertools.islice(task.train_problems(0), 5000)}
  assert not heldout & trained


def test_arithmetic_answers_are_right(arithmetic):
  problems = arithmetic.heldout(200) + list(itertools.islice(arithmetic.train_problems(0), 500))
  problems += list(itertools.islice(tasks.ArithmeticTask(ops=(3,)).train_problems(0), 100))
  for problem in problems:
    expression = problem.meta['expression']
    assert float(problem.answer) == eval(expression, {'__builtins__': {}}), problem  # noqa: S307
    assert [m['role'] for m in problem.prompt_messages] == ['user']
    assert arithmetic.verify(f'The answer is {problem.answer}.', problem)


def test_arithmetic_prompt_renders(tok, arithmetic):
  ids = chat_template.render_prompt(tok, arithmetic.heldout(1)[0].prompt_messages)
  assert ids[-1] == tok.special_id('<|assistant|>')


def test_operands_too_long_for_the_calculator_are_refused_with_the_limit():
  with pytest.raises(ValueError, match='at most 25 digits'):
    tasks.ArithmeticTask(digits=(2, 40), ops=(3,), heldout_size=10)
  tasks.ArithmeticTask(digits=(25,), ops=(3,), heldout_size=10)  # the longest that always fits


@pytest.mark.parametrize('digits', [1, 2, 4])
def test_digits_knob_sets_operand_lengths(digits):
  task = tasks.ArithmeticTask(digits=(digits,), heldout_size=10)
  for problem in itertools.islice(task.train_problems(0), 300):
    lengths = [len(n) for n in operands(problem.meta['expression'])]
    assert problem.meta['digits'] == digits
    # Every operand has `digits` digits but a dividend, drawn as a multiple of the divisor.
    assert min(lengths) == digits and max(lengths) <= 2 * digits, problem


@pytest.mark.parametrize('ops', [(1,), (2,), (3,), (1, 3)])
def test_ops_knob_sets_operation_count(ops):
  task = tasks.ArithmeticTask(ops=ops, heldout_size=10)
  counts = set()
  for problem in itertools.islice(task.train_problems(0), 300):
    count = len(re.findall(r' [-+*/] ', problem.meta['expression']))
    assert count == problem.meta['ops']
    counts.add(count)
  assert counts == set(ops)


def test_phrasing_knob():
  def sample(phrasing):
    task = tasks.ArithmeticTask(phrasing=phrasing, heldout_size=10)
    return list(itertools.islice(task.train_problems(0), 300))

  assert all(writes_out(p) and p.meta['phrasing'] == 'plain' for p in sample('plain'))
  assert not any(writes_out(p) or p.meta['phrasing'] == 'plain' for p in sample('word'))
  assert {writes_out(p) for p in sample('mixed')} == {True, False}


@pytest.mark.parametrize('knobs', [
    dict(digits=()), dict(digits=(0,)), dict(ops=(4,)), dict(phrasing='rhyming'),
    dict(phrasing='word', ops=(2, 3)),
    # A few thousand one-digit plain one-step problems exist: too few for 100,000 held out.
    dict(digits=(1,), ops=(1,), phrasing='plain', heldout_size=100_000),
])
def test_arithmetic_rejects_bad_knobs(knobs):
  with pytest.raises(ValueError):
    tasks.ArithmeticTask(**knobs)


def test_heldout_larger_than_reserved_is_an_error(arithmetic):
  with pytest.raises(ValueError, match='heldout_size'):
    arithmetic.heldout(201)


# ---------------------------------------------------------------------------------------------
# GSM8K
# ---------------------------------------------------------------------------------------------

def test_gsm8k_parses_both_splits(gsm8k):
  train = list(itertools.islice(gsm8k.train_problems(0), GSM8K_TRAIN))
  test = gsm8k.heldout(GSM8K_TEST)
  assert len({p.meta['index'] for p in train}) == GSM8K_TRAIN  # one epoch holds each once
  assert all(p.answer is not None for p in train + test)
  assert not {tasks.question_of(p) for p in train} & {tasks.question_of(p) for p in test}
  first = min(train, key=lambda p: p.meta['index'])
  assert first.answer == '72'
  assert tasks.question_of(first).startswith('Natalia sold clips to 48 of her friends in April')
  assert gsm8k.verify('So she sold 72 clips. The answer is 72.', first)
  by_index = {p.meta['index']: p for p in train}
  assert by_index[345].answer == '1080'  # '#### 1,080'
  assert test[489].answer == '-10'  # '#### -10'
  with pytest.raises(ValueError):
    gsm8k.heldout(GSM8K_TEST + 1)


def test_gsm8k_training_order_follows_the_seed(gsm8k):
  order = lambda seed: [p.meta['index'] for p in itertools.islice(gsm8k.train_problems(seed), 50)]
  assert order(0) == order(0)
  assert order(0) != order(1)
  two_epochs = [p.meta['index'] for p in itertools.islice(gsm8k.train_problems(0), 2 * GSM8K_TRAIN)]
  assert two_epochs[:GSM8K_TRAIN] != two_epochs[GSM8K_TRAIN:]  # reshuffled each epoch
  assert sorted(two_epochs[GSM8K_TRAIN:]) == list(range(GSM8K_TRAIN))


def test_make_task(data_dir):
  task = tasks.make_task('arithmetic', data_dir, digits=(2,), ops=(1,), heldout_size=10)
  assert isinstance(task, tasks.ArithmeticTask) and isinstance(task, tasks.RLTask)
  assert task.digits == (2,)
  assert isinstance(tasks.make_task('gsm8k', data_dir), tasks.GSM8KTask)
  with pytest.raises(ValueError, match="'arithmetic', 'gsm8k'"):
    tasks.make_task('chess', data_dir)


def test_make_task_refuses_knobs_the_task_does_not_take_naming_those_it_does(data_dir):
  """As when a config's arithmetic task_options stay on after grpo.task is switched to gsm8k."""
  with pytest.raises(ValueError, match=r"RL task 'gsm8k' has no knobs \['digits', 'ops'\] .*; it takes none"):
    tasks.make_task('gsm8k', data_dir, digits=(1,), ops=(1,))
  with pytest.raises(ValueError, match=r"RL task 'arithmetic' has no knobs \['digit'\] .*; it takes "
                                       r"\['digits', 'ops', 'phrasing', 'heldout_size'\]"):
    tasks.make_task('arithmetic', None, digit=(1,))


# ---------------------------------------------------------------------------------------------
# Rewards
# ---------------------------------------------------------------------------------------------

PROBLEM = tasks.Problem([{'role': 'user', 'content': 'What is 6 * 7?'}], '42', {})
COMPLETIONS = [  # (text, tokens, finished)
    ('The answer is 42.', 10, True),  # right, well formed, short
    ('The answer is 41.', 10, True),  # wrong
    ('The answer is 42.', 300, False),  # right but cut off, and 200 tokens over the target
    ('I do not know.', 5, True),  # no answer at all
]


def test_reward_components_and_total(arithmetic):
  weights = {'correctness': 1.0, 'format': 0.5, 'length_penalty': 0.25}
  total, parts = rewards.compute_rewards(COMPLETIONS, [PROBLEM] * 4, arithmetic, weights,
                                         length_target=100, length_scale=100.0)
  np.testing.assert_array_equal(parts['correctness'], [1, 0, 1, 0])
  np.testing.assert_array_equal(parts['format'], [1, 1, 0, 0])
  np.testing.assert_array_equal(parts['length_penalty'], [0, 0, -2, 0])
  np.testing.assert_allclose(total, [1.5, 0.5, 0.5, 0.0])
  assert total.dtype == np.float32 and total.shape == (4,)
  assert all(v.dtype == np.float32 for v in parts.values())


def test_unweighted_components_are_still_reported(arithmetic):
  total, parts = rewards.compute_rewards(COMPLETIONS, [PROBLEM] * 4, arithmetic,
                                         {'correctness': 1.0, 'format': 0.0},
                                         length_target=100, length_scale=100.0)
  assert set(parts) == set(rewards.COMPONENTS)
  np.testing.assert_array_equal(parts['format'], [1, 1, 0, 0])
  np.testing.assert_array_equal(total, parts['correctness'])


@pytest.mark.parametrize('weights, completions, scale, match', [
    ({'correctness': 1.0, 'brevity': 1.0}, COMPLETIONS, 100.0, 'brevity'),
    ({'correctness': 1.0}, COMPLETIONS[:3], 100.0, '3 completions for 4 problems'),
    ({'correctness': 1.0}, COMPLETIONS, 0.0, 'length_scale'),
])
def test_reward_errors(arithmetic, weights, completions, scale, match):
  with pytest.raises(ValueError, match=match):
    rewards.compute_rewards(completions, [PROBLEM] * 4, arithmetic, weights,
                            length_target=100, length_scale=scale)
