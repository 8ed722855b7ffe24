"""Preference pairs for reward models: (chosen, rejected) conversations that share a prompt.

Sources:
  hh_rlhf_harmless_base       Anthropic's human harmlessness judgements (whole dialogues);
  alpaca_eval_ai_preferences  GPT-4-Turbo's judgements of two models' answers to one instruction;
  gold                        the controlled setting (llm/rl/gold.py): generated responses
                              labelled by the gold rubric, gold_pairs of them, gold_noise flipped.
Real pairs are split by a hash of their prompt (all pairs of one prompt land on the same side,
the order of the file does not matter); gold pairs have their own held-out topics. Every pair is
rendered with the chat template and scored at its final <|end|>; a pair either side of which
does not fit in seq_len tokens is dropped (and counted), or with truncate its long responses are
cut to fit, the turn closed with <|end|>.
"""
import dataclasses
import json
from pathlib import Path

import numpy as np

from llm import chat_template, files
from llm.data import conversations, sources
from llm.rl import gold, reward_model
from llm.rl.tasks import Problem

SOURCES = ('hh_rlhf_harmless_base', 'alpaca_eval_ai_preferences', 'gold')
VAL_FRACTION = 0.1  # the share of a real source's prompts held out, unless reward_model.val_fraction says otherwise
# SFT conversation sources (llm/data/conversations.py) that open with the real sources' prompts: hh-rlhf's
# chosen dialogues, its red-team requests refused, AlpacaEval's instructions answered by GPT-4.
SFT_SOURCES = ('hh_chosen', 'refusals', 'alpaca_gpt4')
# Which runs up an init_from chain count as having trained on a preference prompt (llm.evals.heldout.trained_requests).
TRAINED_BY = (f'SFT on sft.mixture sources {", ".join(SFT_SOURCES)}, RLHF on its training prompts, a reward model on '
              'its training pairs')


# Where each real source lives under the data dir, and what its records hold (for the messages about a
# file that does not hold them).
HH_FILE = 'hh_rlhf_harmless_base/test.jsonl.gz'
ALPACA_FILES = 'alpaca_eval_ai_preferences/*/annotations.json'
READS = {'hh_rlhf_harmless_base': HH_FILE, 'alpaca_eval_ai_preferences': ALPACA_FILES.split('/', 1)[0]}  # gold: none
HH_FORMAT = ("JSONL records whose 'chosen' and 'rejected' are dialogues '\\n\\nHuman: ...\\n\\nAssistant: ...' "
             'that end in different Assistant turns')
ALPACA_FORMAT = ("a JSON list of records with the strings 'instruction', 'output_1' and 'output_2' and the number "
                 "'preference' (1: output_1 won, 2: output_2, 1.5: a tie)")


@dataclasses.dataclass(frozen=True)
class Pair:
  chosen: list[dict]  # a conversation ending with the preferred assistant turn
  rejected: list[dict]  # the same prompt, ending with the other assistant turn
  margin: float = 0.0  # how much better chosen is, where the source knows (gold's gap); 0 otherwise


def _string(record: dict, field: str, path: Path, number: int, expected: str) -> str:
  """record[field], which must be a string: else a ValueError naming the file, the record and the field."""
  if field not in record:
    raise ValueError(f'{path}: record {number} has no field {field!r} (keys: {sorted(record)}); the file should hold '
                     f'{expected}')
  if not isinstance(record[field], str):
    raise ValueError(f"{path}: record {number}'s {field!r} is a {type(record[field]).__name__}, not a string; the "
                     f'file should hold {expected}')
  return record[field]


def hh_pairs(data_dir: Path) -> list[Pair]:
  path = sources.require(Path(data_dir) / HH_FILE, 'preference source hh')
  out = []
  for number, record in enumerate(sources.read_jsonl(path), 1):
    chosen, rejected = (conversations.hh_dialogue(_string(record, side, path, number, HH_FORMAT))
                        for side in ('chosen', 'rejected'))
    if chosen and rejected and chosen != rejected:
      out.append(Pair(chosen, rejected))
  return out


def alpaca_pairs(data_dir: Path) -> list[Pair]:
  """preference 1 means output_1 won, 2 output_2; ties (1.5) and unjudged records are skipped."""
  folder, pattern = ALPACA_FILES.split('/', 1)
  root = sources.require(Path(data_dir) / folder, 'preference source alpaca_eval')
  out = []
  for path in sorted(root.glob(pattern)):
    records = files.read_json(path, f'fetch it again; it holds {ALPACA_FORMAT}')
    if not isinstance(records, list):
      raise ValueError(f'{path} holds a JSON {type(records).__name__}, not a list: it should hold {ALPACA_FORMAT}')
    for number, record in enumerate(records, 1):
      if not isinstance(record, dict):
        raise ValueError(f'{path}: record {number} is a {type(record).__name__}, not an object: the file should hold '
                         f'{ALPACA_FORMAT}')
      if record.get('preference') in (None, '') or not record.get('output_1') or not record.get('output_2'):
        continue
      preference = record['preference']
      if isinstance(preference, bool) or not isinstance(preference, (int, float)):
        raise ValueError(f'{path}: record {number} has preference {preference!r}, not a number: 1 means output_1 '
                         'won, 2 output_2, 1.5 a tie')
      if preference == 1.5:
        continue
      first, second = (_string(record, side, path, number, ALPACA_FORMAT).strip() for side in ('output_1', 'output_2'))
      won, lost = (first, second) if preference < 1.5 else (second, first)
      user = {'role': 'user', 'content': _string(record, 'instruction', path, number, ALPACA_FORMAT).strip()}
      out.append(Pair([user, {'role': 'assistant', 'content': won}], [user, {'role': 'assistant', 'content': lost}]))
  return out


def _gold_pair(p: gold.Pair) -> Pair:
  return Pair(p.prompt + [{'role': 'assistant', 'content': p.chosen}],
              p.prompt + [{'role': 'assistant', 'content': p.rejected}], p.gold_margin)


def _prompt(pair: Pair) -> str:
  """The pair's prompt (its conversation before the judged response), as the split keys it."""
  return json.dumps(pair.chosen[:-1], sort_keys=True)


def split(pairs: list[Pair], val_fraction: float) -> tuple[list[Pair], list[Pair]]:
  """(train, val) by a hash of each pair's prompt (llm.data.sources.split_documents), duplicates
  removed. All pairs of one prompt land on one side: a source that judges several answers to one
  prompt (AlpacaEval pits each model against the same GPT-4-Turbo answer) would otherwise hold out
  prompts, and the very answers, that training saw."""
  by_text = {json.dumps(dataclasses.asdict(p), sort_keys=True): p for p in pairs}
  by_prompt: dict[str, list[Pair]] = {}
  for text in sorted(by_text):  # sorted: the order within a prompt does not depend on the file's
    p = by_text[text]
    by_prompt.setdefault(_prompt(p), []).append(p)
  train, val = sources.split_documents(list(by_prompt), val_fraction, 0)
  return [p for prompt in train for p in by_prompt[prompt]], [p for prompt in val for p in by_prompt[prompt]]


def load(source: str, data_dir: Path | str, val_fraction: float, seed: int, gold_pairs: int = 0,
         gold_noise: float = 0.0, gold_val_pairs: int = 1000) -> tuple[list[Pair], list[Pair]]:
  """(train, val) pairs of one source. Gold validation pairs are never noisy, so held-out
  accuracy there is agreement with the truth."""
  if source == 'gold':
    if gold_pairs <= 0:
      raise ValueError('reward_model.source=gold needs reward_model.gold_pairs > 0 (e.g. 1000, 4000, 16000)')
    return ([_gold_pair(p) for p in gold.pairs(gold_pairs, seed, gold_noise)],
            [_gold_pair(p) for p in gold.pairs(gold_val_pairs, 10**6 + seed, heldout=True)])
  readers = {'hh_rlhf_harmless_base': (hh_pairs, HH_FILE, HH_FORMAT),
             'alpaca_eval_ai_preferences': (alpaca_pairs, ALPACA_FILES, ALPACA_FORMAT)}
  if source not in readers:
    raise ValueError(f'reward_model.source={source!r} is unknown; choose one of {SOURCES}')
  read, where, expected = readers[source]
  pairs = read(Path(data_dir))
  if not pairs:
    raise ValueError(f'no preference pairs in {Path(data_dir) / where}: source {source} reads {expected}')
  if len({_prompt(p) for p in pairs}) == 1:
    raise ValueError(f'{Path(data_dir) / where}: all {len(pairs)} preference pairs share one prompt, which leaves none '
                     'to hold out (the split keeps all pairs of a prompt on one side); give pairs of 2 or more prompts')
  return split(pairs, val_fraction)


def without_requests(pairs: list[Pair], requests: frozenset[str]) -> list[Pair]:
  """The pairs whose prompt does not open with one of requests (llm.evals.heldout.trained_requests),
  compared as SFT's split groups them (conversations.request_key), so a copy in other case or
  punctuation of a trained request is left out too."""
  return [p for p in pairs if conversations.request_key(p.chosen) not in requests]


def gold_seen_topic_pairs(train: list[Pair], count: int, seed: int) -> list[Pair]:
  """count gold-labelled pairs about the training topics that are not among `train` (true labels):
  held out in the usual sense, where load()'s gold validation also holds the topics out."""
  responses = lambda p: frozenset((json.dumps(p.chosen), json.dumps(p.rejected)))  # a flipped label is the same pair
  trained = {responses(p) for p in train}
  fresh = [_gold_pair(p) for p in gold.pairs(2 * count, 2 * 10**6 + seed)]
  return [p for p in fresh if responses(p) not in trained][:count]


def _fitted(tokenizer, conversation: list[dict], seq_len: int, truncate: bool) -> list[int] | None:
  """The conversation's ids when they fit; else, with truncate, its final response cut so that the
  whole fits, the turn closed with <|end|> (the prompt whole, at least one response token); else None."""
  ids = chat_template.render(tokenizer, conversation)[0]
  if len(ids) <= seq_len:
    return ids
  if not truncate or len(chat_template.render_prompt(tokenizer, conversation[:-1])) + 2 > seq_len:
    return None
  return ids[:seq_len - 1] + [tokenizer.special_id('<|end|>')]


def render(pairs: list[Pair], tokenizer, seq_len: int, truncate: bool = False) -> tuple[dict, int]:
  """Pairs -> arrays {chosen, rejected: [N, seq_len] ids; chosen_end, rejected_end: [N] scoring
  positions; chosen_len, rejected_len: [N] tokens in the final assistant turn (whole, before any
  cut); margin: [N]}, and how many pairs were dropped for not fitting. A pair longer than seq_len
  is dropped, or with truncate its longer responses are cut to fit (a prompt too long is dropped)."""
  end_id = tokenizer.special_id('<|end|>')
  kept = {'chosen': [], 'rejected': [], 'chosen_len': [], 'rejected_len': [], 'margin': []}
  dropped = 0
  for p in pairs:
    sides = [_fitted(tokenizer, c, seq_len, truncate) for c in (p.chosen, p.rejected)]
    if None in sides:
      dropped += 1
      continue
    kept['margin'].append(p.margin)
    for name, conv, ids in zip(('chosen', 'rejected'), (p.chosen, p.rejected), sides):
      kept[name].append(ids)
      kept[f'{name}_len'].append(len(tokenizer.encode(conv[-1]['content'])))
  out = {}
  for name in ('chosen', 'rejected'):
    out[name], out[f'{name}_end'] = reward_model.pad_rows(kept[name], seq_len, tokenizer.pad_id, end_id,
                                                          tokenizer.special_id('<|assistant|>'))
    out[f'{name}_len'] = np.asarray(kept[f'{name}_len'], np.int32)
  out['margin'] = np.asarray(kept['margin'], np.float32)
  return out, dropped


def length_baseline(rendered: dict) -> float:
  """Pairwise accuracy of 'the longer response (in tokens) is the chosen one'; a tie counts half."""
  c, r = rendered['chosen_len'], rendered['rejected_len']
  return float(np.mean((c > r) + 0.5 * (c == r))) if len(c) else float('nan')


class PromptTask:
  """A real preference source's prompts (each pair's conversation before the judged response) as an
  RL task for task=rlhf (llm.rl.tasks.RLTask): training prompts from the training pairs, held-out
  ones from the held-out pairs of the split at val_fraction (the proxy's reward_model.val_fraction:
  the same split the reward model used), less those opening with one of `trained` (the requests the
  policy trained on up its init_from chain, llm.evals.heldout.trained_requests; how many prompts: left_out). Prompts
  that leave fewer than `room` tokens of seq_len for the response are skipped. No verifier and no
  gold: RLHF on them is measured by the proxy and the KL only."""

  def __init__(self, source: str, data_dir, tokenizer, seq_len: int, room: int, val_fraction: float,
               trained: frozenset[str] = frozenset()):
    self.name, self.val_fraction = source, val_fraction
    fits = lambda messages: len(chat_template.render_prompt(tokenizer, messages)) + room <= seq_len
    train, val = load(source, data_dir, val_fraction, 0)
    fresh = without_requests(val, trained)
    self.left_out = len({_prompt(p) for p in val}) - len({_prompt(p) for p in fresh})
    if not fresh:
      raise ValueError(f'{source}: the runs up the policy\'s init_from chain trained on the opening requests of all '
                       f'{self.left_out} held-out prompts ({TRAINED_BY}); start from runs that did not, or use a '
                       'proxy of a larger reward_model.val_fraction')
    self._train, self._val = ([p.chosen[:-1] for p in pairs if fits(p.chosen[:-1])] for pairs in (train, fresh))
    # The split keeps a prompt's pairs together, so heldout(count) would give alpaca's prompts 3 times each.
    self._val = list({json.dumps(m, sort_keys=True): m for m in self._val}.values())
    if not self._train or not self._val:
      raise ValueError(f'{source}: no prompt leaves {room} tokens of train.seq_len={seq_len} for the response; '
                       'raise train.seq_len or lower grpo.max_new_tokens')

  def train_problems(self, seed: int):
    rng = np.random.default_rng(seed)
    while True:
      for i in rng.permutation(len(self._train)):
        yield Problem(self._train[i], answer='', meta={})

  def heldout(self, count: int) -> list:
    return [Problem(m, answer='', meta={}) for m in self._val[:count]]

  def verify(self, completion_text: str, problem) -> bool:
    raise NotImplementedError(f'{self.name} has no verifiable answer; rlhf scores it with a reward model')
