"""Training tasks. A task contributes its data and its loss; llm/train.py runs all of them.

To add a stage (sft, grpo, ...): write llm/tasks/<name>.py exposing a `TASK = Task(...)` and
list it in _MODULES. The loop does not change.
"""
import dataclasses
import importlib
from typing import Any, Callable, Iterator

_MODULES = {'pretrain': 'llm.tasks.pretrain', 'sft': 'llm.tasks.sft'}


@dataclasses.dataclass
class TaskData:
  tokenizer: Any  # llm.tokenizer.Tokenizer
  train_iter: Iterator[dict]  # checkpointable grain iterator of host-local numpy batches
  eval_sets: dict[str, list[dict]]  # name -> fixed batches (whole, every process holds all rows)
  facts: dict = dataclasses.field(default_factory=dict)  # about the data, copied into summary.json
  heldout: dict = dataclasses.field(default_factory=dict)  # examples for the task's final evaluate()


@dataclasses.dataclass(frozen=True)
class Task:
  # (config, workdir) -> TaskData
  data: Callable[..., TaskData]
  # (model, params, batch) -> (loss_sum, weight_sum); the loop divides, so accumulation is exact
  loss_fn: Callable
  # (config, fresh_state, abstract_state) -> state: e.g. load a pretrained model; identity here
  init_state: Callable = lambda config, state, abstract_state: state
  # (config, setup, params, task_data) -> dict of metrics for summary.json, run once at the end
  evaluate: Callable = lambda config, setup, params, data: {}


def get(name: str) -> Task:
  if name not in _MODULES:
    raise ValueError(f'config.task={name!r} is unknown; choose one of {sorted(_MODULES)}')
  return importlib.import_module(_MODULES[name]).TASK
