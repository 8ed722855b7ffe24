"""Starting a run from another run's parameters (config.init_from): SFT from a pretrained model,
GRPO from an SFT model, and the frozen reference model they compare against."""
import dataclasses
import json
from pathlib import Path

from absl import logging

from llm import inference, model as model_lib, tokenizer as tokenizer_lib

# Model fields that choose how the model computes, not what it holds: a run may change them
# against the run it starts from (parameters stay float32 whatever the compute dtype).
# scan_layers is not one: it decides the parameters' layout (stacked or one subtree per layer).
IMPLEMENTATION_FIELDS = ('attention', 'remat', 'dtype')
# The output head may differ too: a reward model (head 'scalar') starts from a language model's
# trunk, its new head initialised fresh (init_state restores only the parameters both hold).
HEAD_FIELDS = ('head',)


def base_run(config) -> Path:
  base = Path(config.init_from)
  if not config.init_from or not tokenizer_lib.run_file(base).exists():
    raise FileNotFoundError(f'init_from={config.init_from!r} is not a finished training run '
                            '(no tokenizer.model or tokenizer.hf.json); train or import one first or set '
                            '--config.init_from=DIR')
  return base


def check_same_model(config, base: Path):
  """The model must be the one base holds: a mismatch would fail deep inside the restore."""
  # A field newer than base's config.json holds its ModelConfig default there.
  defaults = {f.name: f.default for f in dataclasses.fields(model_lib.ModelConfig)}
  base_model = {**defaults, **inference.read_config(base).model.to_dict()}
  ours = json.loads(config.model.to_json_best_effort())
  differ = sorted(k for k in ours if k not in IMPLEMENTATION_FIELDS + HEAD_FIELDS and ours[k] != base_model.get(k))
  if differ:
    raise ValueError(f'config.model differs from {base}/config.json in {differ}; copy those '
                     'fields from that run')


def base_params(config, abstract_params):
  """config.init_from's parameters (its latest checkpoint, no optimizer state), into
  abstract_params' shapes and shardings."""
  base = base_run(config)
  params, step = inference.restore_params(base / 'checkpoints', abstract_params)
  logging.info('parameters from %s step %d', base, step)
  return params


def init_state(config, state, abstract_state):
  """Starts from config.init_from's parameters; the optimizer state starts fresh."""
  return state.replace(params=base_params(config, abstract_state.params))
