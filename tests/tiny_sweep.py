"""A two-point sweep of tiny_config models, for the sweep runner's tests.

    python -m llm.sweep --sweep=tests/tiny_sweep.py:two --root=runs/tiny_sweep
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_config import tiny_config  # noqa: E402


def get_config(arg=None):
  dim = int(arg.partition('=')[2])
  return tiny_config(**{'model.dim': dim, 'model.mlp_dim': 4 * dim, 'train.steps': 40})


def point_name(arg: str) -> str:
  return arg.replace('=', '')


def sweep(grid: str) -> list[str]:
  if grid != 'two':
    raise ValueError(f'unknown grid {grid!r}')
  return ['dim=32', 'dim=48']
