"""GPT-2 small (124M) on FineWeb-Edu, for GPUs and TPU pod slices, in bf16 with FSDP.

On a connected machine, fetch the corpus first (FineWeb-Edu's 10B-token sample, 14 shards of
~0.7B tokens; the 19k steps below read it about once; --shards=N fetches the first N only):
    python -m llm.data.download --dataset=fineweb_edu --out=data/fineweb_edu
Then, on one GPU host or on every worker of a TPU VM (see launch/):
    python -m llm.main --config=configs/pretrain_gpt2_124m.py --workdir=runs/gpt2_124m

~10B tokens is 19k steps of 512 x 1024 tokens.
"""
from llm.config import base_config, no_arg


def get_config(arg=None):
  no_arg(arg)  # configs built on this one pass theirs here
  c = base_config()
  c.data.source = 'fineweb_edu'
  c.data.format = 'jsonl'
  c.data.jsonl_field = 'text'
  c.data.val_fraction = 0.0005
  c.tokenizer.vocab_size = 50304  # GPT-2's 50257 rounded up to a multiple of 64 (fast matmuls)
  c.tokenizer.train_chars = 200_000_000
  # GPT-2 small architecture: learned positions, LayerNorm, GELU, tied embeddings.
  c.model.num_layers = 12
  c.model.num_heads = 12
  c.model.num_kv_heads = 12
  c.model.dim = 768
  c.model.mlp_dim = 3072
  c.model.max_seq_len = 1024
  c.model.dtype = 'bfloat16'
  c.model.remat = 'dots'
  c.train.seq_len = 1024
  c.train.batch_size = 512  # 0.5M tokens per step, as in GPT-2/3 small
  c.train.grad_accum = 1  # raise when a device cannot hold batch_size / devices sequences
  c.train.steps = 19_073  # ~10B tokens
  c.train.lr = 6e-4
  c.train.warmup_steps = 700
  c.train.eval_every = 1000
  c.train.eval_batches = 40
  c.train.checkpoint_every = 1000
  c.train.log_every = 20
  c.mesh.data = 1
  c.mesh.fsdp = -1  # parameters and optimizer state sharded over every device
  return c
