"""A training run read back for inference: its config, tokenizer and parameters, nothing else.

Only the parameters subtree of the orbax checkpoint is restored (partial_restore): the Adam
moments, twice the parameters' size, are neither read nor allocated, and no optimizer, train
state or training setup is built.
"""
import dataclasses
import logging
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from llm import checkpoint, files, model as model_lib, sharding, tokenizer as tokenizer_lib
from llm.inference.engine import Engine
from llm.interop.params import path_str


class RunError(ValueError):
  """A directory that cannot be read as a run; the message says what is missing and where."""


@dataclasses.dataclass(frozen=True)
class Run:
  workdir: Path
  config: ml_collections.ConfigDict  # the run's resolved config.json
  tokenizer: tokenizer_lib.Tokenizer
  model_cfg: model_lib.ModelConfig
  params: dict  # laid out over mesh by the config's logical-axis rules
  step: int  # the checkpoint the parameters come from
  mesh: jax.sharding.Mesh
  rules: tuple

  def engine(self, **kwargs) -> Engine:
    """An Engine over this run's model; kwargs as Engine's (tools, cache_len)."""
    return Engine(self.model_cfg, self.params, self.tokenizer, self.mesh, rules=self.rules, **kwargs)


def _require(path: Path, what: str):
  if not path.exists():
    raise RunError(f'{path} is missing: {what}')


def read_config(workdir: Path | str) -> ml_collections.ConfigDict:
  workdir = Path(workdir)
  _require(workdir / 'config.json', f'is {workdir} a training run (python -m llm.main --workdir=...)?')
  return ml_collections.ConfigDict(files.read_json(workdir / 'config.json'))


def _require_language_model(workdir: Path, config: ml_collections.ConfigDict):
  head = config.model.get('head', 'lm')
  if head != 'lm':
    origin = config.get('init_from') or ''
    raise RunError(f'{workdir} is a reward model (task={config.task}, model.head={head!r}): it scores sequences and '
                   'does not generate; sample, chat with, serve, evaluate or export the policy it was trained from'
                   + (f' (its init_from: {origin})' if origin else ''))


def abstract_params(model_cfg: model_lib.ModelConfig, mesh, rules):
  """The parameters' shapes and dtypes, with the shardings the logical-axis rules give them."""
  model = model_lib.Transformer(model_cfg)
  with sharding.mesh_context(mesh, rules):
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))['params'])
    shardings = sharding.logical_to_sharding(boxed, mesh, rules)
  # Unboxed without a sharding constraint (shapes only): nn.unbox would apply one whenever a mesh
  # is in scope, e.g. when a training task loads another run (rlhf's reward model).
  unboxed = jax.tree.map(lambda x: x.unbox(apply_constraint=False), boxed,
                         is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  return checkpoint.abstract_like(unboxed, shardings)


def restore_params(checkpoints: Path | str, abstract, step: int | None = None) -> tuple[dict, int]:
  """(params, step) from the latest (or the given) checkpoint under `checkpoints`, reading only
  the train state's 'params' subtree into abstract's shapes and shardings."""
  checkpoints = Path(checkpoints)
  _require(checkpoints, 'the run has no checkpoints/ folder')
  # save_interval_steps=0 as read_only sets it anyway, else with a warning before every sample.
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  manager = ocp.CheckpointManager(checkpoints.absolute(), item_handlers={'state': ocp.PyTreeCheckpointHandler()},
                                  options=options)
  try:
    step = manager.latest_step() if step is None else step
    if step is None or step not in manager.all_steps():
      raise RunError(f'{checkpoints} holds no checkpoint {"yet" if step is None else f"of step {step}"}')
    item = {'params': abstract}
    try:
      restored = checkpoint.restore(manager, step, ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)))
    except checkpoint.Unreadable as e:  # the CLIs end a RunError in one line
      raise RunError(str(e)) from e
  finally:
    manager.close()
  params = restored['state']['params']
  # partial_restore leaves a parameter the checkpoint lacks as its ShapeDtypeStruct, which would fail
  # only where it is first computed with, in a trace naming neither the parameter nor the checkpoint.
  missing = [path_str(path) for path, x in jax.tree_util.tree_leaves_with_path(params)
             if isinstance(x, jax.ShapeDtypeStruct)]
  if missing:
    raise RunError(f'{checkpoints / str(step)} holds no {", ".join(missing)} of the model asked for: it is a '
                   'checkpoint of another model (compare config.model with that run\'s config.json)')
  return params, step


def _mesh_here(mesh_cfg, model_cfg: model_lib.ModelConfig, rules) -> jax.sharding.Mesh:
  """The run's mesh where its sizes fit this host's devices and split every parameter evenly; else
  the most FSDP that does, then the most tensor parallelism, the devices left data-parallel: a run
  trained on 16 devices samples on a laptop, or on 6 devices (the checkpoint reshards on restore)."""
  devices = jax.device_count()
  # Which mesh axes split which dimensions: the logical rules say, whatever the axes' sizes.
  one_device = sharding.make_mesh({a: 1 for a in sharding.MESH_AXES}, jax.devices()[:1])
  dims = sharding.split_dims(abstract_params(model_cfg, one_device, rules))
  try:
    sizes = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(mesh_cfg, devices)))
    uneven = sharding.unevenly_split(dims, sizes)
    if not uneven:
      return sharding.make_mesh(sizes)
    reason = f'mesh {sizes} splits params{uneven[0][0]} unevenly'
  except ValueError as e:
    reason = str(e)
  divisors = [d for d in range(devices, 0, -1) if devices % d == 0]
  candidates = ({'data': devices // (fsdp * tensor), 'fsdp': fsdp, 'tensor': tensor}
                for fsdp in divisors for tensor in divisors if devices % (fsdp * tensor) == 0)
  sizes = next(s for s in candidates if not sharding.unevenly_split(dims, s))  # fsdp = tensor = 1 always does
  logging.info('%s: loading with mesh %s over the %d devices here', reason, sizes, devices)
  return sharding.make_mesh(sizes)


def load(workdir: Path | str, step: int | None = None, mesh=None, reward_model: bool = False) -> Run:
  """The run in workdir: config.json, tokenizer.model and the latest (or given) checkpoint's
  parameters, on `mesh` (default: the run's own mesh config on this host's devices, or as much
  FSDP over them as the parameters split evenly where that mesh does not fit them).
  reward_model: the run is read for its scores (llm.rl.reward_model); every other caller generates
  from, evaluates or exports a language model, and a reward model is refused here, before its
  parameters are read, not at its first decoding step."""
  workdir = Path(workdir)
  config = read_config(workdir)
  if not reward_model:
    _require_language_model(workdir, config)
  _require(tokenizer_lib.run_file(workdir), f'{workdir} has no tokenizer; copy the one it was trained with there')
  tok = tokenizer_lib.load_any(tokenizer_lib.run_file(workdir))
  model_cfg = model_lib.ModelConfig.from_config(config.model, tok.vocab_size)
  rules = sharding.logical_rules(config.mesh.rules)
  mesh = _mesh_here(config.mesh, model_cfg, rules) if mesh is None else mesh
  params, step = restore_params(workdir / 'checkpoints', abstract_params(model_cfg, mesh, rules), step)
  return Run(workdir, config, tok, model_cfg, params, step, mesh, rules)
