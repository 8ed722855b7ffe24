"""Decode benchmark: the engine's KV-cache decoding against the PyTorch reference decoder
(`../shared/bench/torch_decode_reference.py`, same shape, run as a child process in the same
run) and against recomputing the whole sequence every token.

    python -m llm.bench --decode --context=512     # batch 1 and batch 32, one JSON line

Same model shape flags as the training benchmark (GPT-2 style, fp32, random weights). Each row
starts from a prompt of context - new_tokens tokens and generates new_tokens greedily, so the
last tokens attend over `context` positions; decode tokens/s = batch x (new_tokens - 1) /
(time for new_tokens - time for 1), as the reference measures: the reference takes the difference
of the two medians over `repeats` calls, ours the median of `repeats` differences of calls run back
to back (on a shared VM the first swung single rounds of ours by up to 7x).
The two alternate, `rounds` times per batch size, so load from other jobs hits both alike;
every ratio is from the same round. The recompute baseline runs the full forward over a
context-long buffer per new token (the plain decoding llm.sample used before the engine).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np


def median_difference_seconds(long, short, repeats: int = 5) -> float:
  """Median over `repeats` of time(long()) - time(short()), each pair run back to back after one
  untimed call of each: on a shared VM the speed moves within a minute, and a difference of two
  medians timed apart took it in (one batch-32 round came out at 25,000 tokens/s, 7x the others)."""
  long(), short()  # compile
  differences = []
  for _ in range(repeats):
    start = time.perf_counter()
    short()
    middle = time.perf_counter()
    long()
    differences.append(time.perf_counter() - middle - (middle - start))
  return float(np.median(differences))


def median_seconds(fn, repeats: int = 3) -> float:
  """Median wall time of fn() over `repeats` calls, after one untimed call (compiles, warms up)."""
  fn()  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _reference(shape: dict) -> dict | None:
  """The PyTorch decoder's JSON line (llm/torch_yardstick.py: on the GPU when JAX is), or None."""
  from llm import torch_yardstick
  return torch_yardstick.run('torch_decode_reference.py', shape, on_gpu=jax.default_backend() == 'gpu')


def run(config, vocab: int, batches=(1, 32), new_tokens: int = 64, rounds: int = 3, repeats: int = 5,
        reference: bool = True) -> dict:
  """config: the benchmark model (llm.bench.bench_config) with seq = the context length."""
  from llm import hostinfo, inference, sharding, train
  context = config.model.max_seq_len
  if context <= new_tokens:  # the prompt is context - new_tokens tokens, and needs one at least
    raise ValueError(f'--context={context} leaves no room for a prompt: each row generates {new_tokens} new tokens '
                     f'after its prompt, so give --context above {new_tokens} (e.g. --context=512)')
  setup = train.build(config, vocab, sharding.make_mesh(config.mesh))
  with setup.context():
    params = setup.init(jax.random.key(0)).params

  class _Tok:  # the engine only needs these ids from a tokenizer here
    eos_id = bos_id = 2
    special_id = staticmethod(lambda name: 3)

  engine = inference.Engine(setup.model_cfg, params, _Tok(), setup.mesh, rules=setup.rules, cache_len=context)
  rng = np.random.default_rng(0)
  m = config.model
  result = {'impl': 'jax-decode', 'context': context, 'new_tokens': new_tokens, 'layers': m.num_layers,
            'heads': m.num_heads, 'dim': m.dim, 'vocab': vocab, 'dtype': m.dtype, 'rounds': rounds,
            'host': hostinfo.describe()}

  @jax.jit
  def recompute_step(params, buf_BxS, last_B):
    logits = setup.model.apply({'params': params}, buf_BxS)
    return jnp.argmax(jnp.take_along_axis(logits, last_B[:, None, None], 1)[:, 0], -1)

  for batch in batches:
    prompts = rng.integers(4, vocab, (batch, context - new_tokens)).tolist()
    gen = lambda n: engine.generate(prompts, max_new_tokens=n, temperature=0.0, stop_ids=[])
    shape = dict(layers=m.num_layers, heads=m.num_heads, dim=m.dim, vocab=vocab, context=context, batch=batch,
                 new_tokens=new_tokens, repeats=repeats)
    ours, torch_tps, prefill = [], [], []
    for _ in range(rounds):
      ours.append(batch * (new_tokens - 1) / median_difference_seconds(lambda: gen(new_tokens), lambda: gen(1), repeats))
      prefill.append(median_seconds(lambda: gen(1), repeats))
      ref = _reference(shape) if reference else None
      if ref is not None:
        torch_tps.append(ref['decode_tokens_per_s'])
        result['torch_dtype'] = ref['dtype']  # fp32 on a CPU whatever dtype: a ratio names both
    result[f'b{batch}_kv_tokens_per_s'] = round(float(np.median(ours)), 1)
    result[f'b{batch}_prefill_s'] = round(float(np.median(prefill)), 4)
    # A round where load made either side's difference of medians non-positive has no rate.
    valid = [(a, b) for a, b in zip(ours, torch_tps) if a > 0 and b > 0]
    if valid:
      ratios = [a / b for a, b in valid]
      result[f'b{batch}_torch_tokens_per_s'] = round(float(np.median([b for _, b in valid])), 1)
      result[f'b{batch}_ratio_to_torch'] = round(float(np.median(ratios)), 2)
      result[f'b{batch}_ratio_to_torch_rounds'] = [round(r, 2) for r in ratios]
      # Both sides per round, so a round's ratio can be traced to the side that moved.
      result[f'b{batch}_rounds_tokens_per_s'] = [[round(a, 1), round(b, 1)] for a, b in valid]
      result[f'b{batch}_rounds_without_a_rate'] = len(torch_tps) - len(valid)
    buf = jnp.asarray(rng.integers(4, vocab, (batch, context)), jnp.int32)
    last = jnp.full((batch,), context - 1, jnp.int32)
    with setup.context():
      steps = 4
      t_recompute = median_seconds(lambda: [recompute_step(params, buf, last).block_until_ready() for _ in range(steps)])
    recompute_tps = batch * steps / t_recompute
    result[f'b{batch}_recompute_tokens_per_s'] = round(recompute_tps, 1)
    result[f'b{batch}_speedup'] = round(result[f'b{batch}_kv_tokens_per_s'] / recompute_tps, 2)
  return result
