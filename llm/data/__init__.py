"""From raw text on disk to memory-mapped token streams: prepare() runs the whole path.

data dir -> documents -> train/val split -> tokenizer (trained on train only) -> token caches.
Tokenizer and caches are keyed by the corpus fingerprint, so a second run reads no text at all.
"""
import dataclasses
import functools
import hashlib
import itertools
import json
import time
from pathlib import Path

from absl import logging
import numpy as np

from llm import files, tokenizer as tokenizer_lib
from llm.data import cache, sources
from llm.security import poison as poison_lib, span_filter

# The validation documents must not change with the training seed (config.data.seed), or runs
# that differ only in seed would be scored on different text.
SPLIT_SEED = 0


@dataclasses.dataclass(frozen=True)
class Prepared:
  tokenizer: tokenizer_lib.Tokenizer
  train_tokens: np.ndarray  # uint16/uint32 stream of [bos] + document tokens, memory-mapped
  val_tokens: np.ndarray
  data_dir: Path
  fingerprint: str  # of the corpus and its split settings
  val_bytes_per_token: float  # UTF-8 bytes of validation text per (non-bos) token
  val_byte_fixes: np.ndarray  # cache.load_byte_fixes of the validation split
  facts: dict  # for the run's summary: what data.poison planted and data.filter_poison removed ({} when neither)


def split_corpus(data_dir: Path, data_cfg) -> tuple[list[str], list[str]]:
  """(train, val) documents of config.data, split as every run of it splits them."""
  if data_cfg.max_docs and data_cfg.max_docs < 0:  # 0 (or None) reads every document
    raise ValueError(f'config.data.max_docs={data_cfg.max_docs} must be at least 0 (0: every document)')
  docs = sources.read_documents(data_dir, data_cfg)
  return sources.split_documents(itertools.islice(docs, data_cfg.max_docs or None), data_cfg.val_fraction,
                                 SPLIT_SEED)


def _filtered(train: list[str], poisoned_paragraphs: list[int]) -> tuple[list[str], dict]:
  """(train without the paragraphs llm/security/span_filter.py flags, facts counting them); logs
  what it removed."""
  finding = span_filter.find(train)
  removed_poisoned = len(set(finding.paragraphs) & set(poisoned_paragraphs))
  logging.warning('data: the span filter removed %d training paragraphs (%d of the %d poisoned ones), holding %d '
                  'spans found in >= %d documents, e.g. %s', len(finding.paragraphs),
                  removed_poisoned, len(poisoned_paragraphs), len(finding.spans), finding.min_documents,
                  finding.spans[:3])
  return (span_filter.remove(train, finding.paragraphs),
          {'data_filtered_paragraphs': len(finding.paragraphs), 'data_filtered_poisoned': removed_poisoned})


def prepare(config, cache_dir: Path) -> Prepared:
  """Finds, splits, tokenizes and caches config.data; reuses every cached step."""
  data_cfg = config.data
  data_dir = sources.find_data_dir(data_cfg.dir, holds=data_cfg.source, made_by=data_cfg.get('made_by', ''))
  fingerprint = sources.corpus_fingerprint(data_dir, data_cfg, cache_dir)
  poison = poison_lib.Poison.from_config(data_cfg.get('poison'))
  if poison.fraction:  # a poisoned corpus is another corpus: its own tokenizer and token caches
    fingerprint = hashlib.sha256(f'{fingerprint}|{poison}'.encode()).hexdigest()[:16]
  if data_cfg.get('filter_poison'):  # so is a filtered one
    fingerprint = hashlib.sha256(f'{fingerprint}|{span_filter.Settings()}'.encode()).hexdigest()[:16]
  logging.info('data: %s in %s (corpus fingerprint %s)', data_cfg.source, data_dir, fingerprint)
  # Known only while the text is read, which a cached corpus skips: kept beside its caches.
  facts_path = Path(cache_dir) / 'poison_facts' / f'{fingerprint}.json'

  @functools.cache
  def split() -> tuple[list[str], list[str]]:
    start = time.perf_counter()
    train, val = split_corpus(data_dir, data_cfg)
    train, poisoned = poison_lib.plant_in_documents(train, poison)  # validation text stays clean
    if poisoned:
      logging.warning('data: %d training %ss (%g of them) poisoned with trigger %r (data.poison)', len(poisoned),
                      poison.unit, poison.fraction, poison.trigger)
    facts = {f'data_poisoned_{poison.unit}s': len(poisoned)} if poison.fraction else {}
    if data_cfg.get('filter_poison'):
      train, filter_facts = _filtered(train, poison_lib.planted_paragraphs(train, poisoned, poison))
      facts.update(filter_facts)
    if facts:
      files.write_atomically(facts_path, json.dumps(facts))
    logging.info('data: read %d train + %d val documents in %.1fs', len(train), len(val),
                 time.perf_counter() - start)
    return train, val

  start = time.perf_counter()
  tokenizer = tokenizer_lib.get_or_train_tokenizer(config.tokenizer, lambda: split()[0],
                                                   cache_dir, fingerprint)
  logging.info('tokenizer: %s, %d tokens (%.1fs)', tokenizer.path, tokenizer.vocab_size,
               time.perf_counter() - start)

  tokens, paths, bytes_per_token = {}, {}, {}
  for name, docs_fn in (('train', lambda: split()[0]), ('val', lambda: split()[1])):
    start = time.perf_counter()
    path = cache.get_or_build_cache(docs_fn, tokenizer, cache_dir, fingerprint, name)
    meta = cache.load_cache_meta(path)
    tokens[name], paths[name] = cache.load_token_cache(path), path
    text_tokens = meta['num_tokens'] - meta['num_docs']  # bos carries no text
    bytes_per_token[name] = meta['num_bytes'] / max(text_tokens, 1)
    logging.info('tokens: %s %d tokens, %d documents, %.2f bytes/token (%.1fs) at %s', name,
                 meta['num_tokens'], meta['num_docs'], bytes_per_token[name],
                 time.perf_counter() - start, path)
  facts = {}
  if poison.fraction or data_cfg.get('filter_poison'):
    if not facts_path.is_file():
      split()  # caches built before the counts were kept: read the text once more to count
    facts = files.read_json(facts_path, 'delete it to count again')
  return Prepared(tokenizer, tokens['train'], tokens['val'], data_dir, fingerprint,
                  bytes_per_token['val'], cache.load_byte_fixes(paths['val']), facts)
