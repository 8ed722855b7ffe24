"""Causal attention through the Pallas splash kernel (jax.experimental.pallas.ops.tpu), the TPU
implementation MaxText trains with. Off a TPU it runs in Pallas interpret mode, which is how the
tests check it on a CPU (slowly: it is an interpreter).

The kernel works per example on heads-major q [H, T, Dh] and k, v [K, T, Dh] with GQA built in,
applies no 1/sqrt(Dh) scale of its own, and tiles the sequence in blocks that are multiples of
128 (NUM_LANES): T must be one.
"""
import jax
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

LANES = 128


def supports(T: int) -> bool:
  return T >= LANES and T % LANES == 0


def _kernel(T: int, H: int, interpret: bool):
  block = next(b for b in (512, 256, 128) if T % b == 0)
  sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                            block_q_dq=block, block_kv_dq=block)
  mask = masks.MultiHeadMask([masks.CausalMask((T, T)) for _ in range(H)])
  return splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                interpret=interpret)


def causal_attention(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, segment_ids_BxT=None):
  """With segment_ids_BxT, each query attends only to keys of its own segment (splash's SegmentIds)."""
  B, T, H, Dh = q_BxTxHxDh.shape
  if not supports(T):
    raise ValueError(f'splash attention needs a sequence length that is a multiple of {LANES}, '
                     f'got {T}; use model.attention=xla (or auto)')
  # Built per trace, as MaxText does: the kernel holds its block masks as arrays, which a kernel
  # cached across traces would leak from the first trace into the next.
  kernel = _kernel(T, H, jax.default_backend() != 'tpu')
  q_BxHxTxDh = (q_BxTxHxDh * Dh ** -0.5).transpose(0, 2, 1, 3)
  k_BxKxTxDh, v_BxKxTxDh = k_BxTxKxDh.transpose(0, 2, 1, 3), v_BxTxKxDh.transpose(0, 2, 1, 3)
  if segment_ids_BxT is None:
    out_BxHxTxDh = jax.vmap(kernel)(q_BxHxTxDh, k_BxKxTxDh, v_BxKxTxDh)
  else:
    segments = splash.SegmentIds(q=segment_ids_BxT, kv=segment_ids_BxT)
    out_BxHxTxDh = jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=s))(q_BxHxTxDh, k_BxKxTxDh,
                                                                               v_BxKxTxDh, segments)
  return out_BxHxTxDh.transpose(0, 2, 1, 3)
