"""Causal self-attention behind one function; the implementation is a config choice
(config.model.attention), resolved per call shape and platform by select().

  'xla'         plain XLA ops. On the CPU in causal query blocks with a hand-written backward
                (llm/kernels/cpu_xla_attention.py); elsewhere jax.nn.dot_product_attention's XLA path.
  'cudnn'       cuDNN flash attention, jax.nn.dot_product_attention(implementation='cudnn'):
                GPUs, bfloat16 / float16.
  'splash'      the Pallas splash kernel (llm/attention/splash.py): TPUs; elsewhere it runs in
                Pallas interpret mode (slow; how the tests check it on a CPU).
  'cpu_kernel'  the C++ kernel behind an XLA FFI call (llm/kernels/cpu_attention.cc): CPUs, float32.
  'auto'        as MaxText's `autoselected`: cuDNN on a GPU and splash on a TPU for sequences of at
                least FLASH_MIN_SEQ, the CPU kernel where it is measured faster than the XLA path on
                this host for this shape (once, cached per CPU; llm/kernels/cpu_attention.py), and
                the XLA path for everything else: short sequences, shapes the kernels do not take.

Packed sequences pass segment_ids_BxT (one id per packed sequence): a query then attends only to
earlier keys of its own segment, as it would with the sequence alone. The XLA path, cuDNN (as a
mask) and splash take them; the CPU kernel does not, so 'auto' takes the XLA path there.

Decoding and prefill over a KV cache take cached_attention: the cache written in place, then
XLA's products over it (llm/attention/kv_cache.py), or for a decode step on a CPU under 'auto'
or 'cpu_kernel' the kernel llm/kernels/cpu_cached_attention.cc, where 'auto' measured it faster.
"""
import functools
import math

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp

from llm.attention import splash
from llm.attention import kv_cache
from llm.kernels import cpu_attention, cpu_cached_attention, cpu_xla_attention

IMPLEMENTATIONS = ('auto', 'xla', 'cudnn', 'splash', 'cpu_kernel')
FLASH_MIN_SEQ = 128  # below this the XLA path is as fast as a fused kernel (MaxText uses 128 too)
_HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def platform() -> str:
  """'cpu', 'gpu' or 'tpu': the backend the model is traced for (a function, so tests can mock it)."""
  return jax.default_backend()


def _cudnn_takes(T: int, Dh: int, dtype) -> bool:
  # cuDNN's fused attention: half precision, head width a multiple of 8 up to 128 (256 on Hopper
  # for the forward only; kept at 128 so the backward runs fused too).
  return jnp.dtype(dtype) in _HALF and Dh % 8 == 0 and Dh <= 128 and T >= FLASH_MIN_SEQ


def select(requested: str, q_shape: tuple, k_shape: tuple, dtype, segmented: bool = False) -> str:
  """The implementation that runs for causal attention on q [B, T, H, Dh], k [B, T, K, Dh]
  (with segment ids when `segmented`): `requested` itself (checked that it can run here), or
  what 'auto' picks."""
  if requested not in IMPLEMENTATIONS:
    raise ValueError(f'model.attention={requested!r}; choose one of {IMPLEMENTATIONS}')
  B, T, H, Dh = q_shape
  where = platform()
  if requested == 'auto':
    return _auto(where, q_shape, k_shape, dtype, segmented)
  if requested == 'cudnn' and (where != 'gpu' or not _cudnn_takes(T, Dh, dtype)):
    raise ValueError(f'model.attention=cudnn needs a GPU, bfloat16/float16, head width a multiple of 8 '
                     f'<= 128 and seq >= {FLASH_MIN_SEQ}; got {where}, {jnp.dtype(dtype).name}, '
                     f'head width {Dh}, seq {T}: use model.attention=auto')
  if requested == 'cpu_kernel':
    if segmented:
      raise ValueError('model.attention=cpu_kernel does not take segment ids (packed SFT sequences); '
                       'use model.attention=auto or xla')
    if where != 'cpu' or jnp.dtype(dtype) != jnp.float32 or not cpu_attention.available():
      raise ValueError(f'model.attention=cpu_kernel needs the CPU backend, float32 and the kernel built; '
                       f'got {where}, {jnp.dtype(dtype).name}, kernel '
                       f'{"built" if cpu_attention.available() else "did not build (the warning above says why)"}: '
                       'use model.attention=auto')
  return requested


def _auto(where: str, q_shape, k_shape, dtype, segmented: bool) -> str:
  B, T, H, Dh = q_shape
  if where == 'gpu':
    return 'cudnn' if _cudnn_takes(T, Dh, dtype) else 'xla'
  if where == 'tpu':
    return 'splash' if splash.supports(T) else 'xla'
  if where == 'cpu' and jnp.dtype(dtype) == jnp.float32 and not segmented:
    if cpu_attention.available() and cpu_attention.faster_than_xla(q_shape, k_shape):
      return 'cpu_kernel'
  return 'xla'


@functools.cache
def _log_choice(requested, chosen, q_shape, dtype_name, segmented):
  logging.info('attention: %s -> %s for q %s %s%s on %s', requested, chosen, q_shape, dtype_name,
               ' with segment ids' if segmented else '', platform())


def causal_attention(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, implementation: str = 'auto', segment_ids_BxT=None):
  """softmax(q k^T / sqrt(Dh), causal) v with K key/value heads serving H = K * G query heads;
  with segment_ids_BxT, each query sees only the keys of its own segment."""
  segmented = segment_ids_BxT is not None
  chosen = select(implementation, q_BxTxHxDh.shape, k_BxTxKxDh.shape, q_BxTxHxDh.dtype, segmented)
  _log_choice(implementation, chosen, q_BxTxHxDh.shape, jnp.dtype(q_BxTxHxDh.dtype).name, segmented)
  if chosen == 'cudnn':
    return jax.nn.dot_product_attention(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask=_same_segment(segment_ids_BxT),
                                        is_causal=True, implementation='cudnn')
  if chosen == 'splash':
    return _per_shard(splash.causal_attention, q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, segment_ids_BxT)
  if chosen == 'cpu_kernel':
    return _per_shard(cpu_attention.causal_attention, q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh)
  return _xla(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, segment_ids_BxT)


def cached_attention(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, cache_pair, lengths_B, implementation: str = 'auto'):
  """Row b's T new keys and values written to its cache slots lengths_B[b]..., then each query
  attending to the slots up to its own position. Returns (out_BxTxHxDh, updated cache_pair)."""
  if _cached_kernel(implementation, q_BxTxHxDh, cache_pair[0]):  # writes the cache itself
    return cpu_cached_attention.cached_attention(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, cache_pair, lengths_B)
  cache_pair = kv_cache.write(k_BxTxKxDh, v_BxTxKxDh, cache_pair, lengths_B)
  return kv_cache.attend(q_BxTxHxDh, cache_pair, lengths_B), cache_pair


def _cached_kernel(implementation: str, q_BxTxHxDh, k_BxKxDhxS) -> bool:
  """Whether a decode step (one query per row) takes the CPU kernel: float32 on the CPU, one
  device (a custom call is not partitioned), and under 'auto' measured faster on this host.
  Prefill (many queries per row) keeps XLA's batched products."""
  mesh = jax.sharding.get_abstract_mesh()
  if (implementation not in ('auto', 'cpu_kernel') or platform() != 'cpu' or q_BxTxHxDh.shape[1] != 1
      or {jnp.dtype(q_BxTxHxDh.dtype), jnp.dtype(k_BxKxDhxS.dtype)} != {jnp.dtype(jnp.float32)}
      or not (mesh.empty or mesh.size == 1) or not cpu_attention.available()):
    return False
  return implementation == 'cpu_kernel' or cpu_cached_attention.faster_than_xla(q_BxTxHxDh.shape, k_BxKxDhxS.shape)


def _same_segment(segment_ids_BxT):
  """The [B, 1, T, S] mask of key positions in each query's segment (None without segments)."""
  if segment_ids_BxT is None:
    return None
  return (segment_ids_BxT[:, :, None] == segment_ids_BxT[:, None, :])[:, None]


def _xla(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, segment_ids_BxT=None):
  if platform() == 'cpu':
    return cpu_xla_attention.causal_attention(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, segment_ids_BxT)
  return jax.nn.dot_product_attention(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask=_same_segment(segment_ids_BxT),
                                      is_causal=True, implementation='xla')


def _shard_specs(q_BxTxHxDh, k_BxTxKxDh, mesh):
  """(q spec, k/v spec) of the activations' shards on `mesh` from the logical rules, or None where
  a kernel cannot run per shard: a dimension that does not split evenly, a split sequence, or
  query heads split otherwise than the key/value heads (a shard's query head j would attend with
  its local key/value head j // G, not the global one)."""
  specs = (nn.logical_to_mesh_axes(('act_batch', 'act_seq', 'heads', 'head_dim')),
           nn.logical_to_mesh_axes(('act_batch', 'act_seq', 'kv_heads', 'head_dim')))
  for x, spec in zip((q_BxTxHxDh, k_BxTxKxDh), specs, strict=True):
    for size, axes in zip(x.shape, tuple(spec) + (None,) * (x.ndim - len(spec)), strict=True):
      axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
      if size % math.prod(mesh.shape[a] for a in axes):
        return None
  return None if specs[0][1] is not None or specs[0][2] != specs[1][2] else specs


def _per_shard(kernel, q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, segment_ids_BxT=None):
  """A custom call (FFI or Pallas) under a multi-device mesh runs per shard in shard_map: XLA
  cannot partition it and would gather every shard to each device. Batch and heads split, the
  sequence stays whole; where the shards do not split evenly the XLA path runs instead.
  Segment ids, when given, go to the kernel as a fourth argument split by batch."""
  args = (q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh) + (() if segment_ids_BxT is None else (segment_ids_BxT,))
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return kernel(*args)
  specs = _shard_specs(q_BxTxHxDh, k_BxTxKxDh, mesh)
  if specs is None:
    return _xla(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, segment_ids_BxT)
  q_spec, kv_spec = specs
  in_specs = (q_spec, kv_spec, kv_spec) + ((jax.P(q_spec[0], None),) if segment_ids_BxT is not None else ())
  # check_vma=False: the custom call's outputs carry no varying-axes types to check.
  return jax.shard_map(kernel, in_specs=in_specs, out_specs=q_spec, check_vma=False)(*args)
