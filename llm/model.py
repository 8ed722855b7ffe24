"""Decoder-only Transformer (Flax Linen), GPT-2 style or modern style, chosen by config.

Shape suffixes: B batch, T sequence, D model width, H query heads, K key/value heads,
Dh head width, F MLP width, V vocabulary, L layers. Every parameter carries logical axis
names (`embed`, `mlp`, `heads`, `kv_heads`, `head_dim`, `vocab`, `layers`); `llm/sharding.py`
maps them onto the mesh with the rules in the config.
"""
import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm import attention as attention_lib
from llm.kernels.cpu_matmul import matmul


HEADS = ('lm', 'scalar')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  dim: int
  mlp_dim: int
  max_seq_len: int
  position: str  # 'learned' (GPT-2) or 'rope'
  norm: str  # 'layernorm' (GPT-2, no bias) or 'rmsnorm'
  mlp: str  # 'gelu' (GPT-2) or 'swiglu'
  qk_norm: bool
  tied_embeddings: bool
  rope_theta: float
  dtype: str  # compute dtype; parameters always stay float32
  remat: str  # 'none', 'full' or 'dots' (save matmul outputs, recompute the rest)
  scan_layers: bool
  init_std: float
  attention: str = 'auto'  # causal attention implementation (llm/attention): an execution choice, not a weight
  bias: bool = False  # biases in the attention and MLP projections and in LayerNorm (GPT-2 checkpoints)
  norm_eps: float = 1e-6  # added to the variance in every norm (GPT-2: 1e-5; Llama: its rms_norm_eps)
  head: str = 'lm'  # 'lm': next-token logits_BxTxV; 'scalar': a reward model's score per position, values_BxT
  smear_keys: bool = False  # each key mixed with the previous position's (smear_keys below)

  @property
  def head_dim(self) -> int:
    return self.dim // self.num_heads

  @classmethod
  def from_config(cls, model_cfg, vocab_size: int) -> 'ModelConfig':
    fields = {f.name for f in dataclasses.fields(cls)} - {'vocab_size'}
    # Fields with a default may be missing from an older run's config.json.
    kwargs = {k: model_cfg[k] for k in fields if k in model_cfg}
    cfg = cls(vocab_size=vocab_size, **kwargs)
    cfg.validate()
    return cfg

  def validate(self):
    # Checked first: the divisibility checks below divide by some of them.
    for name in ('num_layers', 'num_heads', 'num_kv_heads', 'dim', 'mlp_dim', 'max_seq_len'):
      if getattr(self, name) < 1:
        raise ValueError(f'model.{name}={getattr(self, name)} must be at least 1')
    if self.dim % self.num_heads:
      raise ValueError(f'model.dim={self.dim} must be divisible by model.num_heads={self.num_heads}')
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f'model.num_heads={self.num_heads} must be a multiple of '
                       f'model.num_kv_heads={self.num_kv_heads}')
    if self.position == 'rope' and self.head_dim % 2:
      raise ValueError(f'rope needs an even head width, got dim/heads={self.head_dim}')
    for name, allowed in (('position', ('learned', 'rope')), ('norm', ('layernorm', 'rmsnorm')),
                          ('mlp', ('gelu', 'swiglu')), ('remat', ('none', 'full', 'dots')),
                          ('dtype', ('float32', 'bfloat16')), ('attention', attention_lib.IMPLEMENTATIONS),
                          ('head', HEADS)):
      if getattr(self, name) not in allowed:
        raise ValueError(f'model.{name}={getattr(self, name)!r}; choose one of {allowed}')


def _dense_init(std):
  return nn.initializers.normal(stddev=std)


def _weight(module, name, shape, axes, std, dtype):
  """A float32 'kernel'-style matrix with logical axis names, cast to the compute dtype."""
  init = nn.with_logical_partitioning(_dense_init(std), axes)
  return module.param(name, init, shape).astype(dtype)


def _dense(module, x, name, shape, axes, cfg, std=None, contract: int = 1):
  """x projected by the weight `name` (see project), plus `name`_bias when cfg.bias."""
  dtype = jnp.dtype(cfg.dtype)
  y = project(x, _weight(module, name, shape, axes, cfg.init_std if std is None else std, dtype), contract)
  if not cfg.bias:
    return y
  init = nn.with_logical_partitioning(nn.initializers.zeros, axes[contract:])
  return y + module.param(f'{name}_bias', init, shape[contract:]).astype(dtype)


def project(x, w, contract: int = 1):
  """Contracts the last `contract` dims of x with the first ones of w, as one 2-D matmul.

  (rows, in) @ (in, out): flattening the batch dims first makes the weight gradient a plain
  rows-contracting dot; left 3-D, XLA on CPU copies the activation gradients into a transposed
  layout first, which cost a third of the train step.
  """
  lead, inner = x.shape[:x.ndim - contract], x.shape[x.ndim - contract:]
  k = math.prod(inner)
  y = matmul(x.reshape(-1, k), w.reshape(k, -1))
  return y.reshape(*lead, *w.shape[contract:])


class Norm(nn.Module):
  kind: str
  dtype: jnp.dtype
  eps: float = 1e-6
  bias: bool = False  # LayerNorm only: RMSNorm has no bias

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.with_logical_partitioning(nn.initializers.ones, ('norm',)),
                       (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    if self.kind == 'layernorm':
      x32 = x32 - x32.mean(-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps) * scale
    if self.bias and self.kind == 'layernorm':
      y = y + self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, ('norm',)), (x.shape[-1],))
    return y.astype(self.dtype)


def _norm(cfg: ModelConfig, name: str) -> Norm:
  return Norm(cfg.norm, jnp.dtype(cfg.dtype), cfg.norm_eps, cfg.bias, name=name)


def rope(x_BxTxNxDh, positions_BxT, theta: float):
  """Rotary embedding, rotate-half layout, computed in float32."""
  half = x_BxTxNxDh.shape[-1] // 2
  freq_Dh2 = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_BxTx1xDh2 = (positions_BxT[..., None].astype(jnp.float32) * freq_Dh2)[:, :, None, :]
  sin, cos = jnp.sin(angle_BxTx1xDh2), jnp.cos(angle_BxTx1xDh2)
  x1, x2 = jnp.split(x_BxTxNxDh.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxNxDh.dtype)


def smear_keys(k_BxTxKxDh, gate_K, before_BxKxDh, starts_BxT):
  """Olsson et al. 2022 ("In-context Learning and Induction Heads", the smeared-key model): key t
  becomes gate * k_t + (1 - gate) * k_(t-1), one learnt gate per key head. A key that carries its
  previous token lets one layer match "the token after an earlier A" to a query at A, the
  induction head that otherwise needs two layers composing (README, "The SFT recipe across
  bases", measures what it changes). before_BxKxDh: the key before the first of the T (a decode
  cache's last); starts_BxT: where a sequence starts (position 0, also of each packed sequence),
  which smears nothing in."""
  prev_BxTxKxDh = jnp.concatenate([before_BxKxDh[:, None], k_BxTxKxDh[:, :-1]], axis=1)
  prev_BxTxKxDh = jnp.where(starts_BxT[:, :, None, None], 0, prev_BxTxKxDh)
  gate_K = gate_K.astype(k_BxTxKxDh.dtype)[:, None]
  return gate_K * k_BxTxKxDh + (1 - gate_K) * prev_BxTxKxDh


class Attention(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, kv_cache=None, lengths_B=None, segment_ids_BxT=None, advance_B=None):
    """kv_cache: None (training) or this layer's (k_BxKxDhxS, v_BxKxSxDh) of a decode cache,
    holding lengths_B valid positions per row, + with smear_keys the last real position's key
    before smearing (k_prev_BxKxDh, taken at advance_B - 1: the tokens that count per row);
    returns (out_BxTxD, updated kv_cache).
    segment_ids_BxT (training only): packed sequences, each attending only to itself."""
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    H, K, Dh, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.dim
    q_BxTxHxDh = _dense(self, x_BxTxD, 'query', (D, H, Dh), ('embed', 'heads', 'head_dim'), cfg)
    k_BxTxKxDh = _dense(self, x_BxTxD, 'key', (D, K, Dh), ('embed', 'kv_heads', 'head_dim'), cfg)
    v_BxTxKxDh = _dense(self, x_BxTxD, 'value', (D, K, Dh), ('embed', 'kv_heads', 'head_dim'), cfg)
    if cfg.qk_norm:
      q_BxTxHxDh = Norm('rmsnorm', dtype, cfg.norm_eps, name='query_norm')(q_BxTxHxDh)
      k_BxTxKxDh = Norm('rmsnorm', dtype, cfg.norm_eps, name='key_norm')(k_BxTxKxDh)
    if cfg.smear_keys:
      # sigmoid(0): half the previous key at the start; the gate is learnt from there.
      gate_K = jax.nn.sigmoid(self.param('key_smear', nn.with_logical_partitioning(nn.initializers.zeros, ('kv_heads',)),
                                         (K,), jnp.float32))
      raw_BxTxKxDh, starts_BxT = k_BxTxKxDh, positions_BxT == 0  # a reused cache's stale key is no past
      if kv_cache is None:
        k_BxTxKxDh = smear_keys(raw_BxTxKxDh, gate_K, jnp.zeros_like(raw_BxTxKxDh[:, 0]), starts_BxT)
      else:
        kv_cache, k_prev_BxKxDh = kv_cache[:2], kv_cache[2]
        k_BxTxKxDh = smear_keys(raw_BxTxKxDh, gate_K, k_prev_BxKxDh.astype(dtype), starts_BxT)
        last_BxKxDh = jnp.take_along_axis(raw_BxTxKxDh, jnp.maximum(advance_B - 1, 0)[:, None, None, None], 1)[:, 0]
        k_prev_BxKxDh = jnp.where((advance_B > 0)[:, None, None], last_BxKxDh.astype(k_prev_BxKxDh.dtype),
                                  k_prev_BxKxDh)
    if cfg.position == 'rope':
      q_BxTxHxDh = rope(q_BxTxHxDh, positions_BxT, cfg.rope_theta)
      k_BxTxKxDh = rope(k_BxTxKxDh, positions_BxT, cfg.rope_theta)
    if kv_cache is None:
      out_BxTxHxDh = attention_lib.causal_attention(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, cfg.attention,
                                                    segment_ids_BxT)
    else:
      out_BxTxHxDh, kv_cache = attention_lib.cached_attention(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, kv_cache,
                                                              lengths_B, cfg.attention)
      if cfg.smear_keys:
        kv_cache = (*kv_cache, k_prev_BxKxDh)
    # Residual-branch output projections get a smaller init (GPT-2: std / sqrt(2 * layers)).
    out_std = cfg.init_std / (2 * cfg.num_layers) ** 0.5
    out_BxTxD = _dense(self, out_BxTxHxDh, 'out', (H, Dh, D), ('heads', 'head_dim', 'embed'), cfg, out_std, contract=2)
    return out_BxTxD, kv_cache


class Mlp(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    cfg = self.cfg
    D, F = cfg.dim, cfg.mlp_dim
    up_BxTxF = _dense(self, x_BxTxD, 'up', (D, F), ('embed', 'mlp'), cfg)
    if cfg.mlp == 'swiglu':
      h_BxTxF = nn.silu(_dense(self, x_BxTxD, 'gate', (D, F), ('embed', 'mlp'), cfg)) * up_BxTxF
    else:
      h_BxTxF = nn.gelu(up_BxTxF)  # tanh approximation, as GPT-2's gelu_new
    out_std = cfg.init_std / (2 * cfg.num_layers) ** 0.5
    return _dense(self, h_BxTxF, 'down', (F, D), ('mlp', 'embed'), cfg, out_std)


class Block(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, kv_cache=None, lengths_B=None, segment_ids_BxT=None, advance_B=None):
    x_BxTxD = nn.with_logical_constraint(x_BxTxD, ('act_batch', 'act_seq', 'act_embed'))
    h_BxTxD = _norm(self.cfg, 'attn_norm')(x_BxTxD)
    attn_BxTxD, kv_cache = Attention(self.cfg, name='attn')(h_BxTxD, positions_BxT, kv_cache, lengths_B,
                                                            segment_ids_BxT, advance_B)
    x_BxTxD = x_BxTxD + attn_BxTxD
    h_BxTxD = _norm(self.cfg, 'mlp_norm')(x_BxTxD)
    x_BxTxD = x_BxTxD + Mlp(self.cfg, name='mlp')(h_BxTxD)
    return x_BxTxD, kv_cache


class ScannedBlock(Block):
  """Block with the (carry, xs) -> (carry, ys) signature that nn.scan wants: the residual
  stream is carried, each layer's slice of the KV cache goes in and comes out."""

  def __call__(self, x_BxTxD, positions_BxT, kv_cache, lengths_B, segment_ids_BxT, advance_B):
    return super().__call__(x_BxTxD, positions_BxT, kv_cache, lengths_B, segment_ids_BxT, advance_B)


class Transformer(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens_BxT, positions_BxT=None, cache=None, segment_ids_BxT=None, advance_B=None):
    """Returns float32 logits_BxTxV for next-token prediction (head 'scalar': float32
    values_BxT, a score read after each position; the trunk is the same either way).

    Packed training windows pass segment_ids_BxT (one id per packed sequence) and positions_BxT
    counted from each sequence's start: every sequence is then computed as if it were alone.

    With a decode cache (cache_shapes; llm/inference/engine.py), the tokens continue each row
    at position lengths_B[b]; returns (logits, cache with the new keys and values written and
    lengths advanced by advance_B: how many of the T tokens each row really adds, T unless given;
    the engine's padded prompts and its rows that wait give fewer). The engine decodes with
    per-layer parameters (unstack_layers).
    """
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    lengths_B = None if cache is None else cache['lengths']
    # Positions reach T - 1, or with a cache its length - 1; a learned table has max_seq_len rows
    # and jnp.take gives NaN past them, which attention then spreads to every position.
    span = tokens_BxT.shape[1] if cache is None else cache['k'][0].shape[-1]
    if cfg.position == 'learned' and span > cfg.max_seq_len:
      what = f'{span} tokens' if cache is None else f'a decode cache of {span} positions'
      raise ValueError(f'{what} for a learned-position model with model.max_seq_len={cfg.max_seq_len}: it has '
                       'no position embedding past that many')
    if cache is not None and advance_B is None:
      advance_B = jnp.full(lengths_B.shape, tokens_BxT.shape[1], jnp.int32)
    kv_names = ('k', 'v', 'k_prev') if cfg.smear_keys else ('k', 'v')
    if positions_BxT is None:
      start_Bx1 = 0 if cache is None else lengths_B[:, None]
      positions_BxT = start_Bx1 + jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
    embed = nn.Embed(cfg.vocab_size, cfg.dim, dtype=dtype, name='embed',
                     embedding_init=nn.with_logical_partitioning(_dense_init(cfg.init_std),
                                                                 ('vocab', 'embed')))
    x_BxTxD = embed(tokens_BxT)
    if cfg.position == 'learned':
      pos_embed = self.param('pos_embed', nn.with_logical_partitioning(
          _dense_init(cfg.init_std), ('seq', 'embed')), (cfg.max_seq_len, cfg.dim))
      x_BxTxD = x_BxTxD + jnp.take(pos_embed, positions_BxT, axis=0).astype(dtype)

    block = {'none': lambda b: b,
             'full': lambda b: nn.remat(b, prevent_cse=not cfg.scan_layers),
             'dots': lambda b: nn.remat(b, prevent_cse=not cfg.scan_layers,
                                        policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable),
             }[cfg.remat]
    if cfg.scan_layers:
      # One compiled block, its parameters stacked on a leading 'layers' axis: compile time
      # stays flat in depth. On CPU (small models) the loop is unrolled: XLA's CPU while loop
      # zero-fills and copies the stacked activations, ~20% of the train step. Not under remat,
      # whose prevent_cse=False is only safe inside a loop.
      unroll = cfg.num_layers if jax.default_backend() == 'cpu' and cfg.remat == 'none' else 1
      stack = nn.scan(block(ScannedBlock), variable_axes={'params': 0}, split_rngs={'params': True},
                      in_axes=(nn.broadcast, 0, nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.num_layers,
                      unroll=unroll,
                      metadata_params={nn.PARTITION_NAME: 'layers'})
      # A cache goes through the scan stacked on a leading layers axis (copied in and out:
      # correct, not fast; the engine decodes unstacked, see unstack_layers).
      stacked_kv = None if cache is None else tuple(jnp.stack(cache[n]) for n in kv_names)
      x_BxTxD, stacked_kv = stack(cfg, name='layers')(x_BxTxD, positions_BxT, stacked_kv, lengths_B,
                                                      segment_ids_BxT, advance_B)
      layer_kv = None if cache is None else list(zip(*stacked_kv, strict=True))
    else:
      layer_kv = []
      for i in range(cfg.num_layers):
        kv = None if cache is None else tuple(cache[n][i] for n in kv_names)
        x_BxTxD, kv = block(Block)(cfg, name=f'layer_{i}')(x_BxTxD, positions_BxT, kv, lengths_B, segment_ids_BxT,
                                                           advance_B)
        layer_kv.append(kv)

    x_BxTxD = _norm(cfg, 'final_norm')(x_BxTxD)
    if cfg.head == 'scalar':
      # A reward model: one fresh D -> 1 projection in place of the lm head (as Hugging Face's
      # ...ForSequenceClassification 'score'); the caller reads it at the position it scores.
      if cache is not None:
        raise ValueError("a head='scalar' model scores whole sequences; it does not decode with a cache")
      return project(x_BxTxD, _weight(self, 'reward_head', (cfg.dim, 1), ('embed', None), cfg.init_std,
                                      dtype))[..., 0].astype(jnp.float32)
    if cfg.tied_embeddings:
      # embed.attend's product, through matmul for its CPU weight gradient.
      table_VxD = embed.embedding.astype(dtype)
      logits_BxTxV = matmul(x_BxTxD.reshape(-1, cfg.dim), table_VxD.T).reshape(*x_BxTxD.shape[:-1], -1)
    else:
      logits_BxTxV = project(x_BxTxD, _weight(self, 'lm_head', (cfg.dim, cfg.vocab_size), ('embed', 'vocab'),
                                              cfg.init_std, dtype))
    logits_BxTxV = logits_BxTxV.astype(jnp.float32)
    if cache is None:
      return logits_BxTxV
    return logits_BxTxV, dict(zip(kv_names, zip(*layer_kv, strict=True)), lengths=lengths_B + advance_B)


def cache_shapes(cfg: ModelConfig, batch: int, length: int) -> dict:
  """A decode cache for `batch` rows of up to `length` positions: per layer (one buffer each,
  updated in place) keys [B, K, Dh, S] and values [B, K, S, Dh] in the compute dtype
  (llm/attention/kv_cache.py says why), and each row's length; with smear_keys also each
  layer's unsmeared key of the row's last position, k_prev [B, K, Dh]."""
  B, K, S, Dh, L = batch, cfg.num_kv_heads, length, cfg.head_dim, cfg.num_layers
  dtype = jnp.dtype(cfg.dtype)
  shapes = {'k': (jax.ShapeDtypeStruct((B, K, Dh, S), dtype),) * L,
            'v': (jax.ShapeDtypeStruct((B, K, S, Dh), dtype),) * L,
            'lengths': jax.ShapeDtypeStruct((B,), jnp.int32)}
  if cfg.smear_keys:
    shapes['k_prev'] = (jax.ShapeDtypeStruct((B, K, Dh), dtype),) * L
  return shapes


def unstack_layers(params, num_layers: int) -> dict:
  """scan_layers=True parameters (stacked on a 'layers' axis) in the layout of scan_layers=False
  (layer_0, layer_1, ...), which decodes faster: each step reads every weight in place, where
  the stacked layout copies each layer's slice out first."""
  unrolled = {k: v for k, v in params.items() if k != 'layers'}
  for i in range(num_layers):
    unrolled[f'layer_{i}'] = jax.tree.map(lambda x, i=i: x[i], params['layers'])
  return unrolled


def count_params(params) -> dict:
  """Total parameters, and non-embedding ones (token and position tables excluded)."""
  total = sum(x.size for x in jax.tree.leaves(params))
  embedding = params['embed']['embedding'].size + (params['pos_embed'].size if 'pos_embed' in params else 0)
  return {'total': int(total), 'non_embedding': int(total - embedding)}


def flops_per_token(cfg: ModelConfig, non_embedding_params: int, seq_len: int) -> float:
  """Model FLOPs per trained token: 6 x (non-embedding + lm-head params) + causal attention.

  The same convention as the design notes and the PyTorch reference, so MFU and model
  GFLOP/s compare across implementations. For a tied model the lm-head is the embedding
  table, which the non-embedding count excludes; untied, it is already included.
  """
  head = cfg.vocab_size * cfg.dim if cfg.tied_embeddings and cfg.head == 'lm' else 0
  return 6 * (non_embedding_params + head) + 6 * cfg.num_layers * seq_len * cfg.dim
