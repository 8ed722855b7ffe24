"""SFT policy of the controlled RLHF setting (llm/rl/gold.py): the pretrain_small base taught to
answer "Tell me about the X." with a few short sentences, as the gold setting's generator writes.

    python -m llm.main --config=configs/pretrain_small.py --workdir=runs/pretrain_small   # first
    python -m llm.main --config=configs/sft_gold.py --workdir=runs/sft_gold
"""
from configs import sft_small


def get_config(arg=None):
  c = sft_small.get_config(arg)  # the same model and base run
  c.sft.mixture = sft_small.mixture(gold_topics=1.0)  # only the gold-topic conversations
  c.sft.max_per_source = 20_000  # generated conversations per epoch
  c.sft.eval_prompts = 0  # the chat suite's well-formed-turn rate asks other sources
  c.sft.eval_arithmetic = 0
  c.train.steps = 150
  c.train.eval_every = 150
  c.train.checkpoint_every = 150
  return c
