"""Shared fixtures: tiny configs over the real data in ../shared/data."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tiny_config import SHARED_DATA, tiny_config  # noqa: E402  (re-exported for the tests)


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
