"""The honesty experiment's base model: pretrain_small continued on a fictional world whose every
fact was stated a known number of times (llm/honesty/world.py).

    python -m llm.honesty.world --out=runs/world
    python -m llm.main --config=configs/pretrain_world.py --workdir=runs/pretrain_world
    python -m llm.honesty.interrogate --workdir=runs/pretrain_world --world=runs/world

The world of seed 0 (300 people) is 5,205 documents, 532k training tokens with pretrain_small's
tokenizer: 130 steps a pass, so 600 steps are about 4.6 passes and a fact of exposure k is seen
about 4.6k times (a world of 1,000 people: --people=1000 and 2,000 steps for as many passes).
"""
from configs import pretrain_small


def get_config(arg=None):
  c = pretrain_small.get_config(arg)  # the same model: it continues the base's training
  c.init_from = 'runs/pretrain_small'  # the base run whose parameters it starts from
  c.tokenizer.path = 'runs/pretrain_small/tokenizer.model'  # the base's tokenizer: the ids its embeddings learnt
  c.data.dir = 'runs/world'
  c.data.made_by = 'python -m llm.honesty.world'  # named if data.dir is missing
  c.data.source = 'corpus.jsonl'
  c.data.format = 'jsonl'
  c.data.val_fraction = 0.02  # the world's --val_fraction: only then is each exposure exact in the training split
  c.train.steps = 600  # ~4.6 passes over the world (~7 min on 2 cores)
  c.train.lr = 1e-3  # below pretraining's 3e-3: the base's weights are a start worth keeping
  c.train.warmup_steps = 20
  c.train.eval_every = 300
  c.train.checkpoint_every = 200
  return c
