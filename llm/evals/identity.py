"""Identity truthfulness: asked about itself, does the chat model state the facts of its own run?

The facts come from the run (its config.json and model), never from constants:
run_facts() is also what the SFT data's identity conversations are written from
(llm/tasks/sft.py), so a 124M-parameter run learns to say 124M. Keys: identity_<fact> (share of
its questions answered truthfully, greedy) and identity_truthful (their mean):
parameters (a stated number within 10%), context (its token count), data (names the pretraining
data), tools (names the calculator), internet (says no).

The questions are worded as the SFT identity conversations word them (every one of them is in
that training split: it holds out whole topics, at configs/sft_small.py's val_fraction none of
these): this measures whether the model states its own run's facts when asked as
it was taught, not whether it generalises to new wordings.
"""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm import model as model_lib
from llm.data import conversations
from llm.evals import heldout
from llm.evals.context import assistant_text, mean

# What a data source is, in the words the model is taught; the source's own name otherwise.
_DATA_DESCRIPTIONS = {'gutenberg': 'public-domain books from Project Gutenberg',
                      'tinyshakespeare': 'the works of Shakespeare',
                      'tinystories': 'short stories for children (TinyStories)',
                      'fineweb': 'educational web pages (FineWeb-Edu)'}
# Each tool as the identity conversations name it, in the order they list them.
_TOOL_DESCRIPTIONS = {'calculator': conversations.CALCULATOR, 'search': 'a text search',
                      'python': 'a Python interpreter'}
QUESTIONS = {
    'parameters': ('How many parameters do you have?', 'How big are you?', 'how large is your model'),
    'context': ('How much can you remember?', 'how much can you remember'),
    'data': ('What were you trained on?', 'What data did you learn from?', 'where does your knowledge come from'),
    'tools': ('How do you do arithmetic?', 'Can you do math?'),
    'internet': ('Can you browse the internet?', 'Do you have internet access?'),
}
_NUMBER = re.compile(r'(\d[\d,]*(?:\.\d+)?)\s*(thousand|million|billion)?', re.I)
_SCALE = {None: 1, 'thousand': 1e3, 'million': 1e6, 'billion': 1e9}


def about(count: int) -> str:
  """4_194_304 -> 'about 4.19 million'; 999_600 -> 'about 1 million': rounded to three figures
  before the unit is chosen, else it would read 'about 1e+03 thousand'."""
  rounded = float(f'{count:.3g}')
  for scale, word in ((1e9, 'billion'), (1e6, 'million'), (1e3, 'thousand')):
    if rounded >= scale:
      return f'about {rounded / scale:.3g} {word}'
  return f'about {count}'


def param_count(model_cfg: model_lib.ModelConfig) -> int:
  """The model's parameter count, from shapes alone (nothing allocated)."""
  shapes = jax.eval_shape(lambda: model_lib.Transformer(model_cfg).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
  return model_lib.count_params(nn.unbox(shapes['params']))['total']


def data_description(source: str) -> str:
  return next((d for key, d in _DATA_DESCRIPTIONS.items() if key in source.lower()), f'the text of {source}')


def tools_taught(config) -> list[str]:
  """The tools the model was taught to call: the calculator, which every engine has, and those the
  weighted sources of its SFT mixture call (conversations.TOOLS_CALLED: python_letters the python tool,
  search_* search, which llm.chat and llm.serve offer with --python_tool and --search_folder). The
  mixture is config's, else that of the nearest SFT run up its init_from chain (an RL run's SFT run)."""
  sft = next((c.sft for c in heldout.lineage(config, 'the tools its SFT taught are part of what the model says '
                                                     'about itself') if c.get('sft')), None)
  mixture = dict(sft.mixture) if sft else {}
  called = {conversations.TOOLS_CALLED.get(name) for name, weight in mixture.items() if weight > 0}
  return [tool for tool in _TOOL_DESCRIPTIONS if tool == 'calculator' or tool in called]


def _listed(items: list[str]) -> str:
  """['a', 'b', 'c'] -> 'a, b and c'."""
  return ' and '.join(filter(None, [', '.join(items[:-1]), items[-1]]))


def run_facts(config, model_cfg: model_lib.ModelConfig) -> conversations.IdentityFacts:
  """What a model of this config should say about itself."""
  return conversations.IdentityFacts(parameters=about(param_count(model_cfg)), context_tokens=model_cfg.max_seq_len,
                                     pretraining_data=data_description(config.data.source),
                                     tools=_listed([_TOOL_DESCRIPTIONS[tool] for tool in tools_taught(config)]))


def stated_numbers(text: str) -> list[float]:
  """'about 4.2 million parameters and 256 tokens' -> [4200000.0, 256.0]."""
  out = []
  for digits, scale in _NUMBER.findall(text):
    try:
      out.append(float(digits.replace(',', '')) * _SCALE[scale.lower() if scale else None])
    except ValueError:
      continue
  return out


def truthful(fact: str, answer: str, facts: conversations.IdentityFacts, params: int) -> bool:
  if fact == 'parameters':
    return any(abs(n - params) <= 0.1 * params for n in stated_numbers(answer))
  if fact == 'context':
    return facts.context_tokens in stated_numbers(answer)
  if fact == 'data':
    return facts.pretraining_data.lower() in answer.lower()
  if fact == 'tools':
    return 'calculator' in answer.lower()
  return re.match(r'no\b', answer.strip().lower()) is not None  # internet: a no, not 'Now I can'


def evaluate(ctx) -> dict:
  params, facts = param_count(ctx.model_cfg), ctx.identity_facts()
  asked = [(fact, q) for fact, questions in QUESTIONS.items() for q in questions]
  answers = [assistant_text(ctx.tokenizer, c) for c in ctx.chat([q for _, q in asked], 96)]
  out = {f'identity_{fact}': mean(truthful(fact, a, facts, params) for (f, _), a in zip(asked, answers) if f == fact)
         for fact in QUESTIONS}
  out['identity_truthful'] = mean(out.values())
  return out
