"""well_formed_rate (and well_formed_rate_<source>): held-out prompts of each conversation source
answered with an assistant turn that ends in <|end|> (greedy, calculator on).

The held-out conversations are the validation split of the SFT mixture (by opening request, never
trained on): the config.sft of the run or of the nearest run up its init_from chain (an RL run's
SFT run), else DEFAULT_MIXTURE's sources.
"""
from llm import chat_template
from llm.data import conversations
from llm.evals import heldout
from llm.evals.context import mean

DEFAULT_MIXTURE = ('arithmetic', 'gsm8k', 'identity', 'self_instruct', 'alpaca_gpt4', 'hh_chosen', 'topical_chat')
DEFAULT_COUNT = 100  # prompts per source


def heldout_conversations(ctx) -> dict[str, list]:
  """The validation split as the SFT run made it: a conversation's side of the split hangs on its
  text (replies worded by honesty_reply, fitted to that run's train.seq_len) and, for a generated
  source, on that run's seed."""
  sft_run = next((c for c in heldout.lineage(ctx.config) if c.get('sft')), None)
  sft = sft_run.sft if sft_run else {}
  seq_len = sft_run.train.seq_len if sft_run else ctx.model_cfg.max_seq_len
  mixture = dict(sft.get('mixture') or dict.fromkeys(DEFAULT_MIXTURE, 1.0))
  splits = conversations.load_mixture(ctx.data_dir(), mixture, sft.get('val_fraction', 0.05),
                                      sft_run.seed if sft_run else ctx.config.seed, sft.get('max_per_source', 0),
                                      ctx.tokenizer, seq_len + 1, identity_facts=ctx.identity_facts(),
                                      honesty_labels=sft.get('honesty_labels', ''),
                                      honesty_reply=sft.get('honesty_reply', 'sentence'),
                                      generated=dict(sft.get('generated') or {}))
  return {name: val for name, (_, val) in splits.items()}


def rates(ctx, heldout: dict[str, list], count: int) -> dict:
  """From the conversations of each source, the first `count` prompts (up to the first assistant turn);
  well_formed_rate is NaN, not 0, where no prompt was asked (sft.eval_prompts=0)."""
  tok = ctx.tokenizer
  end = tok.special_id('<|end|>')
  out, formed = {}, []
  for name, held in heldout.items():
    prompts = []
    for c in held[:count]:
      first = next(i for i, m in enumerate(c) if m['role'] == 'assistant')
      prompts.append(chat_template.render_prompt(tok, c[:first]))
    prompts = [p for p in prompts if len(p) < ctx.model_cfg.max_seq_len - 16]
    if not prompts:
      continue
    outs = ctx.generate(prompts, ctx.model_cfg.max_seq_len, tools=True, temperature=0.0, stop_ids=[end, tok.eos_id])
    ok = [c.finish_reason == 'stop' and c.tokens[-1] == end for c in outs]
    out[f'well_formed_rate_{name}'] = mean(ok)
    formed += ok
  out['well_formed_rate'] = mean(formed)
  return out


def evaluate(ctx) -> dict:
  return rates(ctx, heldout_conversations(ctx), ctx.count(DEFAULT_COUNT))
