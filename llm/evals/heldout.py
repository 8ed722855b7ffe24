"""Held-out problems, disjoint from what training generates by content, not only by seed.

A different seed does not make a different problem: the arithmetic generator draws from a
finite space ('What is 12 + 5?' comes out of many seeds), so every held-out set here drops the
items whose question text a training generator of the run produces:

- arithmetic: the SFT source `arithmetic` (conversations.arithmetic) of this run's seed and of
  every SFT run up its init_from chain, for as many conversations as those runs draw (twice
  that: fitting to the context may skip a few), and the RL task's training stream is already
  kept off the RL held-out set by the task itself (llm/rl/tasks.py);
- GSM8K: the test split minus any question that is also in the train split;
- preference prompts (the reward model's held-out pairs, RLHF's held-out prompts): those whose
  opening request an SFT, RLHF or reward model run up the init_from chain trained on (trained_requests).
"""
import functools
import itertools
import random
from pathlib import Path
from typing import Iterator

from llm import inference, init_from
from llm.data import conversations, gsm8k as gsm8k_data, preferences
from llm.rl import tasks as rl_tasks

_SEED_OFFSET = 10_000  # held-out draws start far from the training generator's seeds


@functools.cache
def generated_questions(seed: int, count: int) -> frozenset[str]:
  """The questions of the first `count` conversations conversations.arithmetic(seed) yields."""
  return frozenset(c[0]['content'] for c in itertools.islice(conversations.arithmetic(None, seed), count))


def _sft_draws(config) -> tuple[int, int]:
  """(seed, conversations drawn, with slack) of the arithmetic source of an SFT run of config."""
  sft = config.get('sft') or {}
  per_source = (sft.get('generated') or {}).get('arithmetic') or sft.get('max_per_source', 0)
  return config.seed, 2 * max(per_source, conversations.DEFAULT_GENERATED)


def lineage(config, needed_for: str = '') -> Iterator:
  """The run's config, then that of the run it started from (init_from), and so on up the chain.
  A parent not found is an error, not the chain's end: the held-out sets would keep what it trained
  on. needed_for: what the caller follows the chain for, said in that error (init_from.parent)."""
  return (c for _, c in _runs(config, needed_for))


def _runs(config, needed_for: str) -> Iterator[tuple[Path | None, object]]:
  """lineage's configs, each with its run's folder: None for config's own (it may not have run yet)."""
  visited, workdir = set(), None
  while config is not None:
    yield workdir, config
    workdir = init_from.parent(config, workdir, needed_for)
    done = workdir is None or workdir in visited
    visited.add(workdir)
    config = None if done else inference.read_config(workdir)


def training_questions(config) -> frozenset[str]:
  """Arithmetic questions SFT trained (or would train) on, for this run and its init_from chain."""
  return frozenset().union(*(generated_questions(*draws) for draws in {_sft_draws(c) for c in lineage(config)}))


def trained_requests(config, data_dir: Path, tokenizer) -> frozenset[str]:
  """The opening requests, as SFT's split keys them (conversations.request_key), of the conversations that SFT runs of
  config's init_from chain, config's own included, trained on from preferences.SFT_SOURCES: each
  source's training split as the run made it (fitted to its train.seq_len), all of it, whatever
  share of it the mixture weight drew (that draw hangs on every other source of the mixture); and
  of the preference prompts that RLHF and reward model runs up the chain trained on (_preference_split).
  config's own split of its prompts or pairs keeps its own held-out ones apart."""
  requests = set()
  for workdir, c in _runs(config, 'every run up the init_from chain is needed to rebuild what its SFT, RLHF and reward '
                                  'model runs trained on, so that those prompts stay out of the held-out preference '
                                  'prompts'):
    sft = c.get('sft') or {}
    mixture = {name: weight for name, weight in dict(sft.get('mixture') or {}).items()
               if name in preferences.SFT_SOURCES and weight > 0}
    if mixture:
      splits = conversations.load_mixture(data_dir, mixture, sft.val_fraction, c.seed, sft.get('max_per_source', 0),
                                          tokenizer, c.train.seq_len + 1)
      requests.update(conversations.request_key(conv) for train, _ in splits.values() for conv in train)
    split = workdir and _preference_split(c, workdir)
    if split:
      source, val_fraction = split
      train, _ = preferences.load(source, data_dir, val_fraction, 0)
      requests.update(conversations.request_key(p.chosen) for p in train)
  return frozenset(requests)


def _preference_split(c, workdir: Path) -> tuple[str, float] | None:
  """(source, val_fraction) of the real preference source whose training side the run of config c in
  workdir trained on: an RLHF run's prompts, split where it recorded when it started (a proxy of
  another val_fraction since splits elsewhere), a reward model's pairs; None for any other run, or
  gold's generated ones. All of that side counts, prompts too long for the run's window too: left
  out, one of those it never trained on costs a held-out prompt, no more."""
  if c.get('task') == 'rlhf' and c.rlhf.prompts != 'gold_topics':
    from llm.tasks import rlhf  # pylint: disable=import-outside-toplevel  (it imports this module)
    return c.rlhf.prompts, rlhf.started_split(workdir)
  if c.get('task') == 'reward_model' and c.reward_model.source != 'gold':
    return c.reward_model.source, c.reward_model.val_fraction
  return None


def arithmetic(count: int, seed: int, exclude: frozenset[str]) -> list[tuple[str, str]]:
  """(question, answer) pairs, 2- and 3-digit, one and two operations in turn, none of whose
  questions is in exclude or repeats an earlier one."""
  rng = random.Random(_SEED_OFFSET + seed)
  problems, seen = [], set(exclude)
  for i in itertools.count():
    if len(problems) == count:
      return problems
    question, _, answer = conversations.arithmetic_problem(rng, digits=2 + i % 2, ops=1 + (i // 2) % 2)
    if question not in seen:
      seen.add(question)
      problems.append((question, answer))


def without(problems: list, exclude: frozenset[str]) -> list:
  """RL problems (rl.tasks.Problem) whose question is not in exclude."""
  return [p for p in problems if rl_tasks.question_of(p) not in exclude]


def gsm8k_test(data_dir: Path, count: int) -> list[rl_tasks.Problem]:
  """The first `count` GSM8K test problems whose question is not in the train split."""
  train = frozenset(item.question for item in gsm8k_data.read(data_dir, 'train'))
  test_size = sum(1 for _ in gsm8k_data.read(data_dir, 'test'))
  return without(rl_tasks.make_task('gsm8k', data_dir).heldout(test_size), train)[:count]
