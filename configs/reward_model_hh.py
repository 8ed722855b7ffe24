"""Reward models on real preference pairs, from the sft_small chat model: Anthropic's harmlessness
judgements (default) or AlpacaEval's GPT-4-Turbo judgements (:alpaca).

    python -m llm.main --config=configs/reward_model_hh.py --workdir=runs/rm_hh
    python -m llm.main --config=configs/reward_model_hh.py:alpaca --workdir=runs/rm_alpaca

Responses too long for train.seq_len are cut to fit, the turn closed with <|end|> (a pair whose
prompt alone does not fit is dropped: rm_dropped_too_long in summary.json); held-out accuracy
(rm_val_accuracy) is reported beside the length-only baseline on the whole responses
(rm_val_length_baseline). Held-out pairs whose opening request sft_small trained on (its hh_chosen and
alpaca_gpt4) are left out: rm_val_left_out_trained counts them.
"""
from configs import reward_model_gold, sft_small


def get_config(arg=None):
  sources = {None: 'hh_rlhf_harmless_base', '': 'hh_rlhf_harmless_base', 'alpaca': 'alpaca_eval_ai_preferences'}
  if arg not in sources:
    raise ValueError(f'reward_model_hh:{arg!r}: give no argument (hh) or :alpaca')
  c = sft_small.get_config()
  del c['sft']
  c.task = 'reward_model'
  c.init_from = 'runs/sft_small'
  c.model.head = 'scalar'
  c.reward_model = reward_model_gold.reward_model_defaults()
  c.reward_model.source = sources[arg]
  c.reward_model.truncate = True  # long answers (most of alpaca_eval's) cut to fit, not dropped
  c.train.seq_len = 256
  c.train.batch_size = 16
  c.train.steps = 100
  c.train.lr = 1e-4
  c.train.warmup_steps = 20
  c.train.eval_every = 50
  c.train.checkpoint_every = 50
  c.train.log_every = 10
  return c
