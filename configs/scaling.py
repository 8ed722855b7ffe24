"""Scaling-law points: a model of N parameters trained on D tokens, everything else derived.

One point:
    python -m llm.main --config=configs/scaling.py:n=1e6,d=20e6 --workdir=runs/scaling/n1M_d20M
    python -m llm.main --config=configs/scaling.py:size=m,c=1e13 --workdir=...   (D = C / FLOPs per token)
A sweep (the named grids are at the bottom, `sweep`):
    python -m llm.sweep --sweep=configs/scaling.py:isoflop_cpu --root=runs/scaling

N counts non-embedding parameters (Kaplan et al.: with them, small models follow the same law
as large ones); C counts model FLOPs as llm.model.flops_per_token does (6N, plus the tied
lm-head and causal attention), so a point's C is the compute it really spends.

Rules, from N and D (stated once here, tested in tests/test_sweep.py):
- shape: modern style (RoPE, RMSNorm, SwiGLU, QK-norm), 32-wide heads, no GQA. Depth from a
  width/depth aspect ratio of 64 (Kaplan et al. find the loss flat over a wide range of it),
  width the nearest multiple of the head width, and the MLP width set so N comes out as asked;
- batch: 4 x 256 tokens for every point, so steps = D / 1024 (>= 200 for the smallest D). Two
  earlier CPU grids taught this: with 16 x 256 the small budgets got so few steps that the
  smallest model won a whole slice, and a batch chosen per point from D (4 to 16 sequences) made
  the step count jump between neighbours of a slice, which no law in N and D alone describes
  (residuals up to 6%). On 2 cores a batch of 4 costs 5-15% of throughput against 16;
- learning rate: 3e-3 at width 256 (pretrain_small's tuned value), scaled as width^-1/2 and
  capped at 1e-2; warmup 5% of the steps (>= 10); the cosine decays to 10% over exactly the
  run's steps, since a cosine longer than the run overestimates the loss at D (Chinchilla).
"""
import functools
import math

import ml_collections

from llm import model as model_lib
from llm.config import base_config

ASPECT = 64  # width / depth
HEAD_DIM = 32
SEQ_LEN = 256
BATCH = 4  # sequences per step, for every point
EVAL_TOKENS = 262_144  # every point's final loss is measured on the same validation tokens
VOCAB = 4096  # the Gutenberg tokenizer pretrain_small trains (shared cache)
SIZES = {  # preset name -> non-embedding parameters
    'xxxs': 50e3, 'xxs': 100e3, 'xs': 200e3, 's': 400e3, 'm': 800e3, 'l': 1.6e6, 'xl': 3.2e6, 'xxl': 6.4e6,
}


def layer_params(dim: int, mlp_dim: int) -> int:
  """Parameters of one block: q, k, v, o (no GQA), SwiGLU's three matrices, two norms, QK-norm."""
  return 4 * dim * dim + 3 * dim * mlp_dim + 2 * dim + 2 * HEAD_DIM


def non_embedding_params(num_layers: int, dim: int, mlp_dim: int) -> int:
  return num_layers * layer_params(dim, mlp_dim) + dim  # + the final norm


def total_params(num_layers: int, dim: int, mlp_dim: int) -> int:
  return non_embedding_params(num_layers, dim, mlp_dim) + VOCAB * dim  # + the token table (tied head; RoPE)


def shape_for(n: float) -> dict:
  """num_layers, dim, mlp_dim whose non-embedding parameter count is closest to n."""
  if n < 2e4:
    raise ValueError(f'scaling point n={n:g}: too small for the shape rules; use n >= 2e4')
  # 12 d^2 per layer (4 d^2 attention + 3 d (8d/3) SwiGLU) and d = ASPECT * L.
  num_layers = max(1, round((n / (12 * ASPECT**2)) ** (1 / 3)))
  dim = max(HEAD_DIM, HEAD_DIM * round(math.sqrt(n / (12 * num_layers)) / HEAD_DIM))
  per_layer = (n - dim) / num_layers
  mlp_dim = max(8, 8 * round((per_layer - 4 * dim * dim - 2 * dim - 2 * HEAD_DIM) / (3 * dim) / 8))
  return dict(num_layers=num_layers, dim=dim, mlp_dim=mlp_dim)


@functools.cache
def _base_model_fields() -> dict:
  # Built once: llm.scaling's table of the study's models asks for the FLOPs of ~8,000 shapes,
  # and a whole base_config() per shape took 7 s of every `llm.scaling fit`.
  return base_config().model.to_dict()


def _model_fields(shape: dict) -> dict:
  """config.model's fields of a point of this shape: modern style, HEAD_DIM-wide heads, no GQA."""
  heads = shape['dim'] // HEAD_DIM
  return dict(_base_model_fields(), position='rope', norm='rmsnorm', mlp='swiglu', qk_norm=True,
              num_layers=shape['num_layers'], dim=shape['dim'], mlp_dim=shape['mlp_dim'], num_heads=heads,
              num_kv_heads=heads, max_seq_len=SEQ_LEN)


def model_config(shape: dict) -> ml_collections.ConfigDict:
  """config.model of a point of this shape."""
  return ml_collections.ConfigDict(_model_fields(shape))


def flops_per_token(shape: dict) -> float:
  """Model FLOPs per token of a point of this shape, counted as training counts them."""
  cfg = model_lib.ModelConfig.from_config(_model_fields(shape), VOCAB)
  return model_lib.flops_per_token(cfg, non_embedding_params(**shape), SEQ_LEN)


def parse_point(arg: str) -> dict:
  """'n=1e6,d=2e7' | 'size=m,d=2e7' | 'n=1e6,c=1e13' -> {'n': ..., 'd': ..., 'c': ...}; c is None for a
  point given by d."""
  fields = {}
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if not sep or key not in ('n', 'size', 'd', 'c'):
      raise ValueError(f'scaling point {arg!r}: expected n=PARAMS or size=NAME, and d=TOKENS or '
                       f'c=FLOPS, e.g. configs/scaling.py:n=1e6,d=2e7')
    if key in fields:  # the last would win unseen
      raise ValueError(f'scaling point {arg!r}: {key} given twice; give it once')
    fields[key] = value
  if 'size' in fields:
    if 'n' in fields:
      raise ValueError(f'scaling point {arg!r}: give n or size, not both')
    if fields['size'] not in SIZES:
      raise ValueError(f'scaling point {arg!r}: unknown size {fields["size"]!r}; one of {", ".join(SIZES)}')
    fields['n'] = SIZES[fields.pop('size')]
  if 'n' not in fields or ('d' in fields) == ('c' in fields):
    raise ValueError(f'scaling point {arg!r}: give n (or size) and exactly one of d and c, '
                     f'e.g. configs/scaling.py:n=1e6,d=2e7')
  numbers = {key: _positive_number(arg, key, value) for key, value in fields.items()}
  shape = shape_for(numbers['n'])
  if 'd' in numbers:  # no budget: a grid of such points is not a set of IsoFLOP slices
    return dict(n=numbers['n'], d=numbers['d'], c=None, shape=shape)
  return dict(n=numbers['n'], d=numbers['c'] / flops_per_token(shape), c=numbers['c'], shape=shape)


def _positive_number(arg: str, key: str, value) -> float:
  """A point's n, d or c: a finite number > 0 (d=0 or c<0 would train one step, d=nan fail far from here)."""
  try:
    number = float(value)
  except ValueError:
    number = math.nan
  if not (math.isfinite(number) and number > 0):
    raise ValueError(f'scaling point {arg!r}: {key}={value} is not a positive number, '
                     'e.g. configs/scaling.py:n=1e6,d=2e7')
  return number


def point_name(arg: str) -> str:
  """A workdir name for a point: 'size=m,c=1e13' -> 'm_c1e13', 'n=4e5,d=2e7' -> 'n4e5_d2e7'."""
  fields = dict(item.split('=') for item in arg.split(','))
  return '_'.join(v if k == 'size' else k + format(float(v), '.3g').replace('e+0', 'e').replace('e+', 'e')
                  for k, v in fields.items())


def get_config(arg=None):
  point = parse_point(arg)
  shape = point['shape']
  c = base_config()
  c.model = model_config(shape)
  c.tokenizer.vocab_size = VOCAB

  tokens_per_step = BATCH * SEQ_LEN
  steps = max(1, round(point['d'] / tokens_per_step))
  c.train.batch_size = BATCH
  c.train.seq_len = SEQ_LEN
  c.train.steps = steps
  c.train.lr = min(1e-2, 3e-3 * math.sqrt(256 / shape['dim']))
  c.train.warmup_steps = max(10, round(0.05 * steps))
  c.train.min_lr_ratio = 0.1
  c.train.eval_every = steps  # the final loss is what the law fits
  c.train.eval_batches = EVAL_TOKENS // tokens_per_step
  c.train.eval_at_start = False  # the law needs the final loss only
  c.train.checkpoint_every = max(50, steps // 10)
  c.train.keep_checkpoints = 1
  c.train.log_every = 25

  c.scaling = ml_collections.ConfigDict(dict(
      n=point['n'],  # requested non-embedding parameters
      d=steps * tokens_per_step,  # tokens trained on
      c=point['c'],  # a c= point's compute budget, model FLOPs (groups IsoFLOP slices); None for d=
      arg=arg,  # the point as given
  ))
  return c


def sweep(grid: str) -> list[str]:
  """The points of a named grid, each an argument of get_config."""
  if grid == 'isoflop_cpu':  # the committed CPU study: 3 IsoFLOP slices of 5 sizes around each optimum
    names = list(SIZES)
    return [f'size={s},c={c:g}' for i, c in enumerate((2e12, 6e12, 2e13)) for s in names[i:i + 5]]
  if grid == 'holdout_cpu':  # a larger model than any above, predicted by their fit
    return ['size=xxl,c=6e13']
  if grid == 'isoflop_cpu_below':  # one size under each slice's smallest, so every minimum can be bracketed
    return ['n=25e3,c=2e12', 'size=xxxs,c=6e12', 'size=xxs,c=2e13']
  if grid == 'chinchilla_tpu':  # IsoFLOP slices at accelerator scale (one point per VM)
    return [f'n={n:g},c={c:g}' for c in (1e18, 3e18, 1e19) for n in (20e6, 40e6, 80e6, 160e6, 320e6)]
  raise ValueError(f'unknown sweep grid {grid!r}; one of isoflop_cpu, holdout_cpu, isoflop_cpu_below, chinchilla_tpu')
