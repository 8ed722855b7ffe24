"""Pretraining: next-token prediction on packed raw text; with config.init_from, continued pretraining
from that run's parameters (and its tokenizer, which config.tokenizer.path must name)."""
import os
from pathlib import Path

import jax

from llm import init_from, losses, tokenizer as tokenizer_lib
from llm.data import pipeline, prepare
from llm.tasks import Task, TaskData


def cache_dir(config) -> Path:
  configured = config.data.cache_dir or os.environ.get('LLM_CACHE_DIR', '')
  return Path(configured or Path.home() / '.cache' / 'llm')


def data(config, workdir) -> TaskData:
  del workdir
  tc = config.train
  prepared = prepare(config, cache_dir(config))
  train = pipeline.train_dataset(prepared.train_tokens, tc.seq_len, tc.batch_size, config.data.seed,
                                 jax.process_index(), jax.process_count(), config.data.repeat_fraction,
                                 config.data.repeat_random, config.data.repeat_vocab,
                                 config.data.copy_task, config.data.copy_alphabet_min)
  max_batches = tc.eval_batches or None
  val = pipeline.eval_batches(prepared.val_tokens, tc.seq_len, tc.batch_size, max_batches, prepared.val_byte_fixes)
  facts = {'val_bytes_per_token': round(prepared.val_bytes_per_token, 4),
           'train_tokens_available': int(len(prepared.train_tokens)), **prepared.facts}
  return TaskData(tokenizer=prepared.tokenizer, train_iter=iter(train), eval_sets={'val': val},
                  facts=facts)


def init_state(config, state, abstract_state):
  """A fresh model, or config.init_from's parameters when set (the same model and tokenizer)."""
  if not config.init_from:
    return state
  base = init_from.base_run(config)
  init_from.check_same_model(config, base)
  tokenizer = tokenizer_lib.run_file(base)
  if not config.tokenizer.path or Path(config.tokenizer.path).read_bytes() != tokenizer.read_bytes():
    raise ValueError(f'continued pretraining from {base} must keep its tokenizer: set '
                     f'--config.tokenizer.path={tokenizer}')
  return init_from.init_state(config, state, abstract_state)


TASK = Task(data=data, loss_fn=losses.lm_loss, init_state=init_state)
