"""Training-step benchmark: the real jitted train step on random tokens, one JSON line out.

    python -m llm.bench                       # GPT-2 style, layers=4 heads=4 dim=256 seq=256 batch=8 vocab=4096
    python -m llm.bench --reference           # then the PyTorch yardstick on the same shape, and the ratio
    python -m llm.bench --rounds=4            # auto, XLA attention and the yardstick alternating, 4 rounds
    python -m llm.bench --decode --context=512 # KV-cache decoding against recomputation, batch 1 and 32
    python -m llm.bench --data                # the grain pipeline against plain numpy slicing
    python -m llm.bench --serve --clients=1,8,32  # llm.serve under concurrent clients vs one client
    python -m llm.bench --attention           # one layer's causal attention against torch's fused SDPA
    python -m llm.bench --peak                # re-measure this CPU's fp32 matmul peak (MFU's denominator)

The model is the one `../shared/bench/torch_gpt_reference.py` builds: learned positions,
LayerNorm without bias, 4x GELU MLP, tied embeddings, float32; AdamW (decay on matrices only,
betas 0.9/0.95, lr 6e-4 constant) with global-norm clipping at 1.0. Both train on one fixed
random batch and synchronise on the loss every step. The step is built by llm.train.build and
llm.train.make_train_step, jitted with the training loop's shardings and donation.

Every result carries its host (llm/hostinfo.py: CPU model, family and model numbers, instruction-set
class, cores, devices, the load at start):
a CPU speed claim holds for a host class, not for one machine. To measure the AVX2 class on an
AVX-512 host, build the attention kernel and cap XLA's code generation there:
LLM_CPU_MARCH=haswell XLA_FLAGS=--xla_cpu_max_isa=AVX2 python -m llm.bench --reference.
What was measured, on which hosts, and what was tried: docs/performance.md.
"""
import json
import time

from absl import flags

from llm import cli

_LAYERS = flags.DEFINE_integer('layers', 4, 'Transformer blocks.', lower_bound=1)
_HEADS = flags.DEFINE_integer('heads', 4, 'Attention heads.', lower_bound=1)
_DIM = flags.DEFINE_integer('dim', 256, 'Model width (MLP is 4x).', lower_bound=1)
_SEQ = flags.DEFINE_integer('seq', 256, 'Tokens per sequence.', lower_bound=1)
_BATCH = flags.DEFINE_integer('batch', 8, 'Sequences per step.', lower_bound=1)
_VOCAB = flags.DEFINE_integer('vocab', 4096, 'Vocabulary size.', lower_bound=1)
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps.', lower_bound=1)  # the time per step divides by it
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps first (the first one compiles).', lower_bound=0)
_REFERENCE = flags.DEFINE_bool('reference', False, 'Also run the PyTorch reference on the same shape.')
_ROUNDS = flags.DEFINE_integer('rounds', 0, 'Alternate ours (attention auto, then xla) and the reference this many '
                               'rounds, each run a fresh process (llm/bench_rounds.py).', lower_bound=0)
_DECODE = flags.DEFINE_bool('decode', False, 'Benchmark decoding instead (llm/bench_decode.py).')
_CONTEXT = flags.DEFINE_integer('context', 512, 'With --decode: tokens of context at the end of generation.',
                               lower_bound=1)
_DECODE_BATCHES = cli.define_number_list('decode_batches', [1, 32], 'With --decode: batch sizes to time.', lowest=1)
_ATTENTION = flags.DEFINE_bool('attention', False, 'Benchmark one layer of causal attention instead '
                               '(llm/bench_attention.py): forward + backward at batch x seq x heads.')
_IMPL = flags.DEFINE_string('attention_impl', 'auto', 'model.attention (llm/attention): auto | xla | '
                             'cpu_kernel | splash | cudnn.')
_DTYPE = flags.DEFINE_string('dtype', 'float32', 'model.dtype: float32 (the reference\'s) or bfloat16.')
_REMAT = flags.DEFINE_string('remat', 'none', 'model.remat: none | full | dots.')
_PEAK = flags.DEFINE_bool('peak', False, 'Measure this host\'s fp32 matmul peak (the MFU denominator, '
                          'llm/hostinfo.py) again, keep it where higher than the kept one (a peak is a maximum), '
                          'and print both; run it on an idle machine.')
_SERVE = flags.DEFINE_bool('serve', False, 'Benchmark serving instead (llm/bench_serve.py): a real server on '
                           '127.0.0.1 under concurrent clients.')
_CLIENTS = cli.define_number_list('clients', [1, 8, 32], 'With --serve: concurrent clients per level.', lowest=1)
_REQUESTS = flags.DEFINE_integer('requests', 256, 'With --serve: requests per level (at least 2 per client); '
                                 'fewer and the 32-client level is one wave, its ramp and first compiles.',
                                 lower_bound=1)
_DATA = flags.DEFINE_bool('data', False, 'Benchmark the data pipeline instead (llm/bench_data.py), '
                          'on the corpus and batch shape of configs/pretrain_small.py.')

SHAPE_FLAGS = ('layers', 'heads', 'dim', 'seq', 'batch', 'vocab', 'steps', 'warmup')
MODEL_FLAGS = ('dtype', 'remat')  # what else a train-step timing depends on: --rounds passes them on too


def bench_config(layers, heads, dim, seq, batch, steps, warmup, attention='auto', dtype='float32',
                 remat='none'):
  """base_config() with the reference's model and optimizer."""
  from llm.config import base_config
  c = base_config()
  c.model.update(dict(num_layers=layers, num_heads=heads, num_kv_heads=heads, dim=dim, mlp_dim=4 * dim,
                      max_seq_len=seq, position='learned', norm='layernorm', mlp='gelu', qk_norm=False,
                      tied_embeddings=True, dtype=dtype, remat=remat, attention=attention))
  c.train.update(dict(seq_len=seq, batch_size=batch, grad_accum=1, steps=warmup + steps + 1,
                      lr=6e-4, min_lr_ratio=1.0, warmup_steps=0, weight_decay=0.1, b1=0.9, b2=0.95,
                      eps=1e-8, grad_clip=1.0))
  return c


def run_bench(config, vocab: int, steps: int, warmup: int) -> dict:
  import jax
  from llm import attention as attention_lib, hostinfo, losses, model as model_lib, sharding, train
  import numpy as np

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

  m = config.model
  attention = attention_lib.select(m.attention, (tc.batch_size, tc.seq_len, m.num_heads, m.dim // m.num_heads),
                                   (tc.batch_size, tc.seq_len, m.num_kv_heads, m.dim // m.num_heads), m.dtype)
  counts = model_lib.count_params(state.params)
  flops_tok = model_lib.flops_per_token(setup.model_cfg, counts['non_embedding'], tc.seq_len)
  tokens = tc.batch_size * tc.seq_len
  peak = hostinfo.peak_flops_per_device() * jax.device_count()
  mfu = flops_tok * tokens / dt / peak
  hostinfo.warn_if_mfu_above_one(mfu, peak)
  return {'impl': 'jax-llm', 'params_non_embedding': counts['non_embedding'], 'params_total': counts['total'],
          'tokens_per_s': round(tokens / dt, 1), 'ms_per_step': round(dt * 1e3, 2),
          'model_gflops_per_s': round(flops_tok * tokens / dt / 1e9, 2), 'final_loss': round(loss, 4),
          'attention': attention, 'peak_gflops_per_s': round(peak / 1e9, 1),
          'mfu': round(mfu, 3), 'host': hostinfo.describe(),
          # what was timed, so a line read alone says it
          'dtype': m.dtype, 'remat': m.remat, 'layers': m.num_layers, 'heads': m.num_heads, 'dim': m.dim,
          'seq': tc.seq_len, 'batch': tc.batch_size, 'vocab': vocab}


def run_reference(shape: dict) -> dict | None:
  """The PyTorch yardstick on the same shape (llm/torch_yardstick.py: on the GPU when JAX is)."""
  import jax
  from llm import torch_yardstick
  return torch_yardstick.run('torch_gpt_reference.py', shape, on_gpu=jax.default_backend() == 'gpu')


def main(argv):
  del argv  # cli.run refuses any
  from llm import cpu_memory
  cpu_memory.keep_freed_memory()  # as llm.main does
  from llm import hostinfo  # imports jax: after the malloc settings
  hostinfo.warn_if_busy()  # before our own work counts in the load
  shape = {k: flags.FLAGS[k].value for k in SHAPE_FLAGS}
  if _PEAK.value:
    measured, kept = hostinfo.measure_cpu_peak()
    print(json.dumps({'peak_gflops_per_s': round(kept / 1e9, 1), 'measured_gflops_per_s': round(measured / 1e9, 1),
                      'host': hostinfo.describe()}))
    return
  if _DECODE.value:
    from llm import bench_decode
    config = bench_config(shape['layers'], shape['heads'], shape['dim'], _CONTEXT.value, 1, 1, 0, _IMPL.value,
                          _DTYPE.value)
    print(json.dumps(bench_decode.run(config, shape['vocab'], batches=_DECODE_BATCHES.value)))
    return
  if _SERVE.value:
    from llm import bench_serve
    bench_serve.run(_CLIENTS.value, min_requests=_REQUESTS.value)
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
  if _ROUNDS.value:
    from llm import bench_rounds
    options = {k: flags.FLAGS[k].value for k in MODEL_FLAGS}
    print(json.dumps(bench_rounds.run(_ROUNDS.value, shape, run_reference, options)))
    return
  config = bench_config(shape['layers'], shape['heads'], shape['dim'], shape['seq'], shape['batch'],
                        shape['steps'], shape['warmup'], _IMPL.value, _DTYPE.value, _REMAT.value)
  ours = run_bench(config, shape['vocab'], shape['steps'], shape['warmup'])
  print(json.dumps(ours), flush=True)
  if _REFERENCE.value:
    ref = run_reference(shape)
    if ref is not None:
      print(json.dumps(ref))
      print(json.dumps({'ratio_tokens_per_s': round(ours['tokens_per_s'] / ref['tokens_per_s'], 3),
                        'dtype': ours['dtype'], 'torch_dtype': ref['dtype']}))


if __name__ == '__main__':
  cli.run(main, 'llm.bench')
