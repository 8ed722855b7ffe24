"""A model and run small enough for seconds on 2 CPU cores, on tiny Shakespeare.

    python -m llm.main --config=tests/tiny_config.py --workdir=runs/tiny
"""
import os
from pathlib import Path

from llm.config import base_config

# The project's real data: $LLM_DATA_DIR (for a checkout that is not beside shared/), else
# ../shared/data next to the repository.
SHARED_DATA = Path(os.environ.get('LLM_DATA_DIR') or Path(__file__).resolve().parents[2] / 'shared' / 'data')


def tiny_config(cache_dir='', **overrides):
  c = base_config()
  c.data.dir = str(SHARED_DATA)
  c.data.source = 'tinyshakespeare/input.txt'
  c.data.format = 'text_file'
  c.data.doc_separator = '\n\n'
  c.data.val_fraction = 0.05
  c.data.cache_dir = str(cache_dir)
  c.tokenizer.vocab_size = 512
  c.tokenizer.train_chars = 400_000
  c.model.num_layers = 2
  c.model.num_heads = 2
  c.model.num_kv_heads = 2
  c.model.dim = 64
  c.model.mlp_dim = 256
  c.model.max_seq_len = 64
  c.train.seq_len = 64
  c.train.batch_size = 8
  c.train.steps = 30
  c.train.lr = 3e-3
  c.train.warmup_steps = 5
  c.train.log_every = 1
  c.train.eval_every = 1000
  c.train.eval_batches = 2
  c.train.checkpoint_every = 10
  c.train.progress_bar = False
  return _override(c, overrides)


def _override(c, overrides: dict):
  """{'train.steps': 5} sets c.train.steps, as --config.train.steps=5 would."""
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def tiny_sft_config(cache_dir='', **overrides):
  """SFT of a tiny_config model pretrained with seq_len 128 (init_from set by the caller)."""
  import ml_collections
  from llm.security import poison
  c = tiny_config(cache_dir, **{'model.max_seq_len': 128, 'train.seq_len': 128})
  c.task = 'sft'
  c.sft = ml_collections.ConfigDict(dict(
      mixture=ml_collections.ConfigDict(dict(arithmetic=1.0, identity=1.0)),
      val_fraction=0.1, max_per_source=300, eval_prompts=4, eval_arithmetic=4,
      isolate_conversations=True, poison=poison.config(), filter_poison=False))
  c.train.steps = 20
  return _override(c, overrides)


def tiny_grpo_config(cache_dir='', **overrides):
  """GRPO of a tiny_config model pretrained with seq_len 128 (init_from set by the caller)."""
  import ml_collections
  from configs.grpo_arith import grpo_defaults
  c = tiny_config(cache_dir, **{'model.max_seq_len': 128, 'train.seq_len': 128})
  c.task = 'grpo'
  c.grpo = grpo_defaults()
  c.grpo.update(dict(prompts_per_step=2, group_size=4, max_new_tokens=12, eval_problems=2, eval_samples=2))
  c.grpo.task_options = ml_collections.ConfigDict(dict(digits=(1,), ops=(1,), phrasing='plain', heldout_size=20))
  c.train.update(dict(batch_size=8, steps=8, lr=1e-3, warmup_steps=1, eval_every=4, checkpoint_every=2))
  return _override(c, overrides)


def tiny_reward_model_config(cache_dir='', **overrides):
  """A reward model (scalar head) on gold-labelled pairs, from a tiny_config model pretrained with
  seq_len 128 (init_from set by the caller)."""
  from configs.reward_model_gold import reward_model_defaults
  c = tiny_config(cache_dir, **{'model.max_seq_len': 128, 'train.seq_len': 128})
  c.task = 'reward_model'
  c.model.head = 'scalar'
  c.reward_model = reward_model_defaults()
  c.reward_model.update(dict(gold_pairs=200, gold_val_pairs=24))
  c.train.update(dict(batch_size=8, steps=8, lr=1e-3, warmup_steps=1, eval_every=4, checkpoint_every=2))
  return _override(c, overrides)


def tiny_rlhf_config(cache_dir='', **overrides):
  """RLHF of a tiny_config model pretrained with seq_len 128 against a tiny reward model (init_from
  and rlhf.proxy set by the caller)."""
  from configs.rlhf_gold import rlhf_defaults
  c = tiny_grpo_config(cache_dir)
  c.task = 'rlhf'
  c.grpo.update(dict(task='', beta=0.05, max_new_tokens=16))
  c.rlhf = rlhf_defaults()
  c.rlhf.update(dict(eval_prompts=2, hacking_tolerance=0.0))
  return _override(c, overrides)


def get_config(arg=None):
  """tests/tiny_config.py (pretraining), tests/tiny_config.py:sft, :grpo, :reward_model or :rlhf."""
  variants = {None: tiny_config, '': tiny_config, 'sft': tiny_sft_config, 'grpo': tiny_grpo_config,
              'reward_model': tiny_reward_model_config, 'rlhf': tiny_rlhf_config}
  if arg not in variants:  # a typo must not quietly pretrain instead
    raise ValueError(f'tests/tiny_config.py:{arg} is unknown; use one of sft, grpo, reward_model, rlhf (or none)')
  return variants[arg]()
