"""Training-step benchmark: the real jitted train step on random tokens, one JSON line out.

    python -m llm.bench                       # GPT-2 style, layers=4 heads=4 dim=256 seq=256 batch=8 vocab=4096
    python -m llm.bench --reference           # then the PyTorch yardstick on the same shape, and the ratio
    python -m llm.bench --decode --context=512 # KV-cache decoding against recomputation, batch 1 and 32
    python -m llm.bench --data                # the grain pipeline against plain numpy slicing
    python -m llm.bench --attention           # one layer's causal attention against torch's fused SDPA

The model is the one `../shared/bench/torch_gpt_reference.py` builds: learned positions,
LayerNorm without bias, 4x GELU MLP, tied embeddings, float32; AdamW (decay on matrices only,
betas 0.9/0.95, lr 6e-4 constant) with global-norm clipping at 1.0. Both train on one fixed
random batch and synchronise on the loss every step. The step is built by llm.train.build and
llm.train.make_train_step, jitted with the training loop's shardings and donation.

Measured 2026-11-23 on this project's 2-core Xeon (AVX-512) CPU, no GPU, default shape, 20 timed
steps; eighteen rounds on an idle machine, each running ours (as llm.main runs) and then
`../shared/bench/torch_gpt_reference.py --steps 20` (`python -m llm.bench --reference`):

    ours              5,948-7,681 tokens/s (median 7,365; ~197 model GFLOP/s)  final_loss 3.7824
    torch 2.13 (cpu)  6,244-7,642 tokens/s (median 6,624)
    ratio             0.88-1.20 (median 1.08; 14 of 18 rounds >= 1.0)
    ours, LLM_CPU_ATTENTION=xla (4 rounds in between): 5,132-6,823 tokens/s (median 6,292)

Other jobs on the machine swing single runs by 2x: check it is idle first. Before the CPU work
the same step ran 2,565 tokens/s (0.36x of torch here) with the same loss after 23 steps. Where
the time went, and what fixed it (ms/step):
- 3-D einsum projections: XLA's CPU backend copied every activation gradient into a transposed
  layout before the weight-gradient dot (1/3 of the step). 2-D (rows, in) @ (in, out) matmuls
  (model.project): ~750 -> ~500.
- jax.nn.dot_product_attention materialises the full masked TxT scores: causal blocks of 64
  queries that only read their keys (model.attention): -45.
- nn.scan's while loop zero-fills and copies the stacked residuals: unrolled on CPU: -90.
- glibc maps and unmaps XLA's 357 MB per-step temporary block, so every step page-faulted it
  back in: llm/cpu_memory.py keeps freed memory (2.3M -> 0.5M page faults over a benchmark run,
  RSS 1.2 -> 2.2 GB): -50 (LLM_KEEP_MALLOC=1 turns it off: 0.76x). The torch reference pays a
  smaller version of this cost.
- Autodiff of the blocked attention recomputed rowsum(dP * P) per block, as slow YNN reductions
  (6 of a layer's 18 ms): a hand-written backward with FlashAttention-2's delta = rowsum(dO * O)
  (model._causal_blocks_bwd): ~-20.
- XLA's CPU dot runs a rows-contracting (weight-gradient) product 1.4-1.6x slower when its output
  has more rows than columns: the tied lm-head's dE and the MLP down-projection's dW are computed
  transposed behind an optimization barrier (model._cpu_matmul_bwd): ~-15.
- XLA runs a batched dot on one thread, at ~77 GFLOP/s for the 64-query attention blocks against
  ~148 for a 2-D matmul, and as long again in the small ops around them: 4 layers of attention
  cost ~99 ms of one core's work against torch's fused flash kernel's ~72. A C++ kernel behind
  an XLA FFI custom call (llm/kernels/cpu_attention.cc: one (row, head) per task on XLA's thread
  pool, 8x32 register-tiled GEMMs at ~180 GFLOP/s per core, packed operands, a vectorised exp)
  takes one layer's forward + backward from ~10-12 to ~6.2 ms (forward 5 -> 1.9 ms): ~-30.
On one core the dense matmuls take the same time in both (~376 ms at ~140 GFLOP/s; MKL's kernels
are ~6% faster, XLA's transposed weight-gradient dots ~20% slower).
Tried without gain: XLA_FLAGS fast-math, vector width 512, oneDNN, XNNPACK, the old runtime
(YNN dot fusions, the default, are needed: off costs +17%), turning YNN's eltwise or reduce
fusions off (+3%, +10%); one fused QKV matmul (+5%); a GELU or norm with a hand-written VJP;
query blocks of 32, 128 or 256 (+3%, +2%, +9%); K kept transposed or the backward's dK/dV
summed without a chain (no change); the batch split in two for concurrency (no change); two
XLA CPU devices in data parallel (slower); scan_layers=False (same as the unrolled scan);
glibc huge pages for malloc (no change). A packed, register-tiled GEMM of our own for the dense
layers (the attention kernel's tile, 12 rows x 32 columns) reached 107-175 GFLOP/s on one core
over the step's nine matmul shapes against XLA's 101-165, faster on 3 and slower on 5 of them:
not worth replacing XLA's dots.
Occasional ~0.7 s steps (2 or 3 per 60, either attention path) come with ~0.5 s of kernel
time in vmstat and no Python GC pass: the VM's memory management, not the step.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

_LAYERS = flags.DEFINE_integer('layers', 4, 'Transformer blocks.')
_HEADS = flags.DEFINE_integer('heads', 4, 'Attention heads.')
_DIM = flags.DEFINE_integer('dim', 256, 'Model width (MLP is 4x).')
_SEQ = flags.DEFINE_integer('seq', 256, 'Tokens per sequence.')
_BATCH = flags.DEFINE_integer('batch', 8, 'Sequences per step.')
_VOCAB = flags.DEFINE_integer('vocab', 4096, 'Vocabulary size.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps first (the first one compiles).')
_REFERENCE = flags.DEFINE_bool('reference', False, 'Also run the PyTorch reference on the same shape.')
_DECODE = flags.DEFINE_bool('decode', False, 'Benchmark decoding instead (llm/bench_decode.py).')
_CONTEXT = flags.DEFINE_integer('context', 512, 'With --decode: tokens of context at the end of generation.')
_ATTENTION = flags.DEFINE_bool('attention', False, 'Benchmark one layer of causal attention instead '
                               '(llm/bench_attention.py): forward + backward at batch x seq x heads.')
_DATA = flags.DEFINE_bool('data', False, 'Benchmark the data pipeline instead (llm/bench_data.py), '
                          'on the corpus and batch shape of configs/pretrain_small.py.')

REFERENCE_SCRIPT = Path(__file__).resolve().parents[1].parent / 'shared' / 'bench' / 'torch_gpt_reference.py'
SHAPE_FLAGS = ('layers', 'heads', 'dim', 'seq', 'batch', 'vocab', 'steps', 'warmup')


def bench_config(layers, heads, dim, seq, batch, steps, warmup):
  """base_config() with the reference's model and optimizer."""
  from llm.config import base_config
  c = base_config()
  c.model.update(dict(num_layers=layers, num_heads=heads, num_kv_heads=heads, dim=dim, mlp_dim=4 * dim,
                      max_seq_len=seq, position='learned', norm='layernorm', mlp='gelu', qk_norm=False,
                      tied_embeddings=True, dtype='float32', remat='none'))
  c.train.update(dict(seq_len=seq, batch_size=batch, grad_accum=1, steps=warmup + steps + 1,
                      lr=6e-4, min_lr_ratio=1.0, warmup_steps=0, weight_decay=0.1, b1=0.9, b2=0.95,
                      eps=1e-8, grad_clip=1.0))
  return c


def run_bench(config, vocab: int, steps: int, warmup: int) -> dict:
  import jax
  import numpy as np
  from llm import losses, model as model_lib, sharding, train
  from llm.kernels import cpu_attention

  mesh = sharding.make_mesh(config.mesh)
  setup = train.build(config, vocab, mesh)
  tc = config.train
  with setup.context():
    state = setup.init(jax.random.key(config.seed))
    # The same jit as llm.train.run: shardings in and out, the state donated.
    batch_sh = sharding.batch_sharding(mesh)
    step_fn = jax.jit(train.make_train_step(setup.model, setup.tx, setup.lr_fn, losses.lm_loss, tc.grad_accum),
                      in_shardings=(setup.state_sharding, batch_sh),
                      out_shardings=(setup.state_sharding, sharding.replicated(mesh)), donate_argnums=0)
    rng = np.random.default_rng(0)
    local = {k: rng.integers(0, vocab, (tc.batch_size, tc.seq_len)).astype(np.int32)
             for k in ('inputs', 'targets')}
    batch = sharding.global_batch(local, mesh)
    for _ in range(warmup):
      state, metrics = step_fn(state, batch)
      float(metrics['loss'])
    t0 = time.perf_counter()
    for _ in range(steps):
      state, metrics = step_fn(state, batch)
      loss = float(metrics['loss'])  # synchronise every step, as the reference does (loss.item())
    dt = (time.perf_counter() - t0) / steps

  # Which causal attention the step ran: the compiled CPU kernel, or XLA (LLM_CPU_ATTENTION=xla).
  attention = 'cpu_kernel' if cpu_attention.applies(np.zeros(1, config.model.dtype)) else 'xla'
  counts = model_lib.count_params(state.params)
  flops_tok = model_lib.flops_per_token(setup.model_cfg, counts['non_embedding'], tc.seq_len)
  tokens = tc.batch_size * tc.seq_len
  return {'impl': 'jax-llm', 'params_non_embedding': counts['non_embedding'], 'params_total': counts['total'],
          'tokens_per_s': round(tokens / dt, 1), 'ms_per_step': round(dt * 1e3, 2),
          'model_gflops_per_s': round(flops_tok * tokens / dt / 1e9, 2), 'final_loss': round(loss, 4),
          'devices': jax.device_count(), 'attention': attention}


def run_reference(shape: dict) -> dict | None:
  """The PyTorch yardstick in a child process; None (and a line saying why) if it cannot run."""
  try:
    import torch  # noqa: F401  (only to know whether the child can run)
  except ImportError:
    print('reference skipped: torch is not importable (pip install torch==2.13.0)')
    return None
  if not REFERENCE_SCRIPT.exists():
    print(f'reference skipped: {REFERENCE_SCRIPT} not found')
    return None
  cmd = [sys.executable, str(REFERENCE_SCRIPT)] + [f'--{k}={v}' for k, v in shape.items()]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()
  return json.loads(out[-1])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  from llm import cpu_memory
  cpu_memory.keep_freed_memory()  # as llm.main does
  shape = {k: flags.FLAGS[k].value for k in SHAPE_FLAGS}
  if _DECODE.value:
    from llm import bench_decode
    config = bench_config(shape['layers'], shape['heads'], shape['dim'], _CONTEXT.value, 1, 1, 0)
    print(json.dumps(bench_decode.run(config, shape['vocab'])))
    return
  if _ATTENTION.value:
    from llm import bench_attention
    print(json.dumps(bench_attention.run(shape['batch'], shape['seq'], shape['heads'],
                                         shape['dim'] // shape['heads'])))
    return
  if _DATA.value:
    from configs import pretrain_small
    from llm import bench_data
    print(json.dumps(bench_data.run(pretrain_small.get_config())))
    return
  config = bench_config(shape['layers'], shape['heads'], shape['dim'], shape['seq'], shape['batch'],
                        shape['steps'], shape['warmup'])
  ours = run_bench(config, shape['vocab'], shape['steps'], shape['warmup'])
  print(json.dumps(ours), flush=True)
  if _REFERENCE.value:
    ref = run_reference(shape)
    if ref is not None:
      print(json.dumps(ref))
      print(json.dumps({'ratio_tokens_per_s': round(ours['tokens_per_s'] / ref['tokens_per_s'], 3)}))


if __name__ == '__main__':
  app.run(main)
