"""Proxy reward models of the controlled RLHF setting: the sft_gold model with a scalar head,
trained on PAIRS gold-labelled pairs (llm/rl/gold.py), NOISE of the labels flipped.

    python -m llm.main --config=configs/reward_model_gold.py:pairs=4000 --workdir=runs/rm_gold_4k
    python -m llm.main --config=configs/reward_model_gold.py:pairs=4000,noise=0.25 --workdir=runs/rm_gold_4k_noisy

Held-out accuracy against gold (never noisy, held-out topics) is rm_val_accuracy in
metrics.jsonl and summary.json, beside rm_val_length_baseline.
"""
import ml_collections

from configs import sft_gold
from llm.config import parse_arg
from llm.data import preferences


def get_config(arg=None):
  point = parse_arg(arg, {'pairs': 4000, 'noise': 0.0, 'seed': 0}, 'pairs=N[,noise=F][,seed=S]')
  c = sft_gold.get_config()
  del c['sft']
  c.task = 'reward_model'
  c.init_from = 'runs/sft_gold'
  c.seed = point['seed']
  c.model.head = 'scalar'
  c.reward_model = reward_model_defaults()
  c.reward_model.source = 'gold'
  c.reward_model.gold_pairs = point['pairs']
  c.reward_model.gold_noise = point['noise']
  c.train.seq_len = 96  # prompt + the longest generated response fit
  c.train.batch_size = 32  # pairs per step
  c.train.steps = min(max(point['pairs'] // c.train.batch_size, 150), 2000)  # about one epoch, 150-2000 steps
  c.train.lr = 3e-4
  c.train.warmup_steps = 20
  c.train.eval_every = 50
  c.train.checkpoint_every = 50
  c.train.log_every = 10
  return c


def reward_model_defaults() -> ml_collections.ConfigDict:
  rm = ml_collections.ConfigDict()
  rm.source = 'gold'  # 'gold' | 'hh_rlhf_harmless_base' | 'alpaca_eval_ai_preferences' (llm/data/preferences.py)
  rm.val_fraction = preferences.VAL_FRACTION  # real sources: share of prompts held out (with all their pairs)
  rm.gold_pairs = 4000  # gold: training pairs (the study: 1000, 4000, 16000, 32000, 64000)
  rm.gold_noise = 0.0  # gold: share of training labels flipped (Coste et al.: 0.25)
  rm.gold_val_pairs = 1000  # gold: held-out pairs (held-out topics, true labels)
  rm.truncate = False  # a pair longer than train.seq_len: dropped (False) or its responses cut to fit (True)
  rm.use_margin = False  # -log sigmoid(r_c - r_r - margin), gold's gap as the margin (TRL's margin column)
  rm.center_rewards_coefficient = 0.01  # + coefficient x mean((r_c + r_r)^2): scores near 0 (TRL)
  return rm
