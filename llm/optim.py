"""AdamW with weight decay on matrices only, learning-rate schedules, gradient clipping."""
from absl import logging
import jax
import optax

# Weight matrices and embedding tables are decayed; norm scales ('scale'), biases ('bias',
# 'query_bias', ...) and the key-smear gates ('key_smear', one logit per key head) are not. Matched
# by name because scanned layers give every parameter an extra leading axis, so ndim cannot tell a
# stacked norm scale from a matrix.
_UNDECAYED_NAMES = ('scale', 'bias', 'smear')
# The train.* settings that decide the structure of the optimizer's state (clipping on or off adds
# or drops a part of it), which a checkpoint's must have to restore.
STATE_SETTINGS = ('grad_clip',)


def check_settings(train_cfg):
  """The optimizer settings a run would train with, refused in one line when out of range: a
  negative lr trains uphill, min_lr_ratio 5 ends at five times the peak, b2 1.5 diverges, a wsd
  decay_fraction of 0 would still decay, in one step."""
  bounds = (('lr', train_cfg.lr >= 0, 'must be at least 0'),
            ('min_lr_ratio', 0 <= train_cfg.min_lr_ratio <= 1, 'must be in [0, 1]'),
            ('b1', 0 <= train_cfg.b1 < 1, 'must be in [0, 1)'), ('b2', 0 <= train_cfg.b2 < 1, 'must be in [0, 1)'),
            ('eps', train_cfg.eps > 0, 'must be positive'),
            ('weight_decay', train_cfg.weight_decay >= 0, 'must be at least 0'),
            ('grad_clip', train_cfg.grad_clip >= 0, 'must be at least 0 (0: off)'),
            ('decay_fraction', train_cfg.schedule != 'wsd' or 0 < train_cfg.decay_fraction <= 1,
             "must be in (0, 1] with schedule='wsd' (the share of train.steps spent in the final decay)"))
  for name, ok, rule in bounds:
    if not ok:
      raise ValueError(f'train.{name}={train_cfg[name]} {rule}')
  if train_cfg.steps < 1:  # before fit_warmup's message about a negative warmup
    raise ValueError(f'train.steps={train_cfg.steps}: a run needs at least one optimizer step')


def fit_warmup(train_cfg):
  """--config.train.steps=N is how a run's length is set, so a warmup the run cannot hold (a
  shipped config's, on a short trial run) is cut to a tenth of the run, in place, with a log line.
  Evaluation and checkpoint cadences need no fitting: the last step always does both."""
  if train_cfg.warmup_steps >= train_cfg.steps:
    fitted = train_cfg.steps // 10
    logging.warning('train.steps=%d is no longer than train.warmup_steps=%d: warmup fitted to %d steps (a tenth '
                    'of the run); the last step evaluates and saves a checkpoint', train_cfg.steps,
                    train_cfg.warmup_steps, fitted)
    train_cfg.warmup_steps = fitted


def schedule(train_cfg) -> optax.Schedule:
  """The learning rate as a function of the optimizer's step count, which starts at 0: training step
  s (1 to train.steps, as metrics.jsonl counts them) runs at schedule(s - 1), which its 'lr' column
  shows. So with warmup, step 1 runs at lr 0 (the warmup starts from 0), and the last step runs at
  one decay increment above the final lr (train.lr x min_lr_ratio), which no step trains at."""
  peak, steps, warmup = train_cfg.lr, train_cfg.steps, train_cfg.warmup_steps
  if steps < 1:
    raise ValueError(f'train.steps={steps}: a run needs at least one optimizer step')
  if warmup >= steps:
    raise ValueError(f'train.warmup_steps={warmup} must be below train.steps={steps}')
  final = peak * train_cfg.min_lr_ratio
  if train_cfg.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, steps, end_value=final)
  if train_cfg.schedule == 'wsd':
    decay = max(1, int(steps * train_cfg.decay_fraction))
    stable = steps - warmup - decay
    if stable < 0:
      raise ValueError(f'train.decay_fraction={train_cfg.decay_fraction} leaves no room for '
                       f'{warmup} warmup steps in {steps}')
    return optax.join_schedules([
        optax.linear_schedule(0.0, peak, warmup),
        optax.constant_schedule(peak),
        optax.linear_schedule(peak, final, decay),
    ], boundaries=[warmup, warmup + stable])
  raise ValueError(f"train.schedule={train_cfg.schedule!r}; choose 'cosine' or 'wsd'")


def decay_mask(params):
  def is_decayed(path, _):
    return not any(str(getattr(k, 'key', '')).rsplit('_', 1)[-1] in _UNDECAYED_NAMES for k in path)
  return jax.tree_util.tree_map_with_path(is_decayed, params)


def make_optimizer(train_cfg) -> tuple[optax.GradientTransformation, optax.Schedule]:
  lr = schedule(train_cfg)
  parts = [optax.clip_by_global_norm(train_cfg.grad_clip)] if train_cfg.grad_clip > 0 else []
  parts.append(optax.adamw(lr, b1=train_cfg.b1, b2=train_cfg.b2, eps=train_cfg.eps,
                           weight_decay=train_cfg.weight_decay, mask=decay_mask))
  return optax.chain(*parts), lr
