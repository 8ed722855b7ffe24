"""Shared fixtures: tiny configs over the real data in ../shared/data."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / 'shared' / 'data'
sys.path.insert(0, str(ROOT))


def tiny_config(cache_dir: Path, **overrides):
  """A model and run small enough for a few seconds on 2 CPU cores, on tiny Shakespeare."""
  from llm.config import base_config
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
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


@pytest.fixture(scope='session')
def cache_dir(tmp_path_factory):
  """Tokenizer and token caches shared by the whole session (trained once)."""
  return tmp_path_factory.mktemp('llm_cache')


@pytest.fixture
def subprocess_env(cache_dir):
  """Environment for `python -m llm...` children: the repo importable, one quiet CPU device."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), LLM_CACHE_DIR=str(cache_dir), JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  return env
