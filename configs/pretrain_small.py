"""Small modern-style base model on the Gutenberg books, sized for 2 CPU cores: 7-15 minutes by host
(README: the first command).

    python -m llm.main --config=configs/pretrain_small.py --workdir=runs/pretrain_small
"""
from llm.config import base_config, no_arg


def get_config(arg=None):
  no_arg(arg)  # configs built on this one pass theirs here
  c = base_config()
  c.model.position = 'rope'
  c.model.norm = 'rmsnorm'
  c.model.mlp = 'swiglu'
  c.model.qk_norm = True
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.num_kv_heads = 2
  c.model.dim = 256
  c.model.mlp_dim = 768
  c.model.max_seq_len = 256
  c.train.steps = 700  # 2.9M tokens
  c.train.batch_size = 16
  c.train.seq_len = 256
  c.train.lr = 3e-3
  c.train.warmup_steps = 50
  c.train.eval_every = 350
  c.train.checkpoint_every = 100
  return c
