"""Rewards for GRPO: named components, weighted and summed, each kept for logging.

A component is fn(completion_text, completion_tokens, finished, problem, task) -> float, where
completion_text is the assistant's own text (tasks.assistant_text), completion_tokens the
tokens the model sampled in it (the loss mask's: force-fed tool results left out), and finished
whether the turn ended: the engine stopped on <|end|> or another id a turn ends at
(chat_template.turn_stop_ids: eos, an imported model's own end-of-turn id).

- correctness: 1.0 when task.verify() accepts the final answer, else 0.0. It does not look at
  `finished`: a cut-off completion whose last number is right still scores (format does not).
- format: 1.0 when the turn is well formed, else 0.0. Well formed means exactly two things:
  the turn was closed (finished), and its text holds a number the verifier can read
  (conversations.extract_answer finds one; 'The answer is 42.' has one).
- length_penalty: -max(0, completion_tokens - length_target) / length_scale: nothing up to the
  target, then a cost that grows linearly, without a floor. A long tool result costs nothing: the
  model did not write it.
"""
import functools
from typing import Callable

import numpy as np

from llm.data import conversations
from llm.rl import tasks

RewardFn = Callable[[str, int, bool, tasks.Problem, tasks.RLTask], float]


def correctness(completion_text: str, completion_tokens: int, finished: bool,
                problem: tasks.Problem, task: tasks.RLTask) -> float:
  return float(task.verify(completion_text, problem))


def well_formed(completion_text: str, completion_tokens: int, finished: bool,
                problem: tasks.Problem, task: tasks.RLTask) -> float:
  return float(finished and conversations.extract_answer(completion_text) is not None)


def length_penalty(completion_text: str, completion_tokens: int, finished: bool,
                   problem: tasks.Problem, task: tasks.RLTask, *, target: int,
                   scale: float) -> float:
  return -max(0, completion_tokens - target) / scale


COMPONENTS = ('correctness', 'format', 'length_penalty')


def _components(length_target: int, length_scale: float) -> dict[str, RewardFn]:
  return {'correctness': correctness, 'format': well_formed,
          'length_penalty': functools.partial(length_penalty, target=length_target,
                                              scale=length_scale)}


def compute_rewards(completions: list[tuple[str, int, bool]], problems: list[tasks.Problem],
                    task: tasks.RLTask, weights: dict[str, float], length_target: int,
                    length_scale: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """(total, components) for N completions, each (text, n_tokens, finished) answering the
  problem at the same index. total[i] = sum over components of weights.get(name, 0) * value;
  components holds every component's float32 [N] values, weighted or not, for logging."""
  unknown = sorted(set(weights) - set(COMPONENTS))
  if unknown:
    raise ValueError(f'unknown reward components {unknown}; known: {list(COMPONENTS)}')
  if len(completions) != len(problems):
    raise ValueError(f'{len(completions)} completions for {len(problems)} problems')
  if length_scale <= 0:
    raise ValueError(f'length_scale={length_scale}: must be > 0')
  components = {
      name: np.array([fn(text, n_tokens, finished, problem, task)
                      for (text, n_tokens, finished), problem in zip(completions, problems)],
                     dtype=np.float32)
      for name, fn in _components(length_target, length_scale).items()}
  total = np.zeros(len(completions), np.float32)
  for name, values in components.items():
    total += np.float32(weights.get(name, 0.0)) * values
  return total, components
