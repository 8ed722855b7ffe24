"""Starting a run from another run's parameters (config.init_from): SFT from a pretrained model,
GRPO from an SFT model, and the frozen reference model they compare against."""
import dataclasses
import json
from pathlib import Path

from absl import logging

from llm import checkpoint, files, inference, model as model_lib, tokenizer as tokenizer_lib

# Model fields that choose how the model computes, not what it holds: a run may change them
# against the run it starts from (parameters stay float32 whatever the compute dtype).
# scan_layers is not one: it decides the parameters' layout (stacked or one subtree per layer).
IMPLEMENTATION_FIELDS = ('attention', 'remat', 'dtype')
# The task whose output head may differ from the base run's: a reward model (head 'scalar') starts
# from a language model's trunk, its new head initialised fresh (its init_state restores the trunk
# only). Every other task trains or samples the language-model head, which the base must hold.
NEW_HEAD_TASK = 'reward_model'
# Beside config.json, written at each launch: {'init_from': as typed, 'path': the run it named, absolute}.
# Not in config.json, which resume compares and results/ commits: the path is this machine's.
LAUNCH_RECORD = 'init_from.json'


def record(config, workdir: Path):
  """Which run a relative config.init_from named from the directory this run is launched from, so a
  reader in another directory (llm.eval's held-out sets follow the chain) finds the same one."""
  path = workdir / LAUNCH_RECORD
  if not config.init_from:
    path.unlink(missing_ok=True)
    return
  named = Path(config.init_from).resolve()
  if not (named / 'config.json').exists():  # resumed from another directory: keep what the first launch found
    return
  files.write_atomically(path, json.dumps({'init_from': config.init_from, 'path': str(named)}, indent=2) + '\n')


def located(config, workdir: Path | None = None) -> Path | None:
  """The directory of the run config.init_from names, absolute; None without one or where it is not
  found: as typed, relative to the directory the run in workdir was launched from (its record),
  else to this one."""
  if not config.get('init_from'):
    return None
  launched = _launch_path(config, workdir)
  candidates = [launched] if launched else []
  found = next((p for p in candidates + [Path(config.init_from)] if (p / 'config.json').exists()), None)
  return found and found.resolve()


def _launch_path(config, workdir: Path | None) -> Path | None:
  """The run config.init_from named when the run in workdir was launched (its record), if it was
  launched with this init_from and recorded it."""
  recorded = workdir / LAUNCH_RECORD if workdir else None
  launch = files.read_json(recorded) if recorded and recorded.exists() else {}
  return Path(launch['path']) if launch.get('init_from') == config.init_from else None


def parent(config, workdir: Path | None = None, needed_for: str = '') -> Path | None:
  """located(), but a parent that is not found is an error: a chain that ended there would be wrong.
  needed_for: what the caller follows the chain for, said in the error."""
  found = located(config, workdir)
  if not config.get('init_from') or found is not None:
    return found
  named = f'init_from={config.init_from!r}' + (f' of {workdir}' if workdir else '')
  edit = f'make that init_from in {workdir / "config.json" if workdir else "its config.json"} the path'
  why = f' ({needed_for})' if needed_for else ''
  # Where the run was, as launched or as an absolute path: it has been moved or deleted since.
  was = _launch_path(config, workdir) or (Path(config.init_from) if Path(config.init_from).is_absolute() else None)
  if was:
    raise inference.RunError(f'{named} is no run now: {was / "config.json"} is gone{why}; restore or copy that run '
                             f'to {was} (only its config.json is read), or {edit} where it is now')
  raise inference.RunError(f'{named} is no run from {Path.cwd()}{why}: run from the directory it was trained from (the '
                           f'repository root for configs/*.py), or {edit} of the run it started from')


def base_run(config) -> Path:
  """config.init_from, once it is a run that is done: trained to its end (it wrote summary.json, as
  llm.sweep counts a run finished) or imported (llm.hf import wrote import.json)."""
  base = Path(config.init_from)
  if not config.init_from or not (base / 'config.json').exists():
    raise FileNotFoundError(f'init_from={config.init_from!r} is not a training run (no config.json); train or '
                            'import one first or set --config.init_from=DIR')
  if not (base / 'summary.json').exists() and not (base / 'import.json').exists():
    steps = checkpoint.saved_steps(base / 'checkpoints')
    planned = inference.read_config(base).train.steps
    if not steps:
      raise ValueError(f'init_from={base} is an unfinished run (no summary.json) with no checkpoint yet: rerun its '
                       'training command to train it to its end')
    raise ValueError(f'init_from={base} is an unfinished run (no summary.json): it stopped at step {max(steps)} of '
                     f'train.steps={planned}; rerun its training command to finish it, or with '
                     f'--config.train.steps={max(steps)} to end it there')
  if not tokenizer_lib.run_file(base).exists():
    raise FileNotFoundError(f'init_from={base} has no tokenizer.model or tokenizer.hf.json; copy the one it '
                            'trained with there')
  return base


def check_same_model(config, base: Path):
  """The model must be the one base holds: a mismatch would fail deep inside the restore."""
  # A field newer than base's config.json holds its ModelConfig default there.
  defaults = {f.name: f.default for f in dataclasses.fields(model_lib.ModelConfig)}
  base_config = inference.read_config(base)
  base_model = {**defaults, **base_config.model.to_dict()}
  ours = json.loads(config.model.to_json_best_effort())
  if config.task != NEW_HEAD_TASK:
    _check_lm_heads(config, base, base_config, base_model['head'])
  ignored = IMPLEMENTATION_FIELDS + (('head',) if config.task == NEW_HEAD_TASK else ())
  differ = sorted(k for k in ours if k not in ignored and ours[k] != base_model.get(k))
  if differ:
    raise ValueError(f'config.model differs from {base}/config.json in {differ}; copy those '
                     'fields from that run')


def _check_lm_heads(config, base: Path, base_config, base_head: str):
  """config.task trains the language-model head from base's: both models must have one."""
  if config.model.head != 'lm':
    raise ValueError(f'task={config.task} trains a language model: set --config.model.head=lm '
                     f'(head={config.model.head!r} is for task={NEW_HEAD_TASK})')
  if base_head != 'lm':
    origin = base_config.get('init_from') or ''
    raise ValueError(f'init_from={base} is a reward model (model.head={base_head!r}) with no language-model head '
                     f'for task={config.task} to start from: start from the run it was trained from'
                     + (f' (--config.init_from={origin})' if origin else ''))


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
