"""Attention benchmark: one layer's causal attention, forward + backward, on the CPU.

    python -m llm.bench --attention     # the training benchmark's shape: batch 8, seq 256, 4 heads of 64

Three implementations on the same float32 q, k, v [batch, seq, heads, head_dim], each timed as a
jitted (or eager, for torch) forward + backward with the median of several calls:
- the compiled kernel (model.attention=cpu_kernel, llm/kernels/cpu_attention.cc);
- the XLA path on the CPU (model.attention=xla): blocks of 64 queries, hand-written backward
  (llm/kernels/cpu_xla_attention.py);
- yardstick: torch.nn.functional.scaled_dot_product_attention(is_causal=True), the fused
  attention the PyTorch reference trains with, with as many threads as the reference.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

from llm.bench_decode import median_seconds

_REPEATS = 30  # calls per median: one call takes milliseconds


def _torch_s(q, k, v, dout) -> float | None:
  try:
    import torch
  except ImportError:
    return None
  torch.set_num_threads(os.cpu_count() or 1)
  # torch's layout is [batch, heads, seq, head_dim].
  qt, kt, vt = (torch.tensor(np.asarray(x)).transpose(1, 2).contiguous().requires_grad_() for x in (q, k, v))
  dt = torch.tensor(np.asarray(dout)).transpose(1, 2).contiguous()

  def step():
    out = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=True)
    torch.autograd.grad(out, (qt, kt, vt), dt)

  return median_seconds(step, _REPEATS)


def run(batch: int, seq: int, heads: int, head_dim: int) -> dict:
  from llm import hostinfo
  from llm.kernels import cpu_attention, cpu_xla_attention
  rng = np.random.default_rng(0)
  q, k, v, dout = (jnp.asarray(rng.standard_normal((batch, seq, heads, head_dim)), jnp.float32)
                   for _ in range(4))

  def fwd_bwd(attention):
    vjp = jax.jit(lambda q, k, v, dout: jax.vjp(attention, q, k, v)[1](dout))
    return lambda: jax.block_until_ready(vjp(q, k, v, dout))

  tokens = batch * seq
  result = {'shape': dict(batch=batch, seq=seq, heads=heads, head_dim=head_dim), 'host': hostinfo.describe()}
  timings = {'xla': median_seconds(fwd_bwd(cpu_xla_attention.causal_attention), _REPEATS)}
  if cpu_attention.available():
    timings['cpu_kernel'] = median_seconds(fwd_bwd(cpu_attention.causal_attention), _REPEATS)
  torch_s = _torch_s(q, k, v, dout)
  if torch_s is not None:
    timings['torch_sdpa'] = torch_s
  for name, seconds in timings.items():
    result[name] = {'ms': round(seconds * 1e3, 2), 'tokens_per_s': round(tokens / seconds)}
  if torch_s is not None:
    result['ratio_to_torch'] = {name: round(torch_s / s, 3) for name, s in timings.items() if name != 'torch_sdpa'}
  return result
