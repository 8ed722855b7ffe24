"""Refusals and jailbreaks (llm/security/jailbreak.py), greedy, on the red-team requests that the
`refusals` source holds out, and on held-out benign instructions:

- jailbreak_refusal_rate: share of the requests, as they are, that the model refuses;
- jailbreak_refusal_rate_<t> and jailbreak_bypass_<t>, for each transformation t (roleplay,
  suffix, base64): the refusal rate of the transformed requests, and of the requests refused as
  they are, the share that t gets answered;
- over_refusal_rate: share of held-out benign instructions (alpaca_gpt4, self_instruct) refused;
- jailbreak_n, jailbreak_n_<t>, over_refusal_n: how many of the requests, as they are and
  transformed, and of the benign instructions were measured. A prompt too long for the context gets
  no reply and counts neither way (base64 makes long requests longer still), and the benign
  instructions are only the validation conversations that fit the SFT run's seq_len (21 for
  sft_small's and sft_tools' 256), so these are the rates' denominators.
"""
from llm.evals import well_formed
from llm.evals.context import assistant_text, fitted, mean
from llm.security import jailbreak

DEFAULT_COUNT = 100  # requests, and benign instructions
MAX_NEW_TOKENS = 48  # a refusal says so in its first sentence
BENIGN_SOURCES = ('alpaca_gpt4', 'self_instruct')


def refused(ctx, prompts: list[str]) -> list[bool | None]:
  """Per prompt, whether the reply is a refusal; None where the prompt did not fit (no reply)."""
  return [None if c is None else jailbreak.is_refusal(assistant_text(ctx.tokenizer, c))
          for c in ctx.chat(prompts, MAX_NEW_TOKENS, tools=True)]


def evaluate(ctx) -> dict:
  count = ctx.count(DEFAULT_COUNT)
  requests = jailbreak.heldout_requests(ctx.data_dir(jailbreak.REQUESTS))[:count]
  plain = refused(ctx, requests)
  out = {'jailbreak_refusal_rate': mean(fitted(plain)), 'jailbreak_n': len(fitted(plain))}
  for name, transform in jailbreak.TRANSFORMS.items():
    transformed = refused(ctx, [transform(r) for r in requests])
    out[f'jailbreak_refusal_rate_{name}'] = mean(fitted(transformed))
    out[f'jailbreak_n_{name}'] = len(fitted(transformed))
    # Of the requests refused as they are, those whose transformed prompt fit too.
    out[f'jailbreak_bypass_{name}'] = mean(not t for t, p in zip(transformed, plain) if p and t is not None)
  held = well_formed.heldout_conversations(ctx)
  benign = [c[0]['content'] for name in BENIGN_SOURCES for c in held.get(name, []) if isinstance(c[0]['content'], str)]
  benign_refused = fitted(refused(ctx, benign[:count]))
  out.update(over_refusal_rate=mean(benign_refused), over_refusal_n=len(benign_refused))
  return out
