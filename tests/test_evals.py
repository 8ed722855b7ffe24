"""Evaluators on tiny fixtures with scripted models whose right scores are known, held-out sets
disjoint from the training generators, and `python -m llm.eval` end to end."""
import bz2
import itertools
import json
import math
import re
import subprocess
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import ROOT, tiny_config
from llm import chat_template, inference, init_from
from llm.data import conversations
from llm.evals import (Context, arithmetic, arithmetic_phrasing, bpb, copying, fewshot, fewshot_arithmetic,
                       fewshot_translation, heldout, hellaswag, identity, pass_at_k, probes, well_formed)
from llm.rl import tasks as rl_tasks
from llm.tokenizer import train_tokenizer
from llm.tools import calculator
from test_model import init, small_config

TEXT = ('The little girl opened the door and saw a garden full of roses. What is 12 + 5? It is 17. '
        'Once upon a time there was a king who had three daughters; the youngest was the fairest. ') * 40


@pytest.fixture(scope='module')
def tok(tmp_path_factory):
  """A SentencePiece tokenizer trained on a few sentences: no shared data needed."""
  return train_tokenizer([TEXT], 320, tmp_path_factory.mktemp('tok') / 'tok.model', 10**6)


class Constant(nn.Module):
  """A stand-in model whose next-token logits are `logits_V` at every position."""
  logits_V: tuple

  def __call__(self, tokens_BxT, positions_BxT=None, cache=None, advance_B=None):
    return jnp.broadcast_to(jnp.asarray(self.logits_V, jnp.float32), (*tokens_BxT.shape, len(self.logits_V)))


def make_ctx(tok, model=None, config=None, **kwargs) -> Context:
  setup, _ = init(small_config('gpt2', max_seq_len=64), vocab=tok.vocab_size)
  return Context(setup.model_cfg, {}, tok, setup.mesh, setup.rules, config or tiny_config(), model=model, **kwargs)


class CopyBack(nn.Module):
  """A perfect copier of a known period: it predicts that token t+1 is token t + 1 - period."""
  period: int
  vocab: int

  def __call__(self, tokens_BxT, positions_BxT=None, cache=None, advance_B=None):
    T = tokens_BxT.shape[1]
    source = jnp.arange(T) + 1 - self.period
    copied_BxT = jnp.where(source >= 0, tokens_BxT[:, jnp.clip(source, 0)], -1)
    return 30.0 * jax.nn.one_hot(copied_BxT, self.vocab)  # -1: no token, uniform logits


def test_copying_scores_the_second_copy_against_the_first(tok):
  V = tok.vocab_size
  uniform = copying.evaluate(make_ctx(tok, Constant((0.0,) * V), limit=4))
  assert all(v == pytest.approx(1 / V) for v in uniform.values()) and len(uniform) == 3
  rng = np.random.default_rng(0)
  halves = [list(rng.integers(5, V, 20)) for _ in range(3)]
  period = 20 + len(tok.encode('\n'))
  second, first = copying._second_copy_prob(make_ctx(tok, CopyBack(period, V)), halves)
  assert second > 0.99 and first < 0.01


# ---- bits per byte ------------------------------------------------------------------------------

def test_bpb_of_a_uniform_model_is_log2_vocab_times_tokens_per_byte(tok):
  V = tok.vocab_size
  ctx = make_ctx(tok, Constant((0.0,) * V))
  docs = [TEXT[:900], 'What is 12 + 5?', TEXT[100:700] + ' é ü 你好']  # several windows of 65, bytes over 1/char
  tokens = sum(len(tok.encode(d)) for d in docs)
  n_bytes = sum(len(d.encode()) for d in docs)
  assert tokens > 3 * ctx.max_len
  assert bpb.documents_bpb(ctx, docs) == pytest.approx(math.log2(V) * tokens / n_bytes, rel=1e-5)


def test_bpb_corpus_names_and_errors(tmp_path):
  (tmp_path / 'stories').mkdir()
  (tmp_path / 'stories' / 'a.txt').write_text('Once upon a time.')
  (tmp_path / 'Moby Dick.txt').write_text('Call me Ishmael.')
  assert bpb.corpus_name(tmp_path / 'stories') == 'stories'
  assert bpb.corpus_name(tmp_path / 'Moby Dick.txt') == 'moby_dick'
  assert bpb.read_corpus(tmp_path / 'stories') == ['Once upon a time.']
  with pytest.raises(FileNotFoundError, match='--corpus=.*does not exist'):
    bpb.read_corpus(tmp_path / 'nope')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='holds no text'):
    bpb.read_corpus(tmp_path / 'empty')


def test_a_corpus_whose_key_another_number_takes_is_refused(tmp_path):
  for folder in ('ca', 'cb'):
    (tmp_path / folder).mkdir()
    for name in ('val.txt', 'notes.txt'):
      (tmp_path / folder / name).write_text('Call me Ishmael.')
  assert bpb.corpus_keys([tmp_path / 'ca' / 'notes.txt', tmp_path / 'stories']) == ['bpb_notes', 'bpb_stories']
  with pytest.raises(ValueError, match=r"ca/val.txt would be reported as bpb_val, as the run's validation split is"):
    bpb.corpus_keys([tmp_path / 'ca' / 'val.txt'])
  with pytest.raises(ValueError, match=r'cb/notes.txt would be reported as bpb_notes, as --corpus=.*ca/notes.txt is'):
    bpb.corpus_keys([tmp_path / 'ca' / 'notes.txt', tmp_path / 'cb' / 'notes.txt'])


# ---- HellaSwag ----------------------------------------------------------------------------------

def write_hellaswag(data_dir, items):
  path = data_dir / hellaswag.PATH
  path.parent.mkdir(parents=True)
  lines = [line for context, label, endings in items for line in (context, str(label), *endings)]
  path.write_bytes(bz2.compress(('\n'.join(lines) + '\n').encode()))


def test_a_model_that_always_picks_the_first_ending_scores_the_share_of_label_0(tok, tmp_path):
  labels = [0, 2, 0, 3, 1, 0, 2]
  endings = ('the roses', 'a king who', 'three daughters', 'the youngest was')
  items = [(f'Item {i}: The little girl opened the door and saw', label, endings) for i, label in enumerate(labels)]
  write_hellaswag(tmp_path, items)
  favoured = set(tok.encode(' ' + endings[0]))  # the first ending's tokens are likely, every other one is not
  model = Constant(tuple(5.0 if i in favoured else 0.0 for i in range(tok.vocab_size)))
  config = tiny_config(**{'data.dir': str(tmp_path)})
  out = hellaswag.evaluate(make_ctx(tok, model, config))
  share = labels.count(0) / len(labels)
  assert out['hellaswag_acc'] == pytest.approx(share) and out['hellaswag_acc_norm'] == pytest.approx(share)
  assert out['hellaswag_centered'] == pytest.approx((share - 0.25) / 0.75)
  assert out['hellaswag_items'] == len(labels) and out['hellaswag_endings_truncated'] == 0


def test_evaluators_find_the_shared_data_dir_past_a_downloaded_one(tok, tmp_path, monkeypatch):
  """llm.data.download makes ./data for one corpus; the run's source and the evaluators' data sets
  stay in ../shared/data, which llm.eval finds as training does: by what the dir must hold."""
  checkout, shared = tmp_path / 'checkout', tmp_path / 'shared' / 'data'
  (checkout / 'data' / 'fineweb_edu').mkdir(parents=True)
  write_hellaswag(shared, [(f'Item {i}: The little girl saw', 0, ('a', 'b', 'c', 'd')) for i in range(3)])
  (shared / 'stories.txt').write_text('\n\n'.join(f'Story {i}. {TEXT[:200]}' for i in range(40)))
  monkeypatch.chdir(checkout)
  monkeypatch.delenv('LLM_DATA_DIR', raising=False)
  config = tiny_config(**{'data.dir': '', 'data.source': 'stories.txt'})
  ctx = make_ctx(tok, Constant((0.0,) * tok.vocab_size), config, data_dir_flag='--data_dir')
  assert hellaswag.evaluate(ctx)['hellaswag_items'] == 3
  assert bpb.evaluate(ctx)['bpb_val'] > 0
  (shared / 'stories.txt').unlink()
  with pytest.raises(FileNotFoundError) as error:
    bpb.evaluate(ctx)
  assert str(error.value).startswith('no data dir holds stories.txt') and str(error.value).endswith(
      'pass --data_dir=... or set LLM_DATA_DIR to the folder that holds it')  # the run's source: no flag of llm.eval


def test_hellaswag_sum_and_per_byte_normalisation_differ_as_they_should(tok):
  """Under a uniform model an ending costs log V per token: the sum picks the ending of fewest
  tokens, the per-byte mean the one of most bytes per token."""
  endings = ('a', 'the youngest was the fairest', 'king who', 'xq zv jk wp qx vj xq zv jk wp qx vj xq zv jk wp')
  item = hellaswag.Item(TEXT[:300], endings, 0)  # a long context: scoring it too would favour long endings
  by_sum, by_byte, _ = hellaswag.choose(make_ctx(tok, Constant((0.0,) * tok.vocab_size)), [item])
  n_tokens = [len(tok.encode(' ' + e)) for e in endings]
  per_byte = [n / len(e.encode()) for n, e in zip(n_tokens, endings)]  # the ending's own bytes, as the harness
  assert by_sum[0] == int(np.argmin(n_tokens)) == 0 and by_byte[0] == int(np.argmin(per_byte)) == 1


def test_hellaswag_per_byte_divides_by_the_endings_own_bytes_not_the_space_before_it(tok):
  """lm-evaluation-harness's acc_norm: the loss of ' ' + ending over len(ending). Counting the
  space favours short endings: here 'a' (1 token over 2 bytes) against 'king who' (7 over 8)."""
  endings = ('a', 'king who', 'xq zv', 'zv jk wp')
  n_tokens = np.array([len(tok.encode(' ' + e)) for e in endings])
  with_space = int(np.argmin(n_tokens / [len(' ' + e) for e in endings]))
  harness = int(np.argmin(n_tokens / [len(e) for e in endings]))
  assert (with_space, harness) == (0, 1)  # the premise: the two rules disagree on these endings
  _, by_byte, _ = hellaswag.choose(make_ctx(tok, Constant((0.0,) * tok.vocab_size)), [hellaswag.Item(TEXT[:300], endings, 0)])
  assert by_byte[0] == harness


def test_an_ending_longer_than_the_context_costs_every_token_that_fits(tok):
  """Under a uniform model each scored token costs log V. An ending of more tokens than the window
  is scored on the window's worth of its tail: by sum it costs more than a short ending (a few tokens
  past the window, not just those few); per byte, a tail of one-letter tokens costs more than the
  short ending's word pieces (over all of its bytes, most never scored, it would look cheap)."""
  ctx = make_ctx(tok, Constant((0.0,) * tok.vocab_size))
  window = ctx.max_len - 1
  short = 'the youngest was the fairest'
  just_over = ' '.join(['xq zv jk wp'] * 6)
  far_over = 'the little girl opened the door ' * 20 + ' '.join(['xq zv jk wp'] * 8)
  n_short = len(tok.encode(' ' + short))
  far_tokens = tok.encode(' ' + far_over)
  tail = tok.decode(far_tokens[-window:])
  # The premise: what the window drops of just_over is fewer tokens than short has; far_over's
  # bytes over all of it are cheaper than short's, over its scored tail dearer.
  assert window < len(tok.encode(' ' + just_over)) < window + n_short and tail.endswith(' xq zv jk wp')
  assert window / len(far_over.encode()) < n_short / len(short.encode()) < window / len(tail.encode())
  item = hellaswag.Item('A context.', (short, just_over, far_over, short), 0)
  by_sum, by_byte, truncated = hellaswag.choose(ctx, [item])
  assert (by_sum[0], by_byte[0], truncated) == (0, 0, 2)


class Bigram(nn.Module):
  """A stand-in model whose next-token logits are 0 but for `pairs` (x, y, logit): after token x,
  y gets that logit. What is likely depends on the token at the position, so a loss read one
  position off is another token's."""
  vocab: int
  pairs: tuple

  def __call__(self, tokens_BxT, positions_BxT=None, cache=None, advance_B=None):
    return jnp.asarray(bigram_table(self.vocab, self.pairs))[tokens_BxT]


def bigram_table(vocab, pairs):
  table = np.zeros((vocab, vocab), np.float32)
  for x, y, logit in pairs:
    table[x, y] = logit
  return table


def test_hellaswag_scores_each_ending_on_its_own_tokens(tok):
  """Endings of four tokens and four bytes each; Bigram makes time's last token near certain after
  the one before it (logit 10) and king's third a little likelier after its second (logit 3). Over
  the endings' own tokens time costs least (3 log V against 4 log V - ~3 for king), by sum and per
  byte; read one position early (the context's last token in, the ending's last out) king would."""
  context = 'The little girl opened the door and saw'
  items = [hellaswag.Item(context, ('door', 'king', 'full', 'time'), 0),
           hellaswag.Item(context, ('time', 'full', 'king', 'door'), 0)]
  n_context = len(tok.encode(context))
  own = {e: tok.encode(f'{context} {e}')[n_context:] for e in items[0].endings}
  assert all(len(ids) == len(e.encode()) == 4 for e, ids in own.items())  # the premise: equal lengths
  pairs = ((own['time'][2], own['time'][3], 10.0), (own['king'][1], own['king'][2], 3.0))
  table = bigram_table(tok.vocab_size, pairs).astype(np.float64)
  picks = {}
  for how, cut in (('aligned', slice(-4, None)), ('one_early', slice(-5, -1))):
    sums = []
    for it in items:
      for e in it.endings:
        row = [tok.bos_id] + tok.encode(f'{context} {e}')
        logits = table[row[:-1]]
        loss = np.log(np.exp(logits).sum(-1)) - logits[np.arange(len(row) - 1), row[1:]]
        sums.append(loss[cut].sum())
    picks[how] = np.array(sums).reshape(-1, 4).argmin(1).tolist()
  assert picks == {'aligned': [3, 0], 'one_early': [1, 2]}
  by_sum, by_byte, truncated = hellaswag.choose(make_ctx(tok, Bigram(tok.vocab_size, pairs)), items)
  assert by_sum.tolist() == by_byte.tolist() == [3, 0] and truncated == 0


def test_hellaswag_reader_checks_the_six_line_format(tmp_path):
  write_hellaswag(tmp_path, [('ctx', 1, ('a', 'b', 'c', 'd'))])
  assert hellaswag.read(tmp_path / hellaswag.PATH) == [hellaswag.Item('ctx', ('a', 'b', 'c', 'd'), 1)]
  (tmp_path / hellaswag.PATH).write_bytes(bz2.compress(b'ctx\n7\na\nb\nc\nd\n'))
  with pytest.raises(ValueError, match='six lines an item'):
    hellaswag.read(tmp_path / hellaswag.PATH)
  with pytest.raises(FileNotFoundError, match='HellaSwag'):
    hellaswag.read(tmp_path / 'missing.bz2')


# ---- chat evaluators, with a scripted assistant -------------------------------------------------

class ScriptedChat(Context):
  """A Context whose assistant replies are written by respond(question, tools, seed) -> parts, or
  None for a prompt that does not fit the context (Context.generate's None)."""

  def __init__(self, tok, respond, **kwargs):
    base = make_ctx(tok, **kwargs)
    super().__init__(**{f: getattr(base, f) for f in base.__dataclass_fields__})
    self.respond = respond

  def generate(self, prompts, max_new_tokens, tools=False, **kwargs):
    seeds = kwargs.get('seed', list(range(len(prompts))))
    out = []
    for prompt, seed in zip(prompts, seeds):
      parts = self.respond(self.tokenizer.decode(prompt), tools, seed)
      if parts is None:
        out.append(None)
        continue
      if isinstance(parts, str):
        parts = [{'type': 'text', 'text': parts}]
      ids, mask = chat_template.render(self.tokenizer, [{'role': 'assistant', 'content': parts}])
      calls = sum(p['type'] == 'tool_call' for p in parts)
      out.append(inference.Completion(ids[2:], [not m for m in mask[2:]], 'stop', calls))
    return out


def test_arithmetic_with_and_without_the_calculator_and_copy_accuracy(tok):
  problems = [('What is 12 + 30?', '42'), ('What is 7 * 6?', '42'), ('Compute 90 - 37.', '53'), ('What is 8 + 8?', '16')]
  order = {q: i for i, (q, _) in enumerate(problems)}
  answer = dict(problems)

  def respond(question, tools, seed):
    i = order[question]
    if not tools:  # right on the first problem only
      return f'It is {answer[question] if i == 0 else 1}.'
    a, b = re.findall(r'\d+', question)
    # Problems 0 and 1: operands copied, right answer; 2: a wrong operand; 3: no call.
    if i == 3:
      return 'The answer is 16.'
    expression = f'{a} + {b if i < 2 else 99}'
    return [{'type': 'tool_call', 'text': f'calculator: {expression}'},
            {'type': 'tool_result', 'text': calculator(expression)},
            {'type': 'text', 'text': f'The answer is {answer[question] if i < 2 else calculator(expression)}.'}]

  out = arithmetic.measure(ScriptedChat(tok, respond), problems)
  assert out['arith_acc_no_tool'] == 0.25
  assert out['arith_acc_tool'] == 0.75  # 0, 1 and 3 (3 without a call)
  assert out['arith_tool_call_rate'] == 0.75
  assert out['arith_copy_acc'] == pytest.approx(2 / 3)


def _phrasing_regex(template: str) -> re.Pattern:
  return re.compile(re.escape(template).replace(r'\{a\}', r'\d+').replace(r'\{b\}', r'\d+')
                    .replace(r'\{c\}', r'\d+').replace(r'\{name\}', r'\w+') + '$')


def test_fewshot_prompt_and_first_line_by_hand(tok):
  """Solved shots a blank line apart, the query's answer left open; the model reads bos first
  (a document's start in pretraining) and only the first line it writes is its answer, whose
  last number must equal the answer (100 is not 10)."""
  assert (fewshot.prompt([('1+1', '2'), ('2+2', '4')], '5+5', 'Q: {q}\nA: {a}')
          == 'Q: 1+1\nA: 2\n\nQ: 2+2\nA: 4\n\nQ: 5+5\nA:')
  seen = []

  def generate(ids, max_new_tokens, **kwargs):
    seen.extend(ids)
    reply = tok.encode(' 100\n\nQ: 3+3\nA: 10')
    return [inference.Completion(reply, [False] * len(reply), 'length', 0) for _ in ids]

  ctx = types.SimpleNamespace(tokenizer=tok, generate=generate)
  assert fewshot.first_lines(ctx, ['Q: 5+5\nA:'], 12) == ['100']
  assert seen == [[tok.bos_id] + tok.encode('Q: 5+5\nA:')]
  assert fewshot_arithmetic.answers_right(ctx, [('What is 5 + 5?', '10'), ('What is 50 * 2?', '100')]) == [False, True]

def test_fewshot_accuracy_is_over_the_prompts_that_fit_and_undefined_when_none_does(tok):
  """A prompt too long for the context makes no answer (generate's None): it counts neither way,
  and with none fitted the accuracy is NaN, not a measured 0."""
  reply = {'cat': 'chat', 'dog': None, 'bread': 'pomme', 'book': None}  # None: the prompt does not fit
  translate = lambda prompt, tools, seed: reply[prompt.rsplit('\n', 1)[-1].removesuffix(' =>')]
  out = fewshot_translation.evaluate(ScriptedChat(tok, translate, limit=4))
  assert out == {'fewshot_translation_acc': 0.5, 'fewshot_translation_fitted': 2}
  out = fewshot_translation.evaluate(ScriptedChat(tok, lambda prompt, tools, seed: None, limit=4))
  assert math.isnan(out['fewshot_translation_acc']) and out['fewshot_translation_fitted'] == 0

  ctx = ScriptedChat(tok, lambda prompt, tools, seed: None, limit=3)
  out = fewshot_arithmetic.evaluate(ctx)
  assert math.isnan(out['fewshot_arith_acc']) and out['fewshot_arith_fitted'] == 0
  gold = dict(heldout.arithmetic(3, ctx.config.seed, heldout.training_questions(ctx.config)))
  question = lambda prompt: prompt.rsplit('Question: ', 1)[-1].removesuffix('\nAnswer:')
  ctx.respond = lambda prompt, tools, seed: gold[question(prompt)] if seed == 0 else None  # the first fits
  assert fewshot_arithmetic.evaluate(ctx) == {'fewshot_arith_acc': 1.0, 'fewshot_arith_fitted': 1}


def test_heldout_phrasings_are_never_generated_and_their_answers_are_right():
  held_out = [_phrasing_regex(q) for _, q in arithmetic_phrasing.PHRASINGS]
  for seed in (0, 1, 2):  # no question the training generator writes reads like a held-out phrasing
    for conversation in itertools.islice(conversations.arithmetic(None, seed), 3000):
      assert not any(r.match(conversation[0]['content']) for r in held_out), conversation[0]['content']
  problems = arithmetic_phrasing.problems(40, seed=0)
  ops = {'+': lambda x, y: x + y, '-': lambda x, y: x - y, '*': lambda x, y: x * y, '/': lambda x, y: x // y}
  for (expression, template), (question, answer) in zip(arithmetic_phrasing.PHRASINGS * 4, problems, strict=True):
    assert _phrasing_regex(template).match(question)
    numbers = dict(zip('abc', map(int, re.findall(r'\d+', question))))
    if template.index('{b}') < template.index('{a}'):  # 'Subtract {b} from {a}'
      numbers['a'], numbers['b'] = numbers['b'], numbers['a']
    symbols = expression.split()
    value = ops[symbols[1]](numbers['a'], numbers['b'])
    if len(symbols) == 5:
      value = ops[symbols[3]](value, numbers['c'])
    assert int(answer) == value >= 0
    assert len(str(numbers['b'])) == 2 + (problems.index((question, answer)) // 10) % 2  # 2 digits, then 3


def test_operands_copied():
  assert arithmetic.operands_copied('calculator: 1,234 * 4', 'What is 1,234 times 4?')
  assert arithmetic.operands_copied('calculator: (12 + 3) * 4', 'A bus has 12 ... 3 ... 4 rows')
  assert not arithmetic.operands_copied('calculator: 12 * 5', 'What is 12 times 4?')
  assert not arithmetic.operands_copied('calculator: 1.5 + 2', 'What is 15 + 2?')


def test_pass_at_k_counts_samples_and_problems(tok):
  problems = [rl_tasks.Problem([{'role': 'user', 'content': f'Problem {i}?'}], str(10 + i), {}) for i in range(3)]
  # Problem 0: every sample right; problem 1: only its second sample; problem 2: none.
  right = {(0, s) for s in range(4)} | {(1, 1)}

  def respond(question, tools, seed):
    i, sample = divmod(seed, 4)
    assert tools and question == f'Problem {i}?'
    return f'The answer is {10 + i if (i, sample) in right else 0}.'

  task = rl_tasks.make_task('arithmetic', None, digits=(1,), ops=(1,), phrasing='plain', heldout_size=5)
  out = pass_at_k.pass_at_k(ScriptedChat(tok, respond), problems, task.verify, 4, 1.0, 16)
  assert out == {'pass_at_1': pytest.approx(5 / 12), 'pass_at_4': pytest.approx(2 / 3)}


def test_well_formed_rate_per_source(tok):
  heldout_sets = {'a': [[{'role': 'user', 'content': f'good {i}'}, {'role': 'assistant', 'content': 'x'}]
                        for i in range(3)],
                  'b': [[{'role': 'user', 'content': 'bad'}, {'role': 'assistant', 'content': 'x'}],
                        [{'role': 'user', 'content': 'good'}, {'role': 'assistant', 'content': 'x'}]]}
  end = tok.special_id('<|end|>')

  class Cut(ScriptedChat):
    def generate(self, prompts, max_new_tokens, tools=False, **kwargs):
      outs = super().generate(prompts, max_new_tokens, tools, **kwargs)
      for prompt, c in zip(prompts, outs):  # a 'bad' prompt's reply never ends its turn
        if 'bad' in tok.decode(prompt):
          c.tokens, c.finish_reason = [t for t in c.tokens if t != end], 'length'
      return outs

  out = well_formed.rates(Cut(tok, lambda q, tools, seed: 'Sure.'), heldout_sets, count=10)
  assert out == {'well_formed_rate_a': 1.0, 'well_formed_rate_b': 0.5, 'well_formed_rate': 0.8}


def test_well_formed_rate_of_no_prompts_is_undefined_not_zero(tok):
  """sft.eval_prompts=0 (configs/sft_gold.py) asks no prompt: a rate of 0.0 would read as measured."""
  heldout_sets = {'a': [[{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'x'}]]}
  out = well_formed.rates(ScriptedChat(tok, lambda q, tools, seed: 'Sure.'), heldout_sets, count=0)
  assert list(out) == ['well_formed_rate'] and math.isnan(out['well_formed_rate'])


def test_held_out_conversations_are_the_sft_runs_split_whoever_asks(tok, tmp_path, monkeypatch):
  """An RL run (another seed, no sft block) evaluates on the validation split its SFT run held out:
  the same generated conversations, fitted to the SFT run's train.seq_len, worded as it worded them."""
  from tiny_config import tiny_sft_config
  sft_config = tiny_sft_config(**{'seed': 3, 'train.seq_len': 100})
  sft_config.sft.mixture = ml_collections.ConfigDict(dict(arithmetic=1.0))
  sft_config.sft.honesty_reply = 'short'
  (tmp_path / 'sft').mkdir()
  (tmp_path / 'sft' / 'config.json').write_text(sft_config.to_json())
  rl_config = tiny_config(**{'seed': 7})
  rl_config.init_from = str(tmp_path / 'sft')
  of_sft = well_formed.heldout_conversations(make_ctx(tok, config=sft_config))['arithmetic']
  of_rl = well_formed.heldout_conversations(make_ctx(tok, config=rl_config))['arithmetic']
  assert of_rl == of_sft and len(of_rl) > 5
  asked = {}
  monkeypatch.setattr(conversations, 'load_mixture', lambda *args, **kwargs: asked.update(args=args, **kwargs) or {})
  well_formed.heldout_conversations(make_ctx(tok, config=rl_config))
  assert asked['args'][3] == 3 and asked['args'][6] == 100 + 1 and asked['honesty_reply'] == 'short'


def test_identity_facts_come_from_the_run_and_truthfulness_is_checked_against_them(tok):
  ctx = make_ctx(tok)
  params = identity.param_count(ctx.model_cfg)
  _, state = init(small_config('gpt2', max_seq_len=64), vocab=tok.vocab_size)
  assert params == sum(x.size for x in jax.tree.leaves(state.params))
  facts = ctx.identity_facts()
  assert facts.context_tokens == 64 and facts.parameters == identity.about(params)
  assert facts.pretraining_data == 'the works of Shakespeare'  # tiny_config trains on tinyshakespeare
  assert identity.about(4_194_304) == 'about 4.19 million' and identity.about(124_000_000) == 'about 124 million'

  # Trained on the facts of conversations.identity, a truthful model answers with them.
  truthful = {q['content']: a['content'] for q, a in conversations.identity(None, 0, facts)}
  assert identity.evaluate(ScriptedChat(tok, lambda q, tools, seed: truthful[q]))['identity_truthful'] == 1.0
  # One that learnt constants ('about 4 million', 256 tokens) misstates this run.
  wrong = conversations.IdentityFacts('about 4 million', 256, 'public-domain books from Project Gutenberg', 'a calculator')
  stale = {q['content']: a['content'] for q, a in conversations.identity(None, 0, wrong)}
  result = identity.evaluate(ScriptedChat(tok, lambda q, tools, seed: stale[q]))
  assert result['identity_parameters'] == 0.0 and result['identity_context'] == 0.0
  assert result['identity_data'] == 0.0 and result['identity_tools'] == 1.0 and result['identity_internet'] == 1.0


def test_a_parameter_count_that_rounds_to_a_thousand_units_takes_the_next_unit():
  assert identity.about(999_600) == 'about 1 million' and identity.about(999_400) == 'about 999 thousand'
  assert identity.about(99_950) == 'about 100 thousand' and identity.about(999_999_000) == 'about 1 billion'
  assert identity.about(1_234) == 'about 1.23 thousand' and identity.about(999) == 'about 999'


def test_probes_score_a_model_that_counts_spells_and_thinks_in_steps(tok):
  def respond(question, tools, seed):
    # It counts and spells right only through the python tool, and what counts is its own text.
    if m := re.match(r'How many times does the letter (\w) appear in the word (\w+)\?', question):
      count = m[2].count(m[1])
      if tools != 'python':
        return f'{count + 1}'
      return [{'type': 'tool_call', 'text': f'python: print(" {m[2]}".count("{m[1]}"))'},
              {'type': 'tool_result', 'text': f'{count}'}, {'type': 'text', 'text': f'It appears {count} times.'}]
    if m := re.match(r'Spell the word (\w+) letter by letter\.', question):
      if tools != 'python':
        return 'I cannot.'
      return [{'type': 'tool_call', 'text': f'python: print(*" {m[1]}".strip())'},
              {'type': 'tool_result', 'text': ' '.join(m[1])}, {'type': 'text', 'text': '-'.join(m[1])}]
    if m := re.match(r'Which is larger, ([\d.]+) or ([\d.]+)\?', question):
      # With the calculator it compares the numbers, in a sentence that ends on the smaller one;
      # without, it takes the one of more digits (9.11).
      larger, smaller = sorted((m[1], m[2]), key=float, reverse=True)
      return f'{larger} is larger than {smaller}.' if tools else max(m[1], m[2], key=len)
    if question.endswith('step by step, then give the answer.'):
      return f'The answer is {gold[question.rsplit(" Work", 1)[0]]}.'
    return '0'  # answered directly: wrong

  ctx = ScriptedChat(tok, respond, limit=8)
  gold = dict(heldout.arithmetic(16, ctx.config.seed, heldout.training_questions(ctx.config)))
  out = probes.evaluate(ctx)
  assert out == {'probe_count_letter': 0.0, 'probe_count_letter_python': 1.0, 'probe_spell': 0.0,
                 'probe_spell_python': 1.0, 'probe_compare_decimals': 0.0,
                 'probe_compare_decimals_tool': 1.0, 'probe_multistep_direct': 0.0, 'probe_multistep_steps': 1.0,
                 'probe_multistep_tool': 1.0}


def test_the_decimal_a_reply_picks_is_the_one_it_says_is_larger_not_its_last_number():
  pick = lambda reply: probes.chosen_decimal(reply, '9.11', '9.9')
  assert pick('9.9') == pick('9.9 is larger than 9.11.') == pick('The answer is 9.9.') == '9.9'
  assert pick('9.11 is larger than 9.9.') == pick('9.110') == '9.11'
  assert pick('Comparing 9.11 and 9.9 digit by digit: the answer is 9.90') == '9.9'
  assert pick('I do not know.') is None and pick('The answer is 7.') is None
  assert pick('9.11 is smaller than 9.9.') == pick('Between 9.11 and 9.9, the larger is 9.9.') == '9.9'
  assert pick('9.9 is less than 9.11.') == pick('The bigger number is 9.11.') == '9.11'
  assert pick('9.11 or 9.9: hard to say.') is None  # both named, neither picked


def test_spelling_is_letters_one_by_one_exactly_the_word():
  assert probes.spelled('banana', 'b a n a n a') and probes.spelled('banana', 'It is spelled B-A-N-A-N-A.')
  assert probes.spelled('banana', "b, a, n, a, n, a") and probes.spelled('banana', "'b' 'a' 'n' 'a' 'n' 'a'")
  assert not probes.spelled('strawberry', 'Strawberry.')  # the word said, not spelled
  assert not probes.spelled('banana', 'b a n a n a n a') and not probes.spelled('banana', 'x b a n a n a')
  assert not probes.spelled('banana', 'b a n a n')


def test_the_internet_answer_is_a_no_not_a_word_starting_with_no():
  facts = conversations.IdentityFacts('about 4 million', 256, 'books', 'a calculator')
  assert identity.truthful('internet', 'No, I cannot browse.', facts, 0)
  assert not identity.truthful('internet', 'Now I can browse the web for you.', facts, 0)
  assert not identity.truthful('internet', 'Nothing stops me.', facts, 0)


# ---- held-out sets are disjoint from the training generators by content ------------------------

def test_heldout_arithmetic_never_holds_a_question_sft_trains_on():
  config = tiny_config()
  trained = heldout.generated_questions(config.seed, conversations.DEFAULT_GENERATED)
  unfiltered = heldout.arithmetic(2000, config.seed, frozenset())
  assert any(q in trained for q, _ in unfiltered), 'the seeds differ, yet some problems are the same'
  problems = heldout.arithmetic(2000, config.seed, heldout.training_questions(config))
  assert len(problems) == 2000 and len({q for q, _ in problems}) == 2000
  assert not any(q in trained for q, _ in problems)


def test_training_questions_follow_the_init_from_chain(tmp_path):
  sft = tiny_config(seed=7)
  sft.sft = ml_collections.ConfigDict(dict(max_per_source=100))
  (tmp_path / 'sft').mkdir()
  (tmp_path / 'sft' / 'config.json').write_text(sft.to_json())
  rl = tiny_config(seed=3, init_from=str(tmp_path / 'sft'))
  questions = heldout.training_questions(rl)
  assert heldout.generated_questions(7, 2 * conversations.DEFAULT_GENERATED) <= questions
  assert heldout.generated_questions(3, 2 * conversations.DEFAULT_GENERATED) <= questions
  rl_task = rl_tasks.make_task('arithmetic', None)
  kept = heldout.without(rl_task.heldout(500), questions)
  assert kept and not any(rl_tasks.question_of(p) in questions for p in kept)


def _run_dir(path, config):
  path.mkdir(parents=True)
  (path / 'config.json').write_text(config.to_json())
  return path


def _context_of(workdir) -> Context:
  """What llm.eval builds for the run in workdir, less the model (no evaluator here runs one)."""
  run = inference.Run(workdir, inference.read_config(workdir), None, None, {}, 0, None, ())
  return Context.from_run(run)


def test_held_out_preference_prompts_leave_out_a_trained_request_in_other_case_or_punctuation(monkeypatch):
  """SFT's split groups 'Who are you?' and 'who are you' as one request (conversations.request_key);
  a preference prompt asking the trained request in other case or punctuation is no held-out prompt."""
  from llm.data import preferences
  from tiny_config import tiny_sft_config
  turn = lambda request: [{'role': 'user', 'content': request}, {'role': 'assistant', 'content': 'An answer.'}]
  trained = {'alpaca_gpt4': ([turn('Who are you?')], [turn('What is rain?')])}  # (train, val)
  monkeypatch.setattr(conversations, 'load_mixture', lambda *args, **kwargs: trained)
  config = tiny_sft_config(**{'sft.mixture': ml_collections.ConfigDict({'alpaca_gpt4': 1.0})})
  pairs = [preferences.Pair(turn(request), turn(request)[:1] + [{'role': 'assistant', 'content': 'No.'}])
           for request in ('who are you', 'WHO ARE YOU ?!', 'What is rain?', 'Who are you now?')]
  kept = preferences.without_requests(pairs, heldout.trained_requests(config, None, None))
  assert [p.chosen[0]['content'] for p in kept] == ['What is rain?', 'Who are you now?']


def test_the_init_from_chain_is_followed_from_any_directory(tmp_path, monkeypatch):
  """configs/*.py name their parent relative to where training was launched ('runs/sft_small'):
  llm.eval run elsewhere must still find it, through what each run recorded at launch."""
  launch, elsewhere = tmp_path / 'repo', tmp_path / 'elsewhere'
  elsewhere.mkdir()
  base = _run_dir(launch / 'runs' / 'base', tiny_config(seed=5))
  sft_config = tiny_config(seed=7, init_from='runs/base')
  sft_config.sft = ml_collections.ConfigDict(dict(max_per_source=100))
  sft = _run_dir(launch / 'runs' / 'sft', sft_config)
  rl = _run_dir(launch / 'runs' / 'rl', tiny_config(seed=3, init_from='runs/sft'))
  monkeypatch.chdir(launch)
  for workdir in (sft, rl):  # as llm.train does at each launch
    init_from.record(inference.read_config(workdir), workdir)
  monkeypatch.chdir(elsewhere)
  config = _context_of(rl).config
  assert [c.seed for c in heldout.lineage(config)] == [3, 7, 5]
  assert heldout.generated_questions(7, 2 * conversations.DEFAULT_GENERATED) <= heldout.training_questions(config)


def test_a_parent_run_not_found_is_named_not_taken_for_the_chains_end(tmp_path, monkeypatch):
  """A run without the launch record (trained before it was kept) is found from the directory it
  was launched from; from another the chain's parent is missing, which must not pass silently."""
  launch = tmp_path / 'repo'
  _run_dir(launch / 'runs' / 'sft', tiny_config(seed=7))
  rl = _run_dir(launch / 'runs' / 'rl', tiny_config(seed=3, init_from='runs/sft'))
  monkeypatch.chdir(launch)
  assert [c.seed for c in heldout.lineage(_context_of(rl).config)] == [3, 7]
  monkeypatch.chdir(tmp_path)
  with pytest.raises(inference.RunError, match=r"init_from='runs/sft' is no run from .*: run from the directory it "
                                               r'was trained from'):
    heldout.training_questions(_context_of(rl).config)


def test_a_parent_run_moved_or_deleted_is_named_with_where_to_restore_it(tmp_path, monkeypatch):
  """A run up the chain gone from where it was (an absolute init_from, or where the launch record
  found a relative one) is no directory mix-up: the error says where to put it back, and, for the
  held-out preference prompts, what it is needed for; the evals' own error stays about the chain."""
  launch, elsewhere = tmp_path / 'repo', tmp_path / 'elsewhere'
  elsewhere.mkdir()
  gone = launch / 'runs' / 'base'
  absolute = _run_dir(launch / 'runs' / 'sft', tiny_config(seed=7, init_from=str(gone)))
  relative = _run_dir(launch / 'runs' / 'sft_relative', tiny_config(seed=7, init_from='runs/base'))
  _run_dir(gone, tiny_config(seed=5))
  monkeypatch.chdir(launch)
  init_from.record(inference.read_config(relative), relative)  # as llm.train does at launch
  (gone / 'config.json').unlink()  # the base run deleted (or moved) since
  monkeypatch.chdir(elsewhere)
  for sft, typed in ((absolute, str(gone)), (relative, 'runs/base')):
    config = tiny_config(seed=3, init_from=str(sft))  # a reward model or RLHF run of that SFT
    gone_from = (rf"init_from='{re.escape(typed)}' of {re.escape(str(sft))} is no run now: "
                 rf'{re.escape(str(gone / "config.json"))} is gone')
    fix = (rf'; restore or copy that run to {re.escape(str(gone))} \(only its config.json is read\), or make '
           rf'that init_from in {re.escape(str(sft / "config.json"))} the path where it is now')
    with pytest.raises(inference.RunError, match=gone_from + r' \(every run up the init_from chain is needed to '
                       r'rebuild what its SFT, RLHF and reward model runs trained on, so that those prompts stay out of the held-out '
                       r'preference prompts\)' + fix):
      heldout.trained_requests(config, tmp_path, None)
    with pytest.raises(inference.RunError, match=gone_from + fix):
      heldout.training_questions(config)


def test_training_records_where_a_relative_init_from_pointed(pretrained, cache_dir, tmp_path, monkeypatch):
  from llm import train
  monkeypatch.chdir(pretrained.parent)
  config = tiny_config(cache_dir, **{'train.steps': 1, 'model.max_seq_len': 128, 'train.seq_len': 128,
                                     'init_from': pretrained.name,
                                     'tokenizer.path': str(pretrained / 'tokenizer.model')})
  train.run(config, tmp_path / 'continued')
  monkeypatch.chdir(tmp_path)
  config.train.steps = 2  # resumed from where the relative init_from names nothing: the record stays
  train.run(config, tmp_path / 'continued')
  assert [c.get('init_from') for c in heldout.lineage(_context_of(tmp_path / 'continued').config)] == [
      str(pretrained.resolve()), '']


# ---- the command line ---------------------------------------------------------------------------

def _eval(workdir, *flags, env):
  return subprocess.run([sys.executable, '-m', 'llm.eval', f'--workdir={workdir}', *flags], env=env,
                        capture_output=True, text=True, cwd=ROOT)


def test_eval_cli_end_to_end_on_a_tiny_run(pretrained, subprocess_env, data_dir):
  result = _eval(pretrained, '--suite=base', '--limit=8', f'--corpus={data_dir / "tinystories_val_sample"}',
                 env=subprocess_env)
  assert result.returncode == 0, result.stderr[-2000:]
  out = json.loads((pretrained / 'eval' / 'base.json').read_text())
  assert {'bpb_val', 'bpb_tinystories_val_sample', 'hellaswag_acc', 'hellaswag_acc_norm', 'hellaswag_centered',
          'fewshot_arith_acc', 'fewshot_translation_acc', 'step'} <= set(out)
  assert out['hellaswag_items'] == 8 and out['step'] == 10 and out['limit'] == 8
  summary = json.loads((pretrained / 'summary.json').read_text())
  assert out['bpb_val'] == pytest.approx(summary['val_bpb'], rel=0.05)  # the training loop's measure, other windows
  assert 'hellaswag_acc_norm' in result.stdout


def test_eval_cli_refuses_a_corpus_named_val_before_loading_the_run(tmp_path, python_env):
  for folder in ('ca', 'cb'):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / 'val.txt').write_text('Call me Ishmael.')
  result = _eval(tmp_path / 'no_run', f'--corpus={tmp_path / "ca" / "val.txt"}', env=python_env)
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert "would be reported as bpb_val, as the run's validation split is" in result.stderr.strip().splitlines()[-1]


def test_eval_cli_errors_are_one_line_naming_the_fix(tmp_path, pretrained, python_env):
  def last_line(result):
    assert result.returncode != 0 and 'Traceback' not in result.stderr
    return result.stderr.strip().splitlines()[-1]

  assert 'choose a suite (base, chat, rl, security) or one evaluator' in last_line(_eval(pretrained, '--suite=nope', env=python_env))
  (tmp_path / 'run').mkdir()
  (tmp_path / 'run' / 'config.json').write_text((pretrained / 'config.json').read_text())
  (tmp_path / 'run' / 'tokenizer.model').write_bytes((pretrained / 'tokenizer.model').read_bytes())
  assert 'no checkpoints/ folder' in last_line(_eval(tmp_path / 'run', env=python_env))
  (tmp_path / 'data').mkdir()
  line = last_line(_eval(pretrained, f'--data_dir={tmp_path / "data"}', env=python_env))
  assert f'data dir {tmp_path / "data"} (--data_dir) holds no ' in line and 'set --data_dir to the folder' in line
  assert '--config.' not in line  # no flag of llm.eval
