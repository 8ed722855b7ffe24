"""Continuous batching: requests join and leave one running decode loop.

One thread owns the engine. Each pass it (1) takes waiting requests into free rows, (2) runs the
engine's jitted decode loop for a few steps over every row at once, (3) hands each request its
new text, frees the rows that finished or whose client went away, and starts the tool call of
each row that wrote one on a pool of threads (the engine's own tool step), feeding the results
of those done: a row waits for its tool (up to a sandboxed python call's wall time) while the
others decode on, and a call that ends within a few milliseconds joins the next pass. The
requests admitted in a pass are prefilled together into a cache of their own, as long as their
longest prompt (a power of two, few compiled shapes) and a power-of-two number of rows, and each
row is copied into its slot of the running cache, so the rows already decoding never recompute
anything and a short prompt's prefill attends over its own length, not the whole context.

The running batch (its KV cache and per-row state) has a power-of-two number of slots, the
smallest that holds the rows in flight, up to max_slots: one client decodes at batch 1 and
32 clients at batch 32. It grows at once and shrinks after a few passes; a resize moves the
live rows (their cache rows and state) into a batch of the new size in one jitted gather. Requests
wait in a queue for the next pass to take them into free rows; max_queue of them may wait beyond
the free rows, and a request past that is refused at once (QueueFull), after giving up the places
of requests whose clients left while they waited.
"""
import collections
import concurrent.futures
import dataclasses
import logging
import queue
import threading
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from llm.inference import engine as engine_lib
from llm.serve.text import TextStream

log = logging.getLogger(__name__)


class QueueFull(Exception):
  """max_queue requests already wait beyond the free slots."""


@dataclasses.dataclass
class Request:
  prompt: list[int]  # ids, bos included
  max_new: int
  stream: TextStream
  emit: Callable[[dict], None]  # called from the batcher's thread: {'text'} or {'finish', 'usage'}
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0
  stop_ids: tuple[int, ...] = ()
  cancelled: bool = False  # set by the client's side (it went away); the row is freed next pass

  def cancel(self):
    self.cancelled = True


# Per-row fields of the engine's decode state (Engine.generate builds the same dict), kept on the
# host between decode calls; the cache and the output buffer stay on the device.
_HOST_FIELDS = ('token', 'n_out', 'max_new', 'seeds', 'stop_ids', 'queue', 'queue_pos', 'queue_len', 'done',
                'stopped', 'paused')
_DEVICE_FIELDS = ('cache', 'out', 'out_forced')  # the rest of the decode state: on the device throughout
# Stop ids per row: chat_template.turn_stop_ids (<|end|>, eos, an imported model's own end ids:
# Llama 3 has three) or the tokenizer's stop ids for plain completions.
_STOPS = 8
_MIN_PREFILL = 16  # the shortest prefill (positions): shorter prompts share its compiled shape
_SHRINK_AFTER = 4  # passes the rows in flight must fit a smaller batch before it shrinks
_TOOL_WAIT_S = 0.05  # how long a pass in which every row waits for a tool waits for one to finish
# How long a pass waits for the tool calls it started: two of Python's 5 ms thread switch intervals,
# so that a call of microseconds ends within it even while another thread holds the interpreter.
_TOOL_START_WAIT_S = 0.01


def _knobs(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per-row temperature, top_k and top_p of an empty batch (greedy, no filters)."""
  return np.zeros(size, np.float32), np.zeros(size, np.int32), np.ones(size, np.float32)


def _power_of_two(n: int, cap: int) -> int:
  """The smallest power of two >= n, at most cap: batch sizes and prompt lengths, few compiled shapes."""
  return min(1 << max(n - 1, 0).bit_length(), cap)


class Batcher:

  def __init__(self, engine: engine_lib.Engine, max_slots: int = 32, max_queue: int = 64,
               steps_per_call: int = 8):
    """steps_per_call: decode steps between visits to the host (new text, new rows, tools)."""
    if max_slots < 1 or max_queue < 1 or steps_per_call < 1:
      raise ValueError(f'max_slots ({max_slots}), max_queue ({max_queue}) and steps_per_call ({steps_per_call}) '
                       'must be >= 1')
    self.engine, self.max_slots, self.max_queue, self.steps = engine, max_slots, max_queue, steps_per_call
    self.waiting: queue.Queue[Request] = queue.Queue()  # bounded by submit(): max_queue beyond the free rows
    self.rows: list[Request | None] = []  # the request in each slot of the running batch
    self.state = None  # the engine's decode state for len(self.rows) slots
    self.knobs = None  # per-row temperature, top_k, top_p
    self.shown: list[int] = []  # tokens of each row already handed to its request
    self.tool_calls: list[int] = []
    self.tool_runs: list[concurrent.futures.Future | None] = []  # each row's tool call under way, if any
    # A thread per slot (started as calls come): a row's call waits for no other row's to end, unless a
    # row freed while its call ran (a client that left) still holds a thread.
    self._tools = concurrent.futures.ThreadPoolExecutor(max_slots, thread_name_prefix='tool')
    self.batch_sizes = collections.Counter()  # decode calls per batch size
    self.prefill_sizes = collections.Counter()  # prefill calls per number of requests admitted together
    self.finished = collections.Counter()  # requests per finish reason (stop, length, cancelled)
    self._counting = threading.Lock()  # finished is counted on the batcher's thread and in submit()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, name='batcher', daemon=True)
    self._fits_smaller = 0  # consecutive passes whose rows fit a smaller batch
    self._resize = jax.jit(self._resize_impl)
    self._insert = jax.jit(self._insert_impl, donate_argnums=0)

  # ---- what the server calls -----------------------------------------------------------------

  def start(self):
    self._thread.start()

  def close(self):
    """Ends the loop after its current pass; closing again, or a batcher never started, is a no-op."""
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join()
    self._tools.shutdown(wait=False, cancel_futures=True)  # a call under way ends within its tool's limits

  def submit(self, request: Request):
    """Queues the request, unless max_queue requests already wait beyond the free rows (those
    the next pass takes in): then it first gives up the places of requests whose clients left
    while they waited (the loop would only drop them once a slot is free). Called from one
    thread (the server's event loop); the batcher's only takes requests out meanwhile."""
    if len(request.stop_ids) > _STOPS:
      raise ValueError(f'{len(request.stop_ids)} stop ids, at most {_STOPS}: raise _STOPS in {__name__}')
    full = lambda: self.waiting.qsize() - (self.max_slots - self.active) >= self.max_queue
    if full():
      with self.waiting.mutex:  # queue.Queue's own lock over its deque
        live = [r for r in self.waiting.queue if not r.cancelled]
        left = len(self.waiting.queue) - len(live)
        self.waiting.queue.clear()
        self.waiting.queue.extend(live)
      self._count('cancelled', left)
      if full():
        raise QueueFull(f'{self.active} requests running and {self.queued} waiting; retry later')
    self.waiting.put_nowait(request)

  def warm_up(self):
    """Compiles, before the first request, every shape the loop can reach: per batch size its
    decode loop and its resizes to the other sizes, and the prefill and insert of each number of
    newcomers (up to that size) and prompt length. Otherwise each new shape compiles when a
    request first needs it, while every request in flight waits (0.3-0.5 s a shape on a 2-core
    CPU). Call it before start()."""
    eng, sizes = self.engine, self._sizes()
    lengths = sorted({self._prefill_len(n) for n in range(eng.cache_len)})
    with eng.context():
      states = {}
      for size in sizes:
        decode = lambda state, knobs=_knobs(size): self._on_host(self._decode(state, knobs))  # as _step leaves it
        # Every row done: each decode call compiles and returns at once. The arrays' layouts as a
        # new batch, a decoded one and a prefilled one differ, and each is a compiled variant:
        # the calls follow a batch's first pass (prefill into a new batch, decode) and later ones.
        state = self._empty_state(size)
        for _ in range(2):
          for n in (n for n in sizes if n <= size):
            for P in lengths:  # slots out of range: nothing is written
              state['cache'] = self._prefill_rows(state['cache'], np.zeros((n, P), np.int32),
                                                  np.zeros(n, np.int32), np.full(n, size, np.int32))
          state = decode(decode(state))
        states[size] = state
      for size, state in states.items():
        for other in sizes:
          if other != size:
            for newcomers in (False, True):
              resized = dict(states[other], **self._resize({k: state[k] for k in _DEVICE_FIELDS},
                                                           jnp.asarray(np.full(other, -1, np.int32))))
              if newcomers:
                resized['cache'] = self._prefill_rows(resized['cache'], np.zeros((1, lengths[0]), np.int32),
                                                      np.zeros(1, np.int32), np.full(1, other, np.int32))
              jax.block_until_ready(self._decode(resized, _knobs(other)))
    # The loop goes on from a decoded batch of the smallest size, every row empty: a layout
    # compiled above (a new batch's would be one more variant).
    size = sizes[0]
    self.state, self.rows, self.shown, self.tool_calls = states[size], [None] * size, [0] * size, [0] * size
    self.tool_runs = [None] * size
    self.knobs = _knobs(size)

  def _sizes(self) -> list[int]:
    """The batch sizes the running batch may have (and the numbers of newcomers prefilled together)."""
    return sorted({_power_of_two(n, self.max_slots) for n in range(1, self.max_slots + 1)})

  def _prefill_len(self, positions: int) -> int:
    """The prefill length (compiled shape) for prompts of up to `positions` prefilled positions."""
    return min(max(_MIN_PREFILL, _power_of_two(positions, self.engine.cache_len)), self.engine.cache_len)

  @property
  def active(self) -> int:
    return sum(r is not None for r in self.rows)

  @property
  def queued(self) -> int:
    """Requests waiting for a slot whose clients are still there."""
    with self.waiting.mutex:
      return sum(not r.cancelled for r in self.waiting.queue)

  def _count(self, reason: str, n: int = 1):
    with self._counting:
      self.finished[reason] += n

  # ---- the loop ------------------------------------------------------------------------------

  def _loop(self):
    while not self._stop.is_set():
      try:
        if self._admit():
          self._step()
      except Exception:  # a bug must not take the server down: fail the rows in flight, go on
        log.exception('batcher pass failed; ending the requests in flight')
        for r in self.rows:
          if r is not None:
            r.emit({'error': 'internal error while generating'})
        self.rows, self.state = [], None

  def _admit(self) -> bool:
    """Takes waiting requests into free rows (waiting a little when nothing runs); resizes the
    batch to the rows in flight. Returns whether any row runs."""
    new, free = [], self.max_slots - self.active
    while len(new) < free:
      try:
        r = self.waiting.get(timeout=0.1) if not new and not self.active else self.waiting.get_nowait()
      except queue.Empty:
        break
      if r.cancelled:  # its client left while it waited
        self._count('cancelled')
      else:
        new.append(r)
    live = [i for i, r in enumerate(self.rows) if r is not None]
    size = _power_of_two(len(live) + len(new), self.max_slots)
    if not live and not new:
      return False  # the batch stays allocated for the next request
    # Grow at once; shrink once the rows have fit the smaller batch for a few passes, so requests
    # that end together and are followed by new ones do not shrink and regrow the batch.
    self._fits_smaller = self._fits_smaller + 1 if size < len(self.rows) else 0
    if size > len(self.rows) or self._fits_smaller > _SHRINK_AFTER:
      self._regroup(live, size)
      self._fits_smaller = 0
    free_rows = [i for i, r in enumerate(self.rows) if r is None][:len(new)]
    for i, r in zip(free_rows, new):
      self.rows[i], self.shown[i], self.tool_calls[i] = r, 0, 0  # from here a failure reaches r
    if new:
      self._start_rows(free_rows[:len(new)], new)
    return True

  def _regroup(self, live: list[int], size: int):
    """The live rows moved to slots 0..len(live)-1 of a batch of `size` slots."""
    index = np.full((size,), -1, np.int32)
    index[:len(live)] = live
    if self.state is None:
      self.state = self._empty_state(size)
      self.knobs = _knobs(size)
    else:
      with self.engine.context():
        device = self._resize({k: self.state[k] for k in _DEVICE_FIELDS}, jnp.asarray(index))
      take = lambda x: np.where(index.reshape((-1,) + (1,) * (x.ndim - 1)) >= 0, x[np.maximum(index, 0)],
                                np.zeros((), x.dtype))
      host = {k: take(np.asarray(self.state[k])) for k in _HOST_FIELDS}
      host['done'] = np.where(index >= 0, host['done'], True)
      self.state = dict(device, **host)
      self.knobs = tuple(take(k) for k in self.knobs)
    keep = lambda xs, empty: [xs[i] if i >= 0 else empty for i in index]
    self.rows, self.shown, self.tool_calls = keep(self.rows, None), keep(self.shown, 0), keep(self.tool_calls, 0)
    self.tool_runs = keep(self.tool_runs, None)

  def _resize_impl(self, device, index_N):
    taken = jax.tree.map(lambda x: jnp.take(x, jnp.maximum(index_N, 0), axis=0), device)
    cache = dict(taken['cache'], lengths=jnp.where(index_N >= 0, taken['cache']['lengths'], 0))
    return dict(taken, cache=self.engine._laid_out(cache))

  def _empty_state(self, size: int) -> dict:
    """Every row done (an empty slot); laid out as Engine.generate's state."""
    B, Q = size, engine_lib._QUEUE
    zeros = lambda *shape, dtype=np.int32: np.zeros(shape, dtype)
    out_len = self.engine.cache_len
    return dict(cache=self.engine.init_cache(B), out=jnp.zeros((B, out_len), jnp.int32),
                out_forced=jnp.zeros((B, out_len), bool), token=zeros(B), n_out=zeros(B), max_new=zeros(B),
                seeds=zeros(B, dtype=np.uint32), stop_ids=np.full((B, _STOPS), -1, np.int32), queue=zeros(B, Q),
                queue_pos=zeros(B), queue_len=zeros(B), done=np.ones(B, bool), stopped=zeros(B, dtype=bool),
                paused=zeros(B, dtype=bool))

  def _insert_impl(self, cache, new_cache, slots_N):
    """Row j of new_cache (P positions) written into the first P positions of slot slots_N[j] of
    cache, in place, the rest of the slot's values zeroed (Engine._emptied_impl says why); slots
    out of range (the padding rows) are dropped."""
    P = new_cache['k'][0].shape[-1]
    put_k = lambda big, rows: big.at[slots_N, :, :, :P].set(rows, mode='drop')  # [B, K, Dh, S]
    put_v = lambda big, rows: big.at[slots_N].set(  # [B, K, S, Dh]
        jnp.pad(rows, ((0, 0), (0, 0), (0, big.shape[2] - P), (0, 0))), mode='drop')
    put_row = lambda big, rows: big.at[slots_N].set(rows, mode='drop')  # lengths [B], a smeared k_prev [B, K, Dh]
    put = {'k': put_k, 'v': put_v}
    return self.engine._laid_out({name: jax.tree.map(put.get(name, put_row), cache[name], new_cache[name])
                                  for name in cache})

  def _start_rows(self, slots: list[int], requests: list[Request]):
    """Prefills the requests' prompts (all but each one's last token, which the decode loop feeds)
    in one call, into rows `slots` of the running batch."""
    eng, N = self.engine, _power_of_two(len(requests), self.max_slots)
    self.prefill_sizes[len(requests)] += 1
    P = self._prefill_len(max(len(r.prompt) for r in requests) - 1)
    tokens_NxP, lengths_N = np.zeros((N, P), np.int32), np.zeros((N,), np.int32)
    slots_N = np.full((N,), len(self.rows), np.int32)  # padding rows: out of range, dropped
    for j, (i, r) in enumerate(zip(slots, requests)):
      tokens_NxP[j, :len(r.prompt) - 1] = r.prompt[:-1]
      lengths_N[j], slots_N[j] = len(r.prompt) - 1, i
    with eng.context():
      self.state['cache'] = self._prefill_rows(self.state['cache'], tokens_NxP, lengths_N, slots_N)
    s = self.state
    for i, r in zip(slots, requests):
      s['token'][i], s['n_out'][i], s['max_new'][i], s['seeds'][i] = r.prompt[-1], 0, r.max_new, r.seed
      s['stop_ids'][i] = list(r.stop_ids) + [-1] * (_STOPS - len(r.stop_ids))
      s['queue_pos'][i] = s['queue_len'][i] = 0
      s['done'][i] = s['stopped'][i] = s['paused'][i] = False
      for knob, value in zip(self.knobs, (r.temperature, r.top_k, r.top_p)):
        knob[i] = value

  def _prefill_rows(self, cache, tokens_NxP, lengths_N, slots_N):
    """The prompts prefilled into a cache of their own, row j then copied into slot slots_N[j] of
    `cache` (numpy arguments, the way warm_up compiles them)."""
    eng = self.engine
    new_cache = eng._prefill(eng.params, eng.init_cache(*tokens_NxP.shape), jnp.asarray(tokens_NxP),
                             jnp.asarray(lengths_N))
    return self._insert(cache, new_cache, jnp.asarray(slots_N))

  @staticmethod
  def _on_host(state) -> dict:
    """The decode state with its per-row fields fetched to the host (numpy)."""
    return dict({k: state[k] for k in _DEVICE_FIELDS}, **{k: np.array(state[k]) for k in _HOST_FIELDS})

  def _decode(self, state, knobs):
    eng = self.engine
    return eng._decode(eng.params, state, jnp.int32(self.steps), *map(jnp.asarray, knobs))

  def _step(self):
    eng = self.engine
    self.batch_sizes[len(self.rows)] += 1
    with eng.context():
      state = self._decode(self.state, self.knobs)
    state = self._on_host(state)
    device, host = {k: state[k] for k in _DEVICE_FIELDS}, {k: state[k] for k in _HOST_FIELDS}
    out, n_out = np.asarray(state['out']), host['n_out']
    for i, r in enumerate(self.rows):
      if r is None:
        continue
      text = r.stream.feed(out[i, self.shown[i]:n_out[i]].tolist())
      self.shown[i] = int(n_out[i])
      if text:
        r.emit({'text': text})
      if r.cancelled or r.stream.stopped or host['done'][i]:
        reason = 'stop' if r.stream.stopped or host['stopped'][i] else 'length'
        tail = r.stream.finish()
        if tail:
          r.emit({'text': tail})
        reason = 'cancelled' if r.cancelled else reason
        self._count(reason)
        completion = r.stream.tokens_used() if r.stream.stopped else int(n_out[i])
        r.emit({'finish': reason,
                'usage': dict(prompt_tokens=len(r.prompt), completion_tokens=completion,
                              total_tokens=len(r.prompt) + completion, tool_calls=self.tool_calls[i])})
        host['done'][i], self.rows[i] = True, None
        if self.tool_runs[i] is not None:  # its result is not wanted
          self.tool_runs[i].cancel()
          self.tool_runs[i] = None
    self.state = dict(device, **host)
    self._run_tools(out, n_out)

  def _run_tools(self, out, n_out):
    """Starts the tool call of each row that paused at one on the pool, and queues the results of
    those done, unpausing their rows. When every row waits for a tool, it waits a little for one
    to finish rather than run empty decode calls."""
    started = []
    for i in np.flatnonzero(self.state['paused'] & ~self.state['done']):
      if self.tool_runs[i] is None:
        self.tool_runs[i] = self._tools.submit(self.engine._tool_result, out[i, :n_out[i]].tolist())
        started.append(self.tool_runs[i])
    # The calls just started have a moment to end: the calculator's (microseconds) then joins the next
    # pass, as when calls ran on this thread, instead of its row idling a whole pass; python's (up to
    # seconds) holds the other rows up no longer than the moment. Simpler than telling fast tools from
    # slow ones, which a tool's name alone does not (search indexes a folder at its first call).
    if started:
      concurrent.futures.wait(started, _TOOL_START_WAIT_S)
    under_way = [f for f in self.tool_runs if f is not None]
    if under_way and all(f is not None for r, f in zip(self.rows, self.tool_runs) if r is not None):
      concurrent.futures.wait(under_way, _TOOL_WAIT_S, concurrent.futures.FIRST_COMPLETED)
    results = {i: f.result() for i, f in enumerate(self.tool_runs) if f is not None and f.done()}
    for i in results:
      self.tool_runs[i] = None
      self.tool_calls[i] += 1
    if results:
      self.state = self.engine._queue_results(self.state, results)
