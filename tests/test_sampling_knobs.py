"""top_k and top_p reach the sampler: through Engine.generate and through the server's
/v1/chat/completions, with a stand-in model whose next-token distribution is known."""
import flax.linen as nn
import httpx
import jax.numpy as jnp
import pytest

from llm import chat_template, inference
from test_inference import synthetic_tok  # noqa: F401  (a fixture: a tokenizer trained on made-up words)
from test_model import init, small_config
from test_serve import serving

# Logits of 'a', 'b' and 'c'; every other id has 0. Over the 400 ids of synthetic_tok that is
# p(a) = e^10 / Z ~ 0.50, p(b) ~ 0.31, p(c) ~ 0.19, the rest ~ 0.01 together.
FAVOURED = {'a': 10.0, 'b': 9.5, 'c': 9.0}
ROWS, NEW = 8, 12


class Favours(nn.Module):
  """A stand-in model whose next-token logits are `logits_V` after every token."""
  logits_V: tuple

  def __call__(self, tokens_BxT, positions_BxT=None, cache=None, advance_B=None):
    B, T = tokens_BxT.shape
    logits = jnp.broadcast_to(jnp.asarray(self.logits_V, jnp.float32), (B, T, len(self.logits_V)))
    return logits, dict(cache, lengths=cache['lengths'] + (T if advance_B is None else advance_B))


@pytest.fixture(scope='module')
def favoured(synthetic_tok):
  """(engine, tokenizer, {letter: its id}): the engine samples from Favours."""
  tok = synthetic_tok
  ids = {letter: tok.encode(letter) for letter in FAVOURED}
  assert all(len(i) == 1 for i in ids.values())  # the premise: each letter is one token
  ids = {letter: i[0] for letter, i in ids.items()}
  logits = [0.0] * tok.vocab_size
  for letter, logit in FAVOURED.items():
    logits[ids[letter]] = logit
  setup, _ = init(small_config('gpt2', max_seq_len=64), vocab=tok.vocab_size)
  engine = inference.Engine(setup.model_cfg, {}, tok, setup.mesh, model=Favours(tuple(logits)))
  return engine, tok, ids


def _sampled(engine, tok, **knobs) -> list[int]:
  prompt = chat_template.render_prompt(tok, [{'role': 'user', 'content': 'abc'}])
  completions = engine.generate([prompt] * ROWS, NEW, seed=list(range(ROWS)), stop_ids=[], **knobs)
  return [t for c in completions for t in c.tokens]


def test_top_k_1_and_a_small_top_p_sample_as_greedy_does(favoured):
  engine, tok, ids = favoured
  greedy = _sampled(engine, tok, temperature=0.0)
  assert greedy == [ids['a']] * ROWS * NEW
  assert _sampled(engine, tok, temperature=1.0, top_k=1) == greedy
  assert _sampled(engine, tok, temperature=1.0, top_p=0.3) == greedy  # below p(a): the top token alone


def test_top_k_2_and_top_p_keep_the_draws_among_the_likeliest_tokens(favoured):
  """top_k 2 and top_p 0.7 (the mass before 'c' is ~0.81) leave 'a' and 'b'; unfiltered, the same
  seeds draw others too."""
  engine, tok, ids = favoured
  two = {ids['a'], ids['b']}
  assert not set(_sampled(engine, tok, temperature=1.0)) <= two  # the premise: the filter has work to do
  assert set(_sampled(engine, tok, temperature=1.0, top_k=2)) == two
  assert set(_sampled(engine, tok, temperature=1.0, top_p=0.7)) == two


def test_the_server_passes_top_k_and_top_p_to_the_sampler(favoured):
  engine, tok, _ = favoured
  with serving(engine, tok, max_slots=4) as (url, _):

    def letters(**knobs) -> set[str]:
      seen = set()
      for seed in range(ROWS):
        r = httpx.post(url + '/v1/chat/completions', timeout=60,
                       json={'messages': [{'role': 'user', 'content': 'abc'}], 'max_tokens': NEW,
                             'temperature': 1.0, 'seed': seed, **knobs})
        seen |= set(r.json()['choices'][0]['message']['content'])
      return seen

    assert not letters() <= {'a', 'b'}  # the premise: unfiltered, the same seeds write others too
    assert letters(top_k=1) == letters(top_p=0.3) == {'a'}
    assert letters(top_k=2) == letters(top_p=0.7) == {'a', 'b'}
