"""Reward model training in the shared loop: the Transformer with a scalar head (model.head =
'scalar'), its trunk from config.init_from (an SFT run), its head fresh, trained with the
Bradley-Terry loss on preference pairs (llm/rl/reward_model.py, llm/data/preferences.py).

Held-out pairs of a real source leave out those whose opening request an SFT, RLHF or reward model
run up the init_from chain trained on (llm.evals.heldout.trained_requests; counted in summary.json's
rm_val_left_out_trained): the trunk has seen those dialogues, and the chosen reply with them.

Every eval point logs held-out pairwise accuracy, mean margin and loss to metrics.jsonl
(rm_val_*; the gold setting also rm_val_seen_topics_*, held-out pairs about the training topics,
where rm_val_* holds the topics out too); summary.json adds the same at the end and the
length-only baseline on the same held-out pairs (*_length_baseline), the bar a reward model has
to clear.
"""
import functools

import jax
import numpy as np

from llm import init_from, sharding, tokenizer as tokenizer_lib
from llm.data import pipeline, preferences, sources
from llm.evals import heldout
from llm.rl import reward_model
from llm.tasks import Task, TaskData

_PAIR_KEYS = ('chosen', 'rejected', 'chosen_end', 'rejected_end', 'margin')


def _config_check(config):
  if config.model.head != 'scalar':
    raise ValueError(f"task=reward_model needs --config.model.head=scalar (got {config.model.head!r})")
  rm = config.reward_model
  # Here, by name: left to the data, no held-out pairs read as too short a train.seq_len, and the
  # split calls its fraction config.data.val_fraction.
  if rm.source == 'gold' and rm.gold_val_pairs < 1:
    raise ValueError(f'reward_model.gold_val_pairs={rm.gold_val_pairs} leaves no held-out pairs to measure the '
                     'reward model on; set it to 1 or more (e.g. 1000)')
  if rm.source != 'gold' and not 0 < rm.val_fraction < 1:
    raise ValueError(f'reward_model.val_fraction={rm.val_fraction} must be in (0, 1): the share of '
                     f'{rm.source} pairs held out to measure the reward model on (e.g. 0.1)')
  if rm.use_margin and rm.source != 'gold':
    raise ValueError(f'reward_model.use_margin needs per-pair margins, which only source=gold has '
                     f'(source={rm.source!r}); set use_margin=False')


def _check_enough(config, train: int, val: int, dropped: int):
  """A batch of training pairs and at least one held-out pair, or an error saying what left fewer: pairs too
  long for train.seq_len only where some were dropped (an empty or unreadable source is refused by
  preferences.load, where it is read)."""
  rm, tc = config.reward_model, config.train
  if train >= tc.batch_size and val:
    return
  counts = f'{rm.source}: {train} training and {val} held-out pairs'
  if dropped:
    raise ValueError(f'{counts} fit in train.seq_len={tc.seq_len} tokens ({dropped} longer were dropped); raise '
                     'train.seq_len' + ('' if rm.truncate else ' or set reward_model.truncate=True') +
                     f', or lower train.batch_size={tc.batch_size}')
  more = 'raise reward_model.gold_pairs or ' if rm.source == 'gold' else ''
  raise ValueError(f'{counts}, fewer than a batch of train.batch_size={tc.batch_size}: {more}lower train.batch_size')


def data(config, workdir) -> TaskData:
  del workdir
  _config_check(config)
  base = init_from.base_run(config)
  init_from.check_same_model(config, base)
  tok = tokenizer_lib.load_any(tokenizer_lib.run_file(base))
  rm, tc = config.reward_model, config.train
  data_dir = sources.find_data_dir(config.data.dir, holds=preferences.READS.get(rm.source, ''),
                                   holds_flag='--config.reward_model.source')
  train_pairs, val_pairs = preferences.load(rm.source, data_dir, rm.val_fraction, config.seed, rm.gold_pairs,
                                            rm.gold_noise, rm.gold_val_pairs)
  # Held out from the trunk too: it may tell a dialogue its SFT trained on, chosen reply and all, by familiarity.
  trained = frozenset() if rm.source == 'gold' else heldout.trained_requests(config, data_dir, tok)
  fresh = preferences.without_requests(val_pairs, trained)
  left_out, val_pairs = len(val_pairs) - len(fresh), fresh
  if not val_pairs:
    raise ValueError(f'{rm.source}: the runs up the init_from chain of init_from={config.init_from} trained on the '
                     f'opening requests of all {left_out} held-out pairs ({preferences.TRAINED_BY}); start from runs '
                     'that did not, or raise reward_model.val_fraction')
  train, train_dropped = preferences.render(train_pairs, tok, tc.seq_len, rm.truncate)
  val, val_dropped = preferences.render(val_pairs, tok, tc.seq_len, rm.truncate)
  heldout_sets = {'rm_val': val}
  if rm.source == 'gold':  # also held-out pairs of the training topics (gold's validation holds topics out)
    seen = preferences.gold_seen_topic_pairs(train_pairs, rm.gold_val_pairs, config.seed)
    heldout_sets['rm_val_seen_topics'] = preferences.render(seen, tok, tc.seq_len, rm.truncate)[0]
  _check_enough(config, len(train['chosen']), len(val['chosen']), train_dropped + val_dropped)
  train_iter = pipeline.shuffled_batches(
      len(train['chosen']), lambda ids, epoch: {k: train[k][ids] for k in _PAIR_KEYS}, tc.batch_size,
      config.data.seed, jax.process_index(), jax.process_count())
  facts = {'rm_source': rm.source, 'rm_train_pairs': len(train['chosen']), 'rm_val_pairs': len(val['chosen']),
           'rm_dropped_too_long': train_dropped + val_dropped, 'rm_val_left_out_trained': left_out,
           **{f'{name}_length_baseline': preferences.length_baseline(pairs) for name, pairs in heldout_sets.items()}}
  return TaskData(tokenizer=tok, train_iter=iter(train_iter), eval_sets={}, facts=facts, heldout=heldout_sets)


def init_state(config, state, abstract_state):
  """The trunk from config.init_from (its lm head, if any, left there); the scalar head fresh."""
  trunk = {k: v for k, v in abstract_state.params.items() if k != 'reward_head'}
  return state.replace(params={**state.params, **init_from.base_params(config, trunk)})


def heldout_metrics(config, setup, params, data, cache: dict) -> dict:
  """Pairwise accuracy (ties wrong), mean margin r_c - r_r and BT loss on every pair of each
  held-out set (rm_val_*; gold also rm_val_seen_topics_*)."""
  metrics = {}
  for name, val in data.heldout.items():
    if not len(val['chosen']):
      continue
    diff = _score_differences(config, setup, params, val, cache)
    metrics.update({f'{name}_accuracy': float((diff > 0).mean()), f'{name}_margin': float(diff.mean()),
                    f'{name}_loss': float(np.logaddexp(0.0, -diff).mean())})
    if np.any(val['margin'] > 0):  # gold: how accuracy grows with the pair's gold gap
      metrics.update({f'{name}_accuracy_gap_{lo}': acc for lo, acc in accuracy_by_gap(diff, val['margin']).items()})
  return metrics


GAP_EDGES = (0.1, 0.2, 0.4, 0.8)  # lower edges of the gold-gap buckets (gold pairs have gaps >= 0.1)


def accuracy_by_gap(diff_N, gap_N) -> dict:
  """Pairwise accuracy (ties wrong) of the pairs whose gold gap lies in [edge, next edge), per
  lower edge; a bucket with no pairs is left out. Near-ties are where a proxy errs."""
  buckets = {lo: (gap_N >= lo) & (gap_N < hi) for lo, hi in zip(GAP_EDGES, GAP_EDGES[1:] + (np.inf,))}
  return {lo: float((diff_N[inside] > 0).mean()) for lo, inside in buckets.items() if inside.any()}


def _score_differences(config, setup, params, val: dict, cache: dict) -> np.ndarray:
  """r_chosen - r_rejected of every pair, in blocks of train.batch_size pairs (the last one
  padded, the padding not counted)."""
  B = config.train.batch_size
  if 'fn' not in cache:
    cache['fn'] = jax.jit(lambda p, b: reward_model.pair_scores(setup.model, p, b),
                          out_shardings=sharding.replicated(setup.mesh))
  n, procs, me = len(val['chosen']), jax.process_count(), jax.process_index()
  pad = -n % B
  diffs = []
  with setup.context():
    for i in range(0, n + pad, B):
      rows = np.minimum(np.arange(i, i + B), n - 1)[me * B // procs:(me + 1) * B // procs]  # this process's share
      block = sharding.global_batch({k: val[k][rows] for k in _PAIR_KEYS}, setup.mesh)
      r_c, r_r = cache['fn'](params, block)
      diffs.append(np.asarray(r_c) - np.asarray(r_r))
  return np.concatenate(diffs)[:n]


def final_metrics(config, setup, params, data, cache: dict) -> dict:
  """The held-out metrics for summary.json: those of the last eval point when it evaluated these
  very parameters (the loop always evaluates the last step), else measured now (a finished run
  resumed)."""
  last_params, last = cache.get('last', (None, None))
  return last if last_params is params else heldout_metrics(config, setup, params, data, cache)


def make_task(config) -> Task:
  cache = {}  # the compiled held-out forward, and the last eval point's (params, metrics)

  def periodic(config, setup, params, data):
    cache['last'] = (params, heldout_metrics(config, setup, params, data, cache))
    return cache['last'][1]

  return Task(data=data, loss_fn=reward_model.make_loss_fn(config.reward_model), init_state=init_state,
              periodic_eval=periodic, evaluate=functools.partial(final_metrics, cache=cache))

