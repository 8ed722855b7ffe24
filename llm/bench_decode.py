"""Decode benchmark: KV-cache engine against recomputing the whole sequence every token.

    python -m llm.bench --decode --context=512     # batch 1 and batch 32, one JSON line

Same model shape flags as the training benchmark (GPT-2 style, fp32, random weights). Each row
starts from a prompt of context - new_tokens tokens and generates new_tokens, so the last tokens
attend over `context` positions. The engine's decode rate excludes the prefill (timed apart);
the recompute baseline runs the full forward over a context-long buffer per new token, the
plain decoding llm.sample used before the engine.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np


def median_seconds(fn, repeats: int = 3) -> float:
  """Median wall time of fn() over `repeats` calls, after one untimed call (compiles, warms up)."""
  fn()  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def run(config, vocab: int, batches=(1, 32), new_tokens: int = 64) -> dict:
  """config: the benchmark model (llm.bench.bench_config) with seq = the context length."""
  from llm import inference, sharding, train
  context = config.model.max_seq_len
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
            'heads': m.num_heads, 'dim': m.dim, 'vocab': vocab}

  @jax.jit
  def recompute_step(params, buf_BxS, last_B):
    logits = setup.model.apply({'params': params}, buf_BxS)
    return jnp.argmax(jnp.take_along_axis(logits, last_B[:, None, None], 1)[:, 0], -1)

  for batch in batches:
    prompts = rng.integers(4, vocab, (batch, context - new_tokens)).tolist()
    gen = lambda n: engine.generate(prompts, max_new_tokens=n, temperature=0.0, stop_ids=[])
    t_prefill = median_seconds(lambda: gen(1))
    t_all = median_seconds(lambda: gen(new_tokens))
    decode_tps = batch * (new_tokens - 1) / (t_all - t_prefill)
    buf = jnp.asarray(rng.integers(4, vocab, (batch, context)), jnp.int32)
    last = jnp.full((batch,), context - 1, jnp.int32)
    with setup.context():
      steps = 4
      t_recompute = median_seconds(lambda: [recompute_step(params, buf, last).block_until_ready() for _ in range(steps)])
    recompute_tps = batch * steps / t_recompute
    result[f'b{batch}_kv_tokens_per_s'] = round(decode_tps, 1)
    result[f'b{batch}_prefill_s'] = round(t_prefill, 4)
    result[f'b{batch}_recompute_tokens_per_s'] = round(recompute_tps, 1)
    result[f'b{batch}_speedup'] = round(decode_tps / recompute_tps, 2)
  return result
