"""The one training loop. A task (llm/tasks) contributes its batches and its loss; this file
owns initialisation, the jitted sharded step, evaluation, checkpoints and logging.

A batch from disk to the loss: task.data() -> grain iterator of host-local numpy rows ->
sharding.global_batch() (one global jax.Array sharded over data x fsdp) -> train_step ->
task.loss_fn(model, params, batch) -> (loss_sum, weight_sum) -> gradients -> AdamW.
"""
import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from llm import (checkpoint, files, hostinfo, init_from, losses, model as model_lib, optim, sharding, tasks,
                 tokenizer as tokenizer_lib, workdir_lock)
from llm.data import sources
from llm.metrics_log import MetricsLog

@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  opt_state: optax.OptState


def make_train_step(model, tx, lr_fn, loss_fn, grad_accum: int):
  """train_step(state, batch) -> (state, metrics); pure, for jax.jit.

  loss_fn(model, params, batch) -> (loss_sum, weight, aux) where aux maps a metric name to a
  (sum, count) pair; sums add up over micro-batches and the metric is sum / count.
  """

  def grads_of(params, batch):
    def scalar_loss(p):
      loss_sum, weight, aux = loss_fn(model, p, batch)
      return loss_sum, (weight, aux)
    (loss_sum, (weight, aux)), grads = jax.value_and_grad(scalar_loss, has_aux=True)(params)
    return grads, loss_sum, weight, aux

  def train_step(state, batch):
    if grad_accum == 1:
      grads, loss_sum, weight, aux = grads_of(state.params, batch)
    else:
      # Micro-batch i takes rows i, i+A, i+2A, ...: every device holds a share of each one,
      # so the reshape keeps the batch sharding.
      micro = jax.tree.map(
          lambda x: x.reshape(x.shape[0] // grad_accum, grad_accum, *x.shape[1:]).swapaxes(0, 1), batch)

      def body(carry, mb):
        return jax.tree.map(jnp.add, carry, grads_of(state.params, mb)), None

      zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grads_of, state.params,
                                                          jax.tree.map(lambda x: x[0], micro)))
      (grads, loss_sum, weight, aux), _ = jax.lax.scan(body, zeros, micro)
    weight = jnp.maximum(weight, 1.0)
    grads = jax.tree.map(lambda g: g / weight, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {'loss': loss_sum / weight, 'grad_norm': optax.tree.norm(grads), 'lr': lr_fn(state.step),
               **{k: total / jnp.maximum(count, 1.0) for k, (total, count) in aux.items()}}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def make_eval_step(model, token_bytes_V):
  """Sums for validation loss (nats/token) and bits per byte (special tokens carry no bytes; a
  batch's 'byte_fix', where it has one, makes each document's bytes its text's: losses.byte_fix)."""
  token_bytes_V = jnp.asarray(token_bytes_V, jnp.float32)

  def eval_step(params, batch):
    logits = losses.batch_logits(model, params, batch)
    loss_sum, weight, loss_BxT = losses.next_token_loss(logits, batch['targets'], batch.get('loss_mask'))
    mask_BxT = jnp.ones_like(loss_BxT) if 'loss_mask' not in batch else batch['loss_mask']
    bytes_BxT = losses.target_bytes(token_bytes_V, batch['targets'], batch.get('byte_fix')) * mask_BxT
    text_BxT = (token_bytes_V[batch['targets']] > 0) * mask_BxT
    return {'loss_sum': loss_sum, 'weight': weight, 'bytes': bytes_BxT.sum(),
            'byte_loss_sum': (loss_BxT * text_BxT).sum()}

  return eval_step


def evaluate(eval_step, params, eval_sets: dict, mesh) -> dict:
  """val_loss and val_bpb (pooled over every set), plus val_<name>_loss/_bpb per named set."""
  per_set = {}
  for name, batches in eval_sets.items():
    sums = None
    for batch in batches:
      s = eval_step(params, sharding.global_batch(_local_rows(batch), mesh))
      sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
    per_set[name] = jax.device_get(sums)
  if per_set and 'val' not in per_set:
    per_set['val'] = jax.tree.map(lambda *xs: sum(xs), *per_set.values())
  out = {}
  for name, sums in per_set.items():
    prefix = 'val' if name == 'val' else f'val_{name}'
    out[f'{prefix}_loss'] = float(sums['loss_sum'] / max(sums['weight'], 1))
    if sums['bytes'] > 0:
      out[f'{prefix}_bpb'] = float(sums['byte_loss_sum'] / sums['bytes'] / math.log(2))
  return out


def _local_rows(batch: dict) -> dict:
  """This process's rows of a batch that every process holds whole (the eval sets)."""
  n, p = jax.process_count(), jax.process_index()
  return jax.tree.map(lambda x: x[p * (len(x) // n):(p + 1) * (len(x) // n)], batch)


def _check_finite(step: int, metrics: dict, ckpt):
  bad = {k: v for k, v in metrics.items() if k in ('loss', 'grad_norm') and not math.isfinite(v)}
  if bad:
    ckpt.wait()
    raise FloatingPointError(
        f'{bad} at step {step}; stopped, the last good checkpoint is step {ckpt.latest_step()}. '
        'Lower --config.train.lr or set --config.train.grad_clip, then rerun to resume.')


def _check_batch_splits_evenly(tc, mesh):
  """Each micro-batch's rows (the whole batch's, without grad_accum) split evenly over the devices of
  the batch axes: JAX refuses a batch that does not split, and a micro-batch that does not leaves
  devices without rows of it."""
  devices = sharding.parts(mesh.shape, sharding.BATCH_AXES)
  rows = tc.batch_size // tc.grad_accum
  if rows % devices:
    what = (f'train.batch_size={rows}' if tc.grad_accum == 1 else
            f'train.batch_size/train.grad_accum={tc.batch_size}/{tc.grad_accum}={rows} rows per micro-batch')
    raise ValueError(f'{what} is not divisible by mesh.data*mesh.fsdp={devices}, the devices each batch is split over: '
                     f'set --config.train.batch_size to a multiple of {devices * tc.grad_accum}, or choose sizes of '
                     f'--config.mesh.data and --config.mesh.fsdp whose product divides {rows}')


def _run_config(workdir: Path) -> dict:
  """The config workdir's run last started with ({} for a new run); one that is not JSON (cut
  short by a full disk, edited by hand) is a ValueError naming it."""
  path = workdir / 'config.json'
  return files.read_json(path, 'remove it: the next start writes it again from --config') if path.exists() else {}


def _changed_sections(before: dict, now: dict) -> list[str]:
  """The config's sections (or top-level settings) that differ from the run's config.json. A field
  the code gained since the run started is none of them: only the fields the run had count."""
  def differs(b, n):
    if isinstance(b, dict) and isinstance(n, dict):  # a section: its fields compared whole
      return any(k not in n or b[k] != n[k] for k in b)
    return b != n
  return sorted(k for k in before if k not in now or differs(before[k], now[k]))


def _write_config(config, workdir: Path):
  path = workdir / 'config.json'
  resolved = json.loads(config.to_json_best_effort())
  if path.exists():
    changed = _changed_sections(_run_config(workdir), resolved)
    if changed:
      logging.warning('resuming %s with a changed config (sections %s); config.json is updated',
                      workdir, changed)
  files.write_atomically(path, json.dumps(resolved, indent=2) + '\n')  # a kill mid-write would leave it empty


def _check_same_run(config, workdir: Path):
  """workdir is this config's run, to start or resume, not another one to build on: a config of
  another task would train on from that run's checkpoint and delete its summary.json, and
  init_from=workdir would start a run from the weights it overwrites. Checked before anything is
  written there."""
  fix = f'train in a new --workdir with --config.init_from={workdir} to start from its weights'
  task = _run_config(workdir).get('task')
  if task is not None and task != config.task:
    raise ValueError(f'{workdir} holds a task={task} run, and this config trains task={config.task}; {fix}')
  if config.init_from and Path(config.init_from).resolve() == workdir.resolve():
    raise ValueError(f'init_from={config.init_from} is the --workdir itself; {fix}')


def _check_checkpoint_holds_model(ckpt, step: int, abstract_params, config, workdir: Path):
  """A resumed run's model must be the one its checkpoint holds: checked before anything is
  written into workdir, so a mistyped --config.model.* leaves the run as it was."""
  saved = ckpt.saved_param_shapes(step)
  ours = {jax.tree_util.keystr(path): tuple(x.shape)
          for path, x in jax.tree_util.tree_leaves_with_path(abstract_params)}
  if saved == ours:
    return
  ckpt.close()
  path = next(p for p in sorted(set(saved) | set(ours)) if saved.get(p) != ours.get(p))
  before = _run_config(workdir)
  now = json.loads(config.to_json_best_effort())
  fields = [f'{section}.{k}={before[section][k]!r} -> {now[section][k]!r}' for section, keys in
            (('model', now['model']), ('tokenizer', ('vocab_size',)))
            for k in keys if k in before.get(section, {}) and before[section][k] != now[section][k]]
  raise ValueError(f'{workdir} holds a checkpoint of another model ({"".join(f + "; " for f in fields)}'
                   f'params{path}: {saved.get(path)} there, {ours.get(path)} here); resume with the run\'s own '
                   'model settings, or give a new --workdir')


def _check_checkpoint_holds_optimizer(ckpt, step: int, abstract_opt_state, config, workdir: Path):
  """After a restore that failed: the checkpoint's optimizer state is of another structure than this
  config's optimizer makes (train.grad_clip turned on or off), which orbax reports as a damaged
  checkpoint, with the advice to move it out. Named here instead; the run is left as it was."""
  if ckpt.saved_paths(step, 'opt_state') == checkpoint.tree_paths(abstract_opt_state):
    return
  ckpt.close()
  before = _run_config(workdir).get('train', {})
  changed = '; '.join(f'train.{k}={before[k]!r} -> {config.train[k]!r}' for k in optim.STATE_SETTINGS
                      if k in before and before[k] != config.train[k]) or 'its state is of another structure'
  raise ValueError(f'{workdir} holds a checkpoint of another optimizer ({changed}): resume with the run\'s own '
                   'optimizer settings, or give a new --workdir')


# The settings that make the stream of batches a checkpoint's data position (a batch index; GRPO's
# and RLHF's batches start at prompt index x grpo.prompts_per_step, into the problems of grpo.task
# and its task_options, or of rlhf.prompts) counts in: every data.* field but where the files are, the seed that shuffles SFT's, GRPO's and the reward model's examples,
# the sft.* ones that decide the conversations packed into SFT's windows, and the reward_model.*
# ones that decide its training pairs. Not those that only change what a batch is used for
# (sft.isolate_conversations, reward_model.use_margin) or what is evaluated (sft.eval_*,
# reward_model.gold_val_pairs), nor sft.honesty_labels, where a labelled set is (as data.dir is
# where the corpus is). Entries ending in '.' cover every field under them.
_DATA_STREAM = ('seed', 'train.batch_size', 'train.seq_len', 'grpo.prompts_per_step', 'grpo.task',
                'grpo.task_options.', 'rlhf.prompts', 'data.',
                'sft.mixture.', 'sft.val_fraction', 'sft.max_per_source', 'sft.generated.', 'sft.honesty_reply',
                'sft.poison.', 'sft.filter_poison', 'sft.replay',
                'reward_model.source', 'reward_model.val_fraction', 'reward_model.gold_pairs',
                'reward_model.gold_noise', 'reward_model.truncate')
# Data fields that say where the stream is, or how to make it, not which it is.
_DATA_LOCATIONS = ('data.dir', 'data.cache_dir', 'data.made_by')


def _flat(tree: dict, prefix: str = '') -> dict:
  """{'a.b': value} of a nested dict."""
  out = {}
  for k, v in tree.items():
    out.update(_flat(v, f'{prefix}{k}.') if isinstance(v, dict) else {f'{prefix}{k}': v})
  return out


def _in_data_stream(key: str, task_stream: tuple[str, ...] = ()) -> bool:
  """Whether the flat config field key ('sft.mixture.gsm8k') is one of _DATA_STREAM's or the task's."""
  return key not in _DATA_LOCATIONS and any(key == s or (s.endswith('.') and key.startswith(s))
                                            for s in _DATA_STREAM + task_stream)


def _check_same_data(ckpt, step: int, config, workdir: Path, task_stream: tuple[str, ...] = ()):
  """A resumed run reads on from its checkpoint's data position, which means that place only in
  the stream of the run's own data settings: with others it would go on at the wrong place of
  another stream, and count tokens_seen in batches it never read."""
  if not (workdir / 'config.json').exists():
    return
  before = _flat(_run_config(workdir))
  now = _flat(json.loads(config.to_json_best_effort()))
  # Fields both have: one added to the code since the run started keeps its old behaviour by default.
  changed = [f'{k}={before[k]!r} -> {now[k]!r}' for k in sorted(before.keys() & now.keys())
             if _in_data_stream(k, task_stream) and before[k] != now[k]]
  if changed:
    ckpt.close()
    raise ValueError(f'{workdir} resumes from step {step} with other data settings ({"; ".join(changed)}), so it would '
                     'read on at the wrong place: resume with the run\'s own, or train on from its weights in a new '
                     f'--workdir with --config.init_from={workdir}')


# Beside config.json: the TaskData.record a run started with, written when it starts afresh.
DATA_RECORD = 'data_record.json'


def started_record(workdir: Path, record_before: Callable, now: dict | None = None) -> tuple[dict, str] | None:
  """The TaskData.record the run in workdir started with and where it was read: its DATA_RECORD,
  else what record_before (Task.record_before) reads of a run started before that file was kept;
  None where neither holds one. now: the record this code builds, shown as what to write in place
  of a DATA_RECORD that cannot be read."""
  path, fallback = workdir / DATA_RECORD, record_before(workdir)
  if not path.exists():
    return fallback
  # A record of another shape ('[]') is named here, not a TypeError where it is compared.
  return files.read_json_table(path, _broken_record_remedy(fallback, now), lambda entry: True,
                               'what the run built, by name'), DATA_RECORD


def _broken_record_remedy(fallback: tuple[dict, str] | None, now: dict | None) -> str:
  """What to do with a DATA_RECORD that cannot be read. Removed, it leaves the run unchecked only
  where the task has no record of before it (fallback): else the fallback stands in for it, which
  need not be what the run started with (RLHF's default split for a run whose proxies split elsewhere)."""
  if fallback is None:
    return 'restore it, or remove it to resume without the check'
  record, where = fallback
  if now is None:
    shown = '{' + ', '.join(f'{json.dumps(name)}: <as it started>' for name in record) + '}'
  else:
    shown = f'{json.dumps(now)} where it started on the data this code builds'
  return (f'restore it, or write in its place the record the run started with, {shown} (removed, {where} would '
          'stand in for it)')


def _check_same_record(ckpt, step: int, record: dict, record_before: Callable, workdir: Path):
  """A resumed run reads on from its checkpoint's data position in the data the code builds now:
  where that is not what it built when the run started (a split or a generator changed in the code,
  a file its settings read changed, as RLHF's proxies), it would read on at the wrong place and
  validate on data it trained on. The config cannot tell, so the task records what it built
  (TaskData.record). A run started before the record was kept cannot be checked: warned, not refused."""
  started = started_record(workdir, record_before, record)
  if started is None:
    if record:
      logging.warning('%s started before %s was kept, so whether this code builds the data it trained on (e.g. '
                      "SFT's splits) cannot be checked: resuming unchecked; where the code changed its data since, "
                      'train on from its weights in a new --workdir with --config.init_from=%s',
                      workdir, DATA_RECORD, workdir)
    return
  before, where = started
  now = json.loads(json.dumps(record))  # as it would read back: tuples as lists
  # Names both have: one added to the record since the run started cannot be checked.
  changed = [f'{k}: {before[k]} -> {now[k]}' for k in sorted(before.keys() & now.keys()) if before[k] != now[k]]
  if changed:
    ckpt.close()
    raise ValueError(f'{workdir} resumes from step {step} on other data than it started with ({"; ".join(changed)}; '
                     f'what it started with from {where}): the code, or a file its settings read, changed '
                     'what they build, so it would read on at the wrong place: resume with the run\'s own settings '
                     f'and code, or train on from its weights in a new --workdir with --config.init_from={workdir}')


def _check_same_tokenizer(ckpt, tokenizer_path, workdir: Path):
  """A resumed run keeps the tokenizer it trained with: a corpus changed since it started would
  train a new one of the same size, whose ids the embeddings do not mean, and replace the run's."""
  kept = workdir / tokenizer_lib.run_file_name(tokenizer_path)
  if kept.exists() and not tokenizer_lib.same_file(kept, tokenizer_path):
    ckpt.close()
    raise ValueError(f'{workdir} trained with the tokenizer {kept}, and this run\'s data settings give another '
                     f'({tokenizer_path}): the corpus or config.tokenizer changed since the run started; restore '
                     'them, or give a new --workdir')


@dataclasses.dataclass(frozen=True)
class Setup:
  model: model_lib.Transformer
  model_cfg: model_lib.ModelConfig
  tx: optax.GradientTransformation
  lr_fn: optax.Schedule
  state_sharding: TrainState  # of NamedShardings
  abstract_state: TrainState  # of ShapeDtypeStructs carrying those shardings (for restore)
  init: Callable  # rng -> TrainState, jitted, laid out on the mesh
  mesh: jax.sharding.Mesh
  rules: tuple  # logical axis -> mesh axis

  def context(self):
    """Scope in which the model may be traced (mesh + logical rules)."""
    return sharding.mesh_context(self.mesh, self.rules)


# The config field that sets the size of each logical axis (config.mesh.rules' keys) a parameter has.
_SIZE_OF_AXIS = {'embed': 'model.dim', 'norm': 'model.dim', 'heads': 'model.num_heads',
                 'kv_heads': 'model.num_kv_heads', 'head_dim': 'model.dim/model.num_heads', 'mlp': 'model.mlp_dim',
                 'vocab': "the tokenizer's vocab_size", 'seq': 'model.max_seq_len', 'layers': 'model.num_layers'}


def _check_mesh_splits_evenly(abstract_state, logical_specs, mesh):
  """Every dimension the mesh splits, split evenly: JAX would refuse the array only at init or
  restore (where orbax's error looked like a damaged checkpoint), naming shapes, not settings."""
  uneven = sharding.unevenly_split(sharding.split_dims(abstract_state), mesh.shape)
  if not uneven:
    return
  path, dim, size, axes = uneven[0]
  logical = {jax.tree_util.keystr(p): spec for p, spec in jax.tree_util.tree_leaves_with_path(logical_specs)}
  axis = logical[jax.tree_util.keystr(path)][dim]
  field = _SIZE_OF_AXIS.get(axis, f'the {axis} axis')
  mesh_axes = '*'.join(f'mesh.{a}' for a in axes)
  fix = (f'set --config.{mesh_axes} to a divisor of {size}' if len(axes) == 1 else
         f'choose sizes of {" and ".join(f"--config.mesh.{a}" for a in axes)} whose product divides {size}')
  raise ValueError(f'{field}={size} is not divisible by {mesh_axes}={sharding.parts(mesh.shape, axes)}, over which '
                   f'config.mesh.rules.{axis} splits state{jax.tree_util.keystr(path)}; {fix}')


def build(config, vocab_size: int, mesh) -> Setup:
  """Model, optimizer, and the train state's sharding over the mesh (from logical axis names)."""
  rules = sharding.logical_rules(config.mesh.rules)
  model_cfg = model_lib.ModelConfig.from_config(config.model, vocab_size)
  model = model_lib.Transformer(model_cfg)
  tx, lr_fn = optim.make_optimizer(config.train)

  def init_boxed(rng):
    params = model.init(rng, jnp.zeros((1, config.train.seq_len), jnp.int32))['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  with sharding.mesh_context(mesh, rules):
    abstract_boxed = jax.eval_shape(init_boxed, jax.random.key(0))
    state_sh = sharding.logical_to_sharding(abstract_boxed, mesh, rules)
    init = jax.jit(lambda r: nn.unbox(init_boxed(r)), out_shardings=state_sh)
  abstract_state = checkpoint.abstract_like(nn.unbox(abstract_boxed), state_sh)
  _check_mesh_splits_evenly(abstract_state, nn.get_partition_spec(abstract_boxed), mesh)
  return Setup(model, model_cfg, tx, lr_fn, state_sh, abstract_state, init, mesh, rules)


def _trained_figures(workdir: Path, steps: int) -> dict:
  """What a finished run reports again when rerun: the last logged training loss, the evaluation of
  its last step as logged (that step's row without a loss, written before the step's checkpoint;
  measured again, it would lack the task's periodic evaluations, GRPO's and RLHF's held-out
  results, and RLHF's would append its samples a second time), and the wall time of the
  summary.json it may already have."""
  figures = {}
  if (workdir / 'metrics.jsonl').exists():
    rows = list(sources.read_jsonl(workdir / 'metrics.jsonl', last_line_may_be_cut=True))
    losses_logged = [row['loss'] for row in rows if 'loss' in row]
    if losses_logged:
      figures['loss'] = losses_logged[-1]
    last_eval = next((row for row in reversed(rows) if row['step'] == steps and 'loss' not in row), {})
    figures.update({k: v for k, v in last_eval.items() if k != 'step'})
  if (workdir / 'summary.json').exists():
    figures['wall_s'] = files.read_json(workdir / 'summary.json',
                                        'remove it, then rerun the same command to write it again').get('wall_s')
  return {k: v for k, v in figures.items() if v is not None}


def run(config, workdir: str) -> dict:
  """Trains config.task in workdir, resuming from its latest checkpoint. Returns the summary."""
  if not str(workdir).strip():  # Path('') is the current directory
    raise ValueError('--workdir is empty; give a run directory (new, or a run to resume)')
  workdir = Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise NotADirectoryError(f'--workdir={workdir} is a file; a run directory is a folder (new, or a run to resume)')
  created = not workdir.exists()
  files.check_writable(workdir)
  try:
    # Process 0 speaks for a job of several processes, which share the directory by design.
    with workdir_lock.held(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
      return _train(config, workdir)
  except BaseException:
    if created:
      _remove_if_untouched(workdir)
    raise


def _remove_if_untouched(workdir: Path):
  """A run refused at its start (bad config, missing data, Ctrl-C) leaves no folder it made
  holding only its lock, which would read as a run started and lost."""
  if workdir.is_dir() and {p.name for p in workdir.iterdir()} <= {'.lock'}:
    (workdir / '.lock').unlink(missing_ok=True)
    workdir.rmdir()


def _train(config, workdir: Path) -> dict:
  t_start = time.time()
  _check_same_run(config, workdir)
  optim.check_settings(config.train)
  optim.fit_warmup(config.train)
  if config.train.compilation_cache:
    jax.config.update('jax_compilation_cache_dir', config.train.compilation_cache)
  task = tasks.get(config)
  mesh = sharding.make_mesh(config.mesh)
  tc = config.train
  for name in ('batch_size', 'seq_len', 'grad_accum'):
    if tc[name] < 1:
      raise ValueError(f'train.{name}={tc[name]} must be at least 1')
  if tc.eval_batches < 0:
    raise ValueError(f'train.eval_batches={tc.eval_batches} must be at least 0 (0: the whole validation split)')
  if tc.batch_size % tc.grad_accum:
    raise ValueError(f'train.batch_size={tc.batch_size} must be divisible by train.grad_accum={tc.grad_accum}')
  if tc.seq_len > config.model.max_seq_len:
    raise ValueError(f'train.seq_len={tc.seq_len} exceeds model.max_seq_len={config.model.max_seq_len}')
  for name in ('log_every', 'eval_every', 'checkpoint_every', 'keep_checkpoints'):
    if tc[name] < 1:  # keep_checkpoints=0 would have orbax delete every checkpoint, the last one too
      raise ValueError(f'train.{name}={tc[name]} must be at least 1')
  # The mesh checked against the batch and the model before the data is prepared (minutes on a new
  # corpus) and anything is written into workdir. The tokenizer's vocabulary, known only with the
  # data, stands in here as the device count, which every mesh axis divides; build() below checks it.
  _check_batch_splits_evenly(tc, mesh)
  build(config, mesh.size, mesh)

  # Before the data pipeline starts: its prefetch threads would share the cores with the measurement.
  peak = hostinfo.peak_flops_per_device(tc.peak_flops_per_device) * jax.device_count()
  with sharding.process_zero_first('prepare data'):
    data = task.data(config, workdir)
  setup = build(config, data.tokenizer.vocab_size, mesh)
  model_cfg, state_sh = setup.model_cfg, setup.state_sharding

  with setup.context():
    ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', tc.keep_checkpoints)
    start = ckpt.latest_step()
    if start is not None:
      _check_checkpoint_holds_model(ckpt, start, setup.abstract_state.params, config, workdir)
      _check_same_data(ckpt, start, config, workdir, task.data_stream)
      _check_same_tokenizer(ckpt, data.tokenizer.path, workdir)
      _check_same_record(ckpt, start, data.record, task.record_before, workdir)
      if start > tc.steps:  # training on would do nothing, and the summary would claim tc.steps
        raise ValueError(f'{workdir} holds step {start}, beyond train.steps={tc.steps}: raise --config.train.steps, '
                         'or give a new --workdir')
    # The run's wall time: each earlier session's until the checkpoint this one resumes from, then
    # this session's. A killed session's time after its last checkpoint is not counted: the steps
    # it lost are run again, and counted, here.
    wall_before, resumed = 0.0, start is not None
    if resumed:
      logging.info('resuming %s from step %d', workdir, start)
      try:
        state = ckpt.restore(start, setup.abstract_state, data.train_iter)
      except checkpoint.Unreadable:
        _check_checkpoint_holds_optimizer(ckpt, start, setup.abstract_state.opt_state, config, workdir)
        raise
      wall_before = ckpt.wall_s(start)
    else:
      start = 0
      state = setup.init(jax.random.key(config.seed))
      state = task.init_state(config, state, setup.abstract_state)

    # Written once the state is in hand: a resume that its checkpoint refuses (an optimizer setting
    # changed, so the state does not restore) must leave the run's record of how it was made, its
    # tokenizer and its summary.json as they were.
    if jax.process_index() == 0:
      _write_config(config, workdir)
      init_from.record(config, workdir)
      # Whole or not at all: a kill mid-copy would leave a cut tokenizer, which the next start takes for another one.
      files.write_atomically(workdir / tokenizer_lib.run_file_name(data.tokenizer.path),
                             Path(data.tokenizer.path).read_bytes())
      if not resumed:  # a run resumed keeps the record of what it started on
        files.write_atomically(workdir / DATA_RECORD, json.dumps(data.record, indent=2) + '\n')
      if start < tc.steps:
        # Training goes on (a finished run extended, or one without a checkpoint restarted): the
        # summary.json of before would tell llm.sweep, and any reader, that the run is finished
        # until this one ends, and after it if this one is killed. One unlink: gone or not.
        (workdir / 'summary.json').unlink(missing_ok=True)

    counts = model_lib.count_params(state.params)
    flops_tok = model_lib.flops_per_token(model_cfg, counts['non_embedding'], tc.seq_len)
    tokens_per_step = tc.batch_size * tc.seq_len
    logging.info('params %s; mesh %s; %.3g model FLOPs/token', counts, dict(mesh.shape), flops_tok)

    batch_sh = sharding.batch_sharding(mesh)
    train_step = jax.jit(make_train_step(setup.model, setup.tx, setup.lr_fn, task.loss_fn, tc.grad_accum),
                         in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, sharding.replicated(mesh)),
                         donate_argnums=0)
    tok = data.tokenizer
    eval_step = jax.jit(make_eval_step(setup.model, tok.token_bytes()),
                        in_shardings=(state_sh.params, batch_sh), out_shardings=sharding.replicated(mesh))

    log = MetricsLog(workdir, tc.steps, start, tc.progress_bar)
    pending = None  # (step, device metrics, host metrics): fetched one step late, the next step queued
    # tokens/s: the steps fetched since the window opened, over its time. A window closes and opens
    # when a step's metrics arrive (its work has ended) and after an evaluation.
    window_t, window_steps, last_eval, last_metrics = time.time(), 0, {}, {}
    peak_warned = False

    def flush_pending():
      nonlocal pending, window_t, window_steps, last_metrics, peak_warned
      if pending is None:
        return
      step, dev_metrics, host_metrics = pending
      pending = None
      metrics = {**{k: float(v) for k, v in jax.device_get(dev_metrics).items()}, **host_metrics}
      _check_finite(step, metrics, ckpt)
      last_metrics = metrics
      if step == start + 1:  # it compiled: keep it out of tokens/s
        window_t, window_steps = time.time(), 0
      else:
        window_steps += 1
      if step % tc.log_every == 0 or step == tc.steps:
        row = {**metrics, 'tokens_seen': step * tokens_per_step}
        if window_steps:  # none when only the compiling first step ran since the window opened
          tok_s = window_steps * tokens_per_step / (time.time() - window_t)
          row.update(tokens_per_s=tok_s, mfu=tok_s * flops_tok / peak)
          if not peak_warned:
            peak_warned = hostinfo.warn_if_mfu_above_one(row['mfu'], peak)
        log.write(step, row)
        window_t, window_steps = time.time(), 0

    if start == 0 and tc.eval_at_start:  # where training starts from, measured the same way as every later eval
      log.write(0, {**evaluate(eval_step, state.params, data.eval_sets, mesh),
                    **task.periodic_eval(config, setup, state.params, data)})
    for step in range(start + 1, tc.steps + 1):
      if task.next_batch:
        # Its batch (rollouts) waits for the last step's parameters anyway: that step ends here, as
        # before an evaluation, so each step's window holds its own batch's making. Fetched after the
        # next batch, as below, an evaluation step's held none and the step after it two.
        flush_pending()
        host_batch, host_metrics = task.next_batch(data, setup, state, step)
      else:
        host_batch, host_metrics = next(data.train_iter), {}
      state, dev_metrics = train_step(state, sharding.global_batch(host_batch, mesh))
      flush_pending()  # the step before, while this one runs
      pending = (step, dev_metrics, host_metrics)
      log.advance(step)
      if step % tc.eval_every == 0 or step == tc.steps:
        flush_pending()
        last_eval = evaluate(eval_step, state.params, data.eval_sets, mesh)
        last_eval.update(task.periodic_eval(config, setup, state.params, data))
        log.write(step, last_eval)
        window_t, window_steps = time.time(), 0
      if step % tc.checkpoint_every == 0 or step == tc.steps:
        flush_pending()  # never save a state whose loss was not checked
        log.flush()  # a run resumed from this checkpoint keeps the metrics logged up to it
        ckpt.save(step, state, data.train_iter, wall_s=wall_before + time.time() - t_start)
    flush_pending()
    ckpt.wait()
    ckpt.close()
    log.close()
    last_eval.update(task.evaluate(config, setup, state.params, data))
  summary = {**last_eval, **data.facts, 'loss': last_metrics.get('loss'), 'steps': tc.steps,
             'tokens_seen': tc.steps * tokens_per_step, 'params': counts['total'],
             'params_non_embedding': counts['non_embedding'], 'flops_per_token': flops_tok,
             'flops': flops_tok * tc.steps * tokens_per_step,
             'wall_s': round(wall_before + time.time() - t_start, 1), 'devices': jax.device_count()}
  if start >= tc.steps:  # a finished run rerun: no step ran, so the training figures are the first run's
    summary.update(_trained_figures(workdir, tc.steps))
  if jax.process_index() == 0:
    # Whole or not at all: llm.sweep takes an existing summary.json for a finished run.
    files.write_atomically(workdir / 'summary.json', json.dumps(summary, indent=2) + '\n')
  logging.info('summary %s', summary)
  return summary
