"""RLHF in the controlled setting: the sft_gold policy optimised with GRPO against a proxy reward
model (runs/PROXY), beta x KL to the SFT policy; gold and proxy logged at every eval point.

    python -m llm.main --config=configs/rlhf_gold.py:proxy=rm_gold_4k,beta=0.02 --workdir=runs/rlhf_4k_b0.02
    # an ensemble of proxies, worst case:
    python -m llm.main --config=configs/rlhf_gold.py --config.rlhf.proxy=runs/rm_a,runs/rm_b \
        --config.rlhf.ensemble=min --workdir=runs/rlhf_ens_min
"""
import ml_collections

from configs import grpo_arith, sft_gold
from llm.config import parse_arg


def get_config(arg=None):
  point = parse_arg(arg, {'proxy': 'rm_gold_4k', 'beta': 0.02}, 'proxy=RUN_NAME[,beta=F]')
  c = sft_gold.get_config()
  del c['sft']
  c.task = 'rlhf'
  c.init_from = 'runs/sft_gold'
  c.grpo = grpo_arith.grpo_defaults()
  c.grpo.task = ''  # the prompts come from rlhf.prompts
  c.grpo.prompts_per_step = 8
  c.grpo.group_size = 8
  c.grpo.max_new_tokens = 96  # room past the gold rubric's 45-word peak
  c.grpo.beta = point['beta']  # KL penalty to the SFT policy (k3, per token)
  c.rlhf = rlhf_defaults()
  c.rlhf.proxy = f"runs/{point['proxy']}"
  c.train.batch_size = c.grpo.prompts_per_step * c.grpo.group_size
  c.train.seq_len = 128
  c.train.steps = 40
  c.train.lr = 1e-4
  c.train.warmup_steps = 5
  c.train.min_lr_ratio = 1.0
  c.train.weight_decay = 0.0
  c.train.log_every = 1
  c.train.eval_every = 2  # a point on the gold/proxy-vs-KL curve every 2 steps
  c.train.checkpoint_every = 10
  return c


def rlhf_defaults() -> ml_collections.ConfigDict:
  r = ml_collections.ConfigDict()
  r.prompts = 'gold_topics'  # 'gold_topics' (has a gold reward), 'hh_rlhf_harmless_base', 'alpaca_eval_ai_preferences'
  r.proxy = ''  # reward model run DIR, or DIR1,DIR2,... for an ensemble
  r.ensemble = 'mean'  # how an ensemble's scores combine: 'mean' or 'min' (worst case)
  r.missing_end_penalty = 1.0  # subtracted from a response that never ends its turn
  r.eval_prompts = 16  # held-out prompts per eval point (x grpo.group_size samples)
  r.hacking_tolerance = 0.05  # the monitor warns past this drop in gold and rise in proxy
  return r
