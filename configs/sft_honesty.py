"""The honesty experiment's SFT: questions about the world's 'train' people, answered where
interrogation found the base knows the fact and refused ("I don't know ...") where it does not
(llm/honesty/sft.py); the baseline answers every question, refusing none.

    python -m llm.main --config=configs/sft_honesty.py --workdir=runs/sft_honesty                 # refusals
    python -m llm.main --config=configs/sft_honesty.py --workdir=runs/sft_answers \
        --config.sft.mixture.honesty_refusals=0 --config.sft.mixture.honesty_answers=1          # the baseline
    python -m llm.eval --workdir=runs/sft_honesty --suite=honesty

First configs/pretrain_world.py and python -m llm.honesty.interrogate (its docstring).
"""
from configs import sft_small


def get_config(arg=None):
  c = sft_small.get_config(arg)  # the same model
  c.init_from = 'runs/pretrain_world'  # the world-pretrained base that was interrogated
  # Passes per epoch over each source's conversations (every fact in its 3 training phrasings).
  c.sft.mixture = sft_small.mixture(
      honesty_refusals=1.0,  # known facts answered, unknown ones refused
      honesty_answers=0.0,  # every fact answered: the baseline without refusals
      honesty_late_refusals=0.0,  # unknown ones refused where the value would come ("... of... I'm not sure which.")
      honesty_search=0.0)  # known facts answered, unknown ones searched (configs/sft_honesty_search.py)
  c.sft.honesty_labels = 'runs/world/labels.jsonl'  # python -m llm.honesty.interrogate's labelled set, in its world
  c.sft.honesty_reply = 'sentence'  # answers name the person; 'short': "They were born in ..." (world.REPLY_STYLES)
  c.sft.eval_prompts = 0  # the well-formed-turn rate asks the chat mixture's sources, which this run has none of
  c.sft.eval_arithmetic = 0  # nor arithmetic
  # ~3,150 conversations, ~30 steps an epoch: ~15 epochs. At 150 steps the refusal run refused
  # 99% of everything, its own training people too (results/factuality).
  c.train.steps = 450
  # sft_small's 1e-3 erased what the base knew of the held-out people (their exposure-64 facts
  # completed right 97% before, 31% after); 1e-4 kept more but taught too little in 150 steps.
  c.train.lr = 3e-4
  c.train.eval_every = 450
  c.train.checkpoint_every = 150
  return c
