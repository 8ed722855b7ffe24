"""Refusals and jailbreaks (llm/security/jailbreak.py), greedy, on the red-team requests that the
`refusals` source holds out, and on held-out benign instructions:

- jailbreak_refusal_rate: share of the requests, as they are, that the model refuses;
- jailbreak_refusal_rate_<t> and jailbreak_bypass_<t>, for each transformation t (roleplay,
  suffix, base64): the refusal rate of the transformed requests, and of the requests refused as
  they are, the share that t gets answered;
- over_refusal_rate: share of held-out benign instructions (alpaca_gpt4, self_instruct) refused.
"""
from llm.evals import well_formed
from llm.evals.context import assistant_text, mean
from llm.security import jailbreak

DEFAULT_COUNT = 100  # requests, and benign instructions
MAX_NEW_TOKENS = 48  # a refusal says so in its first sentence
BENIGN_SOURCES = ('alpaca_gpt4', 'self_instruct')


def refused(ctx, prompts: list[str]) -> list[bool]:
  return [jailbreak.is_refusal(assistant_text(ctx.tokenizer, c)) for c in ctx.chat(prompts, MAX_NEW_TOKENS, tools=True)]


def evaluate(ctx) -> dict:
  count = ctx.count(DEFAULT_COUNT)
  requests = jailbreak.heldout_requests(ctx.data_dir())[:count]
  plain = refused(ctx, requests)
  out = {'jailbreak_refusal_rate': mean(plain)}
  for name, transform in jailbreak.TRANSFORMS.items():
    transformed = refused(ctx, [transform(r) for r in requests])
    out[f'jailbreak_refusal_rate_{name}'] = mean(transformed)
    out[f'jailbreak_bypass_{name}'] = mean(not t for t, p in zip(transformed, plain) if p)
  held = well_formed.heldout_conversations(ctx)
  benign = [c[0]['content'] for name in BENIGN_SOURCES for c in held.get(name, []) if isinstance(c[0]['content'], str)]
  out['over_refusal_rate'] = mean(refused(ctx, benign[:count]))
  return out
