"""Inference engine: jitted prefill, a jitted decode loop over a preallocated KV cache, and
tool calls run inside generation.

Built from what inference needs and nothing of training: a model config, its parameters, a
tokenizer and a mesh (llm.inference.load reads all four from a run). One call generates for a
batch of prompts of different lengths. Each row has its own seed, stop tokens and token budget,
and its sampling randomness depends only on (seed, how many tokens it has produced), so a row's
tokens do not depend on which other rows share its batch. Temperature, top-k and top-p are
traced: changing them does not recompile. The KV cache stays allocated between calls and is
reused whenever the batch size repeats.

Tools: when a row writes <|/tool_call|>, the decode loop pauses that row and returns to the
host, which decodes the call, runs the tool, and queues <|tool_result|> result <|/tool_result|>
(llm.chat_template.tool_result_ids, as training renders it) for the row; the loop then feeds
those queued tokens instead of sampling (marking them forced, so training stages can keep them
out of the loss) and the model goes on.
"""
import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from llm import chat_template, config as config_lib, model as model_lib, sharding, tools as tools_lib
from llm.inference import sampling

_PROMPT_BUCKET = 64  # prompts (and output buffers) are padded up to a multiple of this: few compiled shapes
_QUEUE = chat_template.MAX_TOOL_RESULT_TOKENS  # a whole tool result is force-fed from one queue


NO_OPEN_CALL = 'error: no tool call is open; a call starts with the tool-call token, then "name: arguments"'


@dataclasses.dataclass
class Completion:
  tokens: list[int]  # generated ids (forced ones included), without the prompt
  forced: list[bool]  # True where the engine, not the model, supplied the token
  finish_reason: str  # 'stop' (a stop token), 'length' (max_new_tokens or the cache is full)
  tool_calls: int


def _bucket(n: int) -> int:
  return -(-max(n, 1) // _PROMPT_BUCKET) * _PROMPT_BUCKET


def row_seeds(seed: int, first: int, count: int) -> list[int]:
  """count seeds for generate()'s rows from a run's seed: first, first + 1, ... past seed x 1_000_003
  (another seed's rows are far away), reduced mod 2**31 so any seed fits the uint32 each row holds."""
  return [(seed * 1_000_003 + first + j) % 2**31 for j in range(count)]


def _per_row(value, batch: int, name: str) -> list:
  """A list given for a generate() argument, checked to hold one entry per prompt."""
  if len(value) != batch:
    raise ValueError(f'{name} has {len(value)} entries for {batch} prompts; give one per prompt or a single value')
  return list(value)


class Engine:

  def __init__(self, model_cfg: model_lib.ModelConfig, params, tokenizer, mesh, *, rules=None,
               tools: dict[str, Callable[[str], str]] | None = None, cache_len: int | None = None,
               model: nn.Module | None = None):
    """params: laid out on mesh; rules: logical-axis rules (default: llm.config's);
    tools: name -> fn(args) -> str (llm.tools); model: a stand-in for Transformer(model_cfg)."""
    self.model_cfg, self.tokenizer, self.mesh = model_cfg, tokenizer, mesh
    self.rules = sharding.logical_rules(config_lib.base_config().mesh.rules) if rules is None else rules
    # Stacked (scanned) layers decode with their parameters unstacked: model_lib.unstack_layers.
    self._unstack = model is None and model_cfg.scan_layers
    decode_cfg = dataclasses.replace(model_cfg, scan_layers=False)
    self.model = model_lib.Transformer(decode_cfg) if model is None else model
    self.params = params
    self.tools = tools or {}
    self.cache_len = cache_len or model_cfg.max_seq_len
    if model_cfg.position == 'learned' and self.cache_len > model_cfg.max_seq_len:
      raise ValueError(f'cache_len={self.cache_len} exceeds model.max_seq_len={model_cfg.max_seq_len}: a '
                       'learned-position model has no position embedding past it; use a cache_len of at most that')
    # Looked up only with tools: a model imported without the chat tokens has none to look up.
    sp = tokenizer.special_id
    self._call_open, self._call_close = (sp('<|tool_call|>'), sp('<|/tool_call|>')) if self.tools else (-1, -1)
    self._cache = None  # kept between generate() calls, reused for the same batch size
    self._allocate = {}  # (batch, length) -> the jitted function that allocates an empty cache
    self._prefill = jax.jit(self._prefill_impl, donate_argnums=1)
    self._decode = jax.jit(self._decode_impl, donate_argnums=1)
    self._emptied = jax.jit(self._emptied_impl, donate_argnums=0)

  @property
  def params(self):
    return self._params

  @params.setter
  def params(self, params):
    """New parameters (e.g. GRPO's after each update), in the training layout."""
    self._params = model_lib.unstack_layers(params, self.model_cfg.num_layers) if self._unstack else params

  def context(self):
    """Scope in which the model may be traced (mesh + logical rules)."""
    return sharding.mesh_context(self.mesh, self.rules)

  # ---- jitted pieces -------------------------------------------------------------------------

  def _prefill_impl(self, params, cache, tokens_BxP, lengths_B):
    """cache: empty (lengths 0, as data: a constant 0 would have XLA fold the whole masked-out
    cache part of the attention at compile time, seconds per layer)."""
    _, cache = self.model.apply({'params': params}, tokens_BxP, cache=cache, advance_B=lengths_B)
    return self._laid_out(cache)

  def _decode_impl(self, params, state, budget, temperature, top_k, top_p):
    """Decodes until every row is done or waiting for a tool, or `budget` steps have run."""

    def active(s):
      return ~s['done'] & ~s['paused']

    def cond(s):
      return jnp.any(active(s)) & (s['steps'] < budget)

    def body(s):
      act_B = active(s)
      cache = dict(s['cache'])
      # Rows that are done or paused advance nothing: their pending token is fed later.
      logits_Bx1xV, new_cache = self.model.apply({'params': params}, s['token'][:, None], cache=cache,
                                                 advance_B=act_B.astype(jnp.int32))
      new_cache = self._laid_out(new_cache)
      keys_B = jax.vmap(lambda seed, n: jax.random.fold_in(jax.random.key(seed), n))(s['seeds'], s['n_out'])
      sampled_B = sampling.sample_logits(keys_B, logits_Bx1xV[:, 0], temperature, top_k, top_p, act_B)
      forced_B = s['queue_pos'] < s['queue_len']
      queued_B = jnp.take_along_axis(s['queue'], jnp.minimum(s['queue_pos'], _QUEUE - 1)[:, None], 1)[:, 0]
      next_B = jnp.where(forced_B, queued_B, sampled_B)
      rows = jnp.arange(next_B.shape[0])
      write_at = jnp.minimum(s['n_out'], s['out'].shape[1] - 1)
      out = s['out'].at[rows, write_at].set(jnp.where(act_B, next_B, s['out'][rows, write_at]))
      out_forced = s['out_forced'].at[rows, write_at].set(
          jnp.where(act_B, forced_B, s['out_forced'][rows, write_at]))
      n_out = s['n_out'] + act_B
      stop_B = ~forced_B & jnp.any(next_B[:, None] == s['stop_ids'], axis=1)
      length_B = (n_out >= s['max_new']) | (new_cache['lengths'] >= self.cache_len - 1)
      return dict(s, cache=new_cache, token=jnp.where(act_B, next_B, s['token']), out=out,
                  out_forced=out_forced, n_out=n_out,
                  queue_pos=s['queue_pos'] + (act_B & forced_B),
                  done=s['done'] | (act_B & (stop_B | length_B)),
                  stopped=s['stopped'] | (act_B & stop_B),
                  paused=s['paused'] | (act_B & ~forced_B & (next_B == self._call_close) & ~stop_B & ~length_B),
                  steps=s['steps'] + 1)

    return jax.lax.while_loop(cond, body, dict(state, steps=jnp.zeros((), jnp.int32)))

  # ---- host side -----------------------------------------------------------------------------

  def _cache_shardings(self, batch: int) -> dict:
    """Every per-layer buffer of model_lib.cache_shapes split as kv_cache_sharding says; lengths replicated."""
    kv_heads = self.model_cfg.num_kv_heads
    per_buffer = lambda s: (sharding.kv_cache_sharding(self.mesh, batch, kv_heads, s.ndim) if s.ndim > 1
                            else sharding.replicated(self.mesh))
    return jax.tree.map(per_buffer, model_lib.cache_shapes(self.model_cfg, batch, 1))

  def _laid_out(self, cache: dict) -> dict:
    """The cache kept in init_cache's layout through prefill and decode (left to itself, XLA may
    return it replicated), so a kept cache is laid out as a new one and compiles the same."""
    return jax.lax.with_sharding_constraint(cache, self._cache_shardings(cache['lengths'].shape[0]))

  def init_cache(self, batch: int, length: int | None = None) -> dict:
    """Preallocated for the whole generation (length: cache_len) and laid out over the mesh
    (llm.sharding). The allocation is compiled once per shape: a server allocates whenever the
    number of requests it admits at once changes, and a new jit each time compiled each time
    (~50 ms on a CPU)."""
    length = length or self.cache_len
    if (batch, length) not in self._allocate:
      shapes = model_lib.cache_shapes(self.model_cfg, batch, length)
      zeros = lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
      self._allocate[batch, length] = jax.jit(zeros, out_shardings=self._cache_shardings(batch))
    return self._allocate[batch, length]()

  def _take_cache(self, batch: int) -> dict:
    """An empty cache: the kept one if it has this batch size, emptied (_emptied_impl), else a
    new one. The kept one is handed over: the jitted calls donate it."""
    cache, self._cache = self._cache, None
    if cache is None or cache['lengths'].shape[0] != batch:
      cache = None  # free the old one before allocating
      return self.init_cache(batch)
    # On one device XLA hands the layout back as P(): relabelled (no copy), the prefill compiled
    # for a new cache serves it.
    with self.context():
      return self._emptied(jax.device_put(cache, self._cache_shardings(batch)))

  def _emptied_impl(self, cache):
    """A kept cache with every row's length 0 and its values zeroed, in place. Attention never
    weighs a slot past a row's length, but XLA's products still multiply its value by that
    weight, 0, and 0 times a non-finite value (an earlier call's fp16 overflow) is NaN. Zeroing
    once a call costs one pass over the values; masking them costs one every decode step."""
    return self._laid_out(dict(cache, v=jax.tree.map(jnp.zeros_like, cache['v']),
                               lengths=jnp.zeros_like(cache['lengths'])))

  def generate(self, prompts: list[list[int]], max_new_tokens: int | list[int] = 128,
               temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               seed: int | list[int] = 0, stop_ids: list[int] | list[list[int]] | None = None,
               stream: Callable[[int, list[int]], None] | None = None,
               stream_every: int = 8) -> list[Completion]:
    """Samples a completion for each prompt (lists of ids, bos included).

    seed: one per row, or one int meaning seed + row index. stop_ids: shared or per row
    (default: chat_template.turn_stop_ids). stream(row, new_ids) is called as tokens arrive.
    """
    B = len(prompts)
    if not B:
      return []
    listed = lambda x: isinstance(x, (list, tuple))
    max_new = _per_row(max_new_tokens, B, 'max_new_tokens') if listed(max_new_tokens) else [max_new_tokens] * B
    seeds = _per_row(seed, B, 'seed') if listed(seed) else [seed + i for i in range(B)]
    if stop_ids is None:
      stop_ids = chat_template.turn_stop_ids(self.tokenizer)
    stops = _per_row(stop_ids, B, 'stop_ids') if stop_ids and listed(stop_ids[0]) else [stop_ids] * B
    longest = max(len(p) for p in prompts)
    if min(len(p) for p in prompts) < 1:
      raise ValueError('every prompt needs at least one token (bos)')
    if min(max_new) < 1:
      raise ValueError(f'max_new_tokens={min(max_new)}; each row needs at least 1')
    outside = [s for s in seeds if not 0 <= s < 2**32]  # each row's key is made from a uint32
    if outside:
      raise ValueError(f'seed {outside[0]} is outside [0, 2**32) (an int seed gives row i seed + i)')
    if stream_every < 1:
      raise ValueError(f'stream_every={stream_every}; decode at least 1 step between stream calls')
    too_long = [i for i, p in enumerate(prompts) if len(p) + max_new[i] > self.cache_len]
    if too_long:
      i = too_long[0]
      raise ValueError(f'prompt {i} ({len(prompts[i])} tokens) + max_new_tokens ({max_new[i]}) exceeds the '
                       f'cache ({self.cache_len} tokens); shorten them or raise cache_len')

    # Prefill all but each prompt's last token; the decode loop feeds that one and samples.
    P = min(_bucket(longest - 1), self.cache_len)
    tokens_BxP = np.zeros((B, P), np.int32)
    for i, p in enumerate(prompts):
      tokens_BxP[i, :len(p) - 1] = p[:-1]
    with self.context():
      cache = self._prefill(self.params, self._take_cache(B), jnp.asarray(tokens_BxP),
                            jnp.asarray([len(p) - 1 for p in prompts], jnp.int32))
    n_stop = max(len(s) for s in stops)
    out_len = min(_bucket(max(max_new)), self.cache_len)
    state = dict(
        cache=cache, token=jnp.asarray([p[-1] for p in prompts], jnp.int32),
        out=jnp.zeros((B, out_len), jnp.int32), out_forced=jnp.zeros((B, out_len), bool),
        n_out=jnp.zeros((B,), jnp.int32), max_new=jnp.asarray(max_new, jnp.int32),
        seeds=jnp.asarray(seeds, jnp.uint32),
        stop_ids=jnp.asarray([list(s) + [-1] * (n_stop - len(s)) for s in stops], jnp.int32),
        queue=jnp.zeros((B, _QUEUE), jnp.int32), queue_pos=jnp.zeros((B,), jnp.int32),
        queue_len=jnp.zeros((B,), jnp.int32), done=jnp.zeros((B,), bool), stopped=jnp.zeros((B,), bool),
        paused=jnp.zeros((B,), bool))
    knobs = (jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p))
    budget = jnp.int32(stream_every if stream else max(max_new) + 1)
    tool_calls, shown = [0] * B, [0] * B
    while True:
      with self.context():
        state = self._decode(self.params, state, budget, *knobs)
      n_out, paused = np.asarray(state['n_out']), np.asarray(state['paused'])
      if stream:
        out = np.asarray(state['out'])
        for i in range(B):
          if n_out[i] > shown[i]:
            stream(i, out[i, shown[i]:n_out[i]].tolist())
            shown[i] = int(n_out[i])
      if paused.any():
        state = self._run_tools(state, paused, tool_calls)
      elif np.asarray(state['done']).all():
        break
    self._cache = state['cache']
    out, forced = np.asarray(state['out']), np.asarray(state['out_forced'])
    stopped = np.asarray(state['stopped'])
    return [Completion(out[i, :n_out[i]].tolist(), forced[i, :n_out[i]].tolist(),
                       'stop' if stopped[i] else 'length', tool_calls[i]) for i in range(B)]

  def _open_call(self, row: list[int]) -> list[int] | None:
    """The tokens of the call the row's last <|tool_call|> opened, or None when no call is open:
    a close after an answered call must not run that call again with the new text glued on."""
    opened = max((k for k, t in enumerate(row) if t == self._call_open), default=-1)
    closed = max((k for k, t in enumerate(row) if t == self._call_close), default=-1)
    return row[opened + 1:] if opened > closed else None

  def _run_tools(self, state, paused_B, tool_calls):
    """Runs each paused row's tool call and queues the result tokens for the decode loop."""
    out, n_out = np.asarray(state['out']), np.asarray(state['n_out'])
    results = {i: self._tool_result(out[i, :n_out[i]].tolist()) for i in np.flatnonzero(paused_B)}
    for i in results:
      tool_calls[i] += 1
    return self._queue_results(state, results)

  def _tool_result(self, row: list[int]) -> list[int]:
    """The ids force-fed to a row paused at a tool call: the result of the call it closed. row:
    its output so far, the closing <|/tool_call|> last. Thread-safe: the server runs several at once."""
    call = self._open_call(row[:-1])
    result = NO_OPEN_CALL if call is None else tools_lib.run_tool(self.tools, self.tokenizer.decode(call))
    return chat_template.tool_result_ids(self.tokenizer, result)

  @staticmethod
  def _queue_results(state, results: dict[int, list[int]]) -> dict:
    """The state with results[i] queued for row i's decode loop and row i unpaused (host arrays);
    the other rows as they were: paused on a call of their own, or midway through their queue."""
    queue, queue_len, queue_pos, paused = (np.array(state[k]) for k in ('queue', 'queue_len', 'queue_pos', 'paused'))
    for i, ids in results.items():
      queue[i, :len(ids)] = ids
      queue_len[i], queue_pos[i], paused[i] = len(ids), 0, False
    return dict(state, queue=queue, queue_len=queue_len, queue_pos=queue_pos, paused=paused)
