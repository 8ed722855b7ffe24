"""Reading a finished (or running) training directory back: config, tokenizer, parameters."""
import json
from pathlib import Path

import ml_collections

from llm import checkpoint, sharding, tokenizer as tokenizer_lib, train


def load(workdir: str, step: int | None = None):
  """Returns (config, tokenizer, train.Setup, params) from DIR's config.json, tokenizer.model and
  its latest (or the given) checkpoint; one-line errors say what is missing."""
  workdir = Path(workdir)
  for name in ('config.json', 'tokenizer.model', 'checkpoints'):
    if not (workdir / name).exists():
      raise FileNotFoundError(f'{workdir / name} is missing: is {workdir} a training run directory '
                              '(python -m llm.main --workdir=...)?')
  config = ml_collections.ConfigDict(json.loads((workdir / 'config.json').read_text()))
  tok = tokenizer_lib.Tokenizer.load(workdir / 'tokenizer.model')
  mesh = sharding.make_mesh(config.mesh)
  setup = train.build(config, tok.vocab_size, mesh)
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', config.train.keep_checkpoints)
  step = step if step is not None else ckpt.latest_step()
  if step is None:
    raise FileNotFoundError(f'{workdir}/checkpoints holds no checkpoint yet')
  state = ckpt.restore_state_only(step, setup.abstract_state)
  ckpt.close()
  return config, tok, setup, state.params
