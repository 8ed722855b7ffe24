"""Training tasks. A task contributes its data and its loss; llm/train.py runs all of them.

To add a stage: write llm/tasks/<name>.py exposing `TASK = Task(...)` (or `make_task(config)`)
and list it in _MODULES. The loop does not change.
"""
import dataclasses
import importlib
from typing import Any, Callable, Iterator

_MODULES = {'pretrain': 'llm.tasks.pretrain', 'sft': 'llm.tasks.sft', 'grpo': 'llm.tasks.grpo',
            'reward_model': 'llm.tasks.reward_model', 'rlhf': 'llm.tasks.rlhf'}


@dataclasses.dataclass
class TaskData:
  tokenizer: Any  # llm.tokenizer.Tokenizer
  train_iter: Iterator[dict]  # checkpointable grain iterator of host-local numpy batches
  eval_sets: dict[str, list[dict]]  # name -> fixed batches (whole, every process holds all rows)
  facts: dict = dataclasses.field(default_factory=dict)  # about the data, copied into summary.json
  heldout: dict = dataclasses.field(default_factory=dict)  # examples for the task's final evaluate()
  # What the code built from the config, that the config's fields cannot tell ({name: JSON value},
  # e.g. the count and hash of SFT's splits): llm/train.py keeps the one a run started with and
  # refuses a resume that builds another, whose checkpoint's data position would index other data.
  record: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Task:
  # (config, workdir) -> TaskData
  data: Callable[..., TaskData]
  # (model, params, batch) -> (loss_sum, weight_sum, aux); the loop divides, so accumulation is exact
  loss_fn: Callable
  # (config, fresh_state, abstract_state) -> state: e.g. load a pretrained model; identity here
  init_state: Callable = lambda config, state, abstract_state: state
  # (config, setup, params, task_data) -> dict of metrics for summary.json, run once at the end
  evaluate: Callable = lambda config, setup, params, data: {}
  # (config, setup, params, task_data) -> dict, at every eval point (keep it cheap)
  periodic_eval: Callable = lambda config, setup, params, data: {}
  # (task_data, setup, state, step) -> (host batch, host metrics): batches that depend on the
  # current parameters (RL rollouts). None: next(task_data.train_iter), no metrics.
  next_batch: Callable | None = None
  # Config fields beyond llm/train.py's _DATA_STREAM that decide this task's stream of batches, so
  # that a resume with other values is refused (e.g. RLHF's prompts kept by the room they leave)
  data_stream: tuple[str, ...] = ()
  # workdir -> (the TaskData.record of a run started before llm/train.py kept one, where it was read:
  # what the task kept then, RLHF's rlhf_split.json, or a default); None: nothing, so its data cannot be checked
  record_before: Callable = lambda workdir: None


def get(config) -> Task:
  """The task config.task names: its module's TASK, or make_task(config) where the task's
  pieces depend on the config."""
  if config.task not in _MODULES:
    raise ValueError(f'config.task={config.task!r} is unknown; choose one of {sorted(_MODULES)}')
  module = importlib.import_module(_MODULES[config.task])
  return module.make_task(config) if hasattr(module, 'make_task') else module.TASK
