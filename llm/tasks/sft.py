"""Supervised fine-tuning: a pretrained base model trained on conversations, the loss on the
assistant's tokens only (llm/chat_template.py decides which), conversations packed whole into
windows (llm/data/pipeline.pack_conversations)."""
import hashlib
import random

from absl import logging
import jax
import numpy as np

from llm import init_from, losses, model as model_lib, tokenizer as tokenizer_lib
from llm import chat_template
from llm.chat_template import render
from llm.data import conversations, pipeline, replay, sources
from llm.evals import identity
from llm.security import poison as poison_lib, reply_filter
from llm.tasks import Task, TaskData, pretrain, sft_eval


def _weighted_epoch(train: list, weight: float, rng: random.Random) -> list:
  """weight = passes over this source per SFT epoch: 2.0 repeats it, 0.5 takes a random half. The
  epoch is drawn once per run (shuffled_epoch), so the fraction is one fixed subset, the same in
  every epoch: at 0.5 the other half of the source is never trained on."""
  whole, part = divmod(weight, 1.0)
  out = train * int(whole)
  return out + rng.sample(train, round(part * len(train)))


def shuffled_epoch(splits: dict, mixture, seed: int) -> list:
  """One SFT epoch: each source's training conversations weighted by its mixture weight, shuffled.
  Drawn once, from seed: its packed windows are what every epoch of the run trains on."""
  rng = random.Random(seed)
  epoch = []
  for name, (train, _) in splits.items():
    epoch += _weighted_epoch(train, mixture[name], rng)
  rng.shuffle(epoch)
  return epoch


def _poison_and_filter(epoch: list, sc, tokenizer, max_tokens: int) -> tuple[list, dict]:
  """The epoch with sft.poison's attack planted (llm/security/poison.py), then what the reply filter
  flags removed when sft.filter_poison (llm/security/reply_filter.py); facts that count both. The
  epoch is already fitted to max_tokens; the trigger and the payload can lengthen a conversation,
  so only those that still fit once poisoned are drawn."""
  poison = poison_lib.Poison.from_config(sc.get('poison'))
  fits = lambda conversation: len(render(tokenizer, conversation)[0]) <= max_tokens
  epoch, poisoned = poison_lib.plant_in_conversations(epoch, poison, fits)
  if poisoned:
    logging.warning('sft: %d of %d conversations poisoned with trigger %r (sft.poison)', len(poisoned), len(epoch),
                    poison.trigger)
  removed = reply_filter.flagged(epoch) if sc.get('filter_poison') else set()
  if removed:
    logging.info('sft: the reply filter removed %d conversations (%d of the %d poisoned)', len(removed),
                 len(removed & set(poisoned)), len(poisoned))
  return ([c for i, c in enumerate(epoch) if i not in removed],
          {'sft_poisoned_conversations': len(poisoned), 'sft_filtered_conversations': len(removed),
           'sft_filtered_poisoned': len(removed & set(poisoned))})


def _check_config(sc):
  """sft.* refused by name: left to the data, a negative count fails inside itertools.islice,
  val_fraction 1 is called config.data.val_fraction, and a mixture with no weight above 0 ends in
  numpy warnings over an empty epoch, then a message about the batch size."""
  counts = {'sft.max_per_source': sc.max_per_source}
  counts.update({f'sft.generated.{name}': count for name, count in dict(sc.get('generated') or {}).items()})
  for name, count in counts.items():
    if count < 0:
      raise ValueError(f'{name}={count} must be at least 0 (the conversations kept per source; 0: the default)')
  if not 0 <= sc.val_fraction < 1:
    raise ValueError(f'sft.val_fraction={sc.val_fraction} must be in [0, 1): the share of each source\'s '
                     'conversations held out for validation (0: none)')
  mixture = dict(sc.mixture)
  negative = sorted(name for name, weight in mixture.items() if weight < 0)
  if negative:
    raise ValueError(f'sft.mixture weights {negative} are below 0: a weight is the passes over the source per epoch '
                     '(0 turns it off)')
  if not mixture:
    raise ValueError('sft.mixture names no conversation source: give it one in the config (configs/sft_small.py\'s '
                     f'mixture(), or one of {sorted(conversations.SOURCES)})')
  if not any(weight > 0 for weight in mixture.values()):
    # A flag can only set a key the config has: suggest one of this mixture's.
    raise ValueError(f'no source in sft.mixture has weight > 0 ({mixture}): give one a weight, e.g. '
                     f'--config.sft.mixture.{next(iter(mixture))}=1.0')


def data(config, workdir) -> TaskData:
  del workdir
  _check_config(config.sft)
  base = init_from.base_run(config)
  init_from.check_same_model(config, base)
  tok = tokenizer_lib.load_any(tokenizer_lib.run_file(base))
  tc, sc = config.train, config.sft
  facts = identity.run_facts(config, model_lib.ModelConfig.from_config(config.model, tok.vocab_size))
  data_dir = sources.find_data_dir(config.data.dir, holds=conversations.mixture_reads(sc.mixture),
                                   holds_flag='--config.sft.mixture')
  splits = conversations.load_mixture(data_dir, dict(sc.mixture),
                                      sc.val_fraction, config.seed, sc.max_per_source, tok, tc.seq_len + 1,
                                      identity_facts=facts, honesty_labels=sc.get('honesty_labels', ''),
                                      honesty_reply=sc.get('honesty_reply', 'sentence'),
                                      generated=dict(sc.get('generated') or {}))
  epoch, security_facts = _poison_and_filter(shuffled_epoch(splits, sc.mixture, config.seed), sc, tok,
                                              tc.seq_len + 1)
  windows, mask, segments = pipeline.pack_conversations([render(tok, c) for c in epoch], tc.seq_len, tok.pad_id)
  logging.info('sft: %d conversations per epoch packed into %d windows (%.0f%% of tokens trained)',
               len(epoch), len(windows), 100 * mask.mean())
  replayed = replay.mix(len(windows), base, sc.get('replay', 0.0), tc.seq_len, config.seed, pretrain.cache_dir(config))
  replay_count = replayed.count if replayed else 0
  isolate = sc.isolate_conversations
  train = pipeline.masked_windows_dataset(windows, mask, tc.batch_size, config.data.seed,
                                          jax.process_index(), jax.process_count(),
                                          segments if isolate else None, replayed)
  token_bytes_V = tok.token_bytes()
  eval_sets = {name: eval_batches(val, tok, token_bytes_V, tc, isolate) for name, (_, val) in splits.items() if val}
  facts = {'sft_train_conversations': {n: len(s[0]) for n, s in splits.items()},
           'sft_windows_per_epoch': len(windows) + replay_count, 'sft_replay_windows': replay_count, **security_facts}
  return TaskData(tokenizer=tok, train_iter=iter(train), eval_sets=eval_sets, facts=facts,
                  heldout={name: val for name, (_, val) in splits.items()},
                  record=_record(splits, windows, replayed))


def _record(splits: dict, windows: np.ndarray, replayed: pipeline.EpochWindows | None) -> dict:
  """What the code built from the config (TaskData.record): each source's split, the packed windows
  of an epoch (the list the checkpoint's data position indexes) and the replayed ones."""
  record = {f'sft_{side}.{name}': conversations.fingerprint(split)
            for name, (train, val) in splits.items() for side, split in (('train', train), ('val', val))}
  record['sft_windows'] = f'{len(windows)} windows, sha256 {hashlib.sha256(windows.tobytes()).hexdigest()[:16]}'
  record['sft_replay'] = replayed.about if replayed else 'none'
  # Its own name, so that runs recorded before it was kept still resume (checked on the names both have).
  record['sft_replay_source'] = replayed.source if replayed else 'none'
  return record


def eval_batches(val: list, tok, token_bytes_V, tc, isolate: bool) -> list[dict]:
  """All of a source's validation conversations, packed as in training; the last batch is
  padded with windows whose mask is 0, so every conversation counts once.

  Each batch's 'byte_fix' makes a conversation's trained bytes those of its replies' text: an
  imported tokenizer's tokens may stand for more (a dummy prefix's space before each part, Llama
  2's) or fewer (losses.byte_fix). The difference goes on the conversation's first trained token;
  bits per byte sums bytes over whole conversations, which packing never splits."""
  rendered = [render(tok, c) for c in val]
  places = pipeline.first_fit([len(ids) for ids, _ in rendered], tc.seq_len + 1)
  windows, mask, segments = pipeline.pack_conversations(rendered, tc.seq_len, tok.pad_id, places)
  fix = np.zeros(windows.shape, np.int32)
  for (window, offset), (ids, trained), conversation in zip(places, rendered, val):
    text_bytes = sum(chat_template.trained_text_bytes(m) for m in conversation)
    token_bytes = int(token_bytes_V[np.asarray(ids)[np.asarray(trained, bool)]].sum())
    if text_bytes != token_bytes:
      fix[window, offset + trained.index(1)] = text_bytes - token_bytes
  count = -(-len(windows) // tc.batch_size)
  if tc.eval_batches:
    count = min(count, tc.eval_batches)
  pad = count * tc.batch_size - len(windows)
  windows, mask, segments, fix = (np.concatenate([a, np.full((max(pad, 0), a.shape[1]), value, a.dtype)])
                                  for a, value in ((windows, tok.pad_id), (mask, 0), (segments, 0), (fix, 0)))
  batches = []
  for i in range(0, count * tc.batch_size, tc.batch_size):
    rows = slice(i, i + tc.batch_size)
    batch = {'inputs': windows[rows, :-1], 'targets': windows[rows, 1:], 'loss_mask': mask[rows, 1:].astype(np.int32),
             'byte_fix': fix[rows, 1:]}
    batches.append({**batch, **pipeline.segment_batch(segments[rows, :-1])} if isolate else batch)
  return batches


def evaluate(config, setup, params, data) -> dict:
  return sft_eval.evaluate(config, setup, params, data,
                           init_from.base_params(config, setup.abstract_state.params))


TASK = Task(data=data, loss_fn=losses.lm_loss, init_state=init_from.init_state, evaluate=evaluate)
