"""Starting from another run: the model must be the one that run holds, implementation choices aside."""
import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from llm import inference, init_from
from llm.config import base_config


def _base_run(tmp_path, **model):
  base = base_config()
  base.model.update(model)
  (tmp_path / 'config.json').write_text(json.dumps(json.loads(base.to_json_best_effort())))
  return tmp_path


def test_how_the_model_computes_may_differ_from_the_base_run(tmp_path):
  base = _base_run(tmp_path, remat='none', dtype='float32')
  config = base_config()
  config.model.update(dict(remat='full', dtype='bfloat16'))
  if 'attention' in config.model:
    config.model.attention = 'xla' if config.model.attention != 'xla' else 'cpu_kernel'
  init_from.check_same_model(config, base)  # no error


def test_what_the_model_holds_must_match_the_base_run(tmp_path):
  base = _base_run(tmp_path)
  config = base_config()
  config.model.update(dict(dim=config.model.dim * 2, scan_layers=not config.model.scan_layers, remat='full'))
  with pytest.raises(ValueError, match=r"differs from .*config.json in \['dim', 'scan_layers'\]"):
    init_from.check_same_model(config, base)


def test_only_a_reward_model_starts_with_another_head(tmp_path):
  base = _base_run(tmp_path)  # a language model
  config = base_config()
  config.task, config.model.head = 'reward_model', 'scalar'
  init_from.check_same_model(config, base)  # no error: its scalar head starts fresh on the base's trunk
  for task in ('sft', 'grpo', 'pretrain'):
    config.task = task
    with pytest.raises(ValueError, match=f'task={task} trains a language model: set --config.model.head=lm'):
      init_from.check_same_model(config, base)


@pytest.mark.parametrize('task', ['sft', 'grpo', 'rlhf'])
def test_a_language_model_task_refuses_a_reward_model_base(tmp_path, task):
  base = _base_run(tmp_path, head='scalar')
  config = json.loads((base / 'config.json').read_text())
  (base / 'config.json').write_text(json.dumps({**config, 'task': 'reward_model', 'init_from': 'runs/sft_gold'}))
  config = base_config()
  config.task = task
  with pytest.raises(ValueError, match=r"is a reward model \(model.head='scalar'\) with no language-model head for "
                                       rf'task={task} to start from: .* \(--config.init_from=runs/sft_gold\)'):
    init_from.check_same_model(config, base)


def test_parameters_the_base_checkpoint_lacks_are_named_not_left_as_placeholders(tmp_path):
  """A base run without the lm_head the model asks for (an untied model from a tied one's
  checkpoint): one error naming it, not a ShapeDtypeStruct that fails later inside a trace."""
  manager = ocp.CheckpointManager((tmp_path / 'checkpoints').absolute(),
                                  item_handlers={'state': ocp.StandardCheckpointHandler()},
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(
      {'params': {'embed': {'embedding': np.ones((4, 2), np.float32)}}})))
  manager.wait_until_finished()
  manager.close()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  asked = {'embed': {'embedding': jax.ShapeDtypeStruct((4, 2), np.float32, sharding=device)},
           'lm_head': jax.ShapeDtypeStruct((2, 4), np.float32, sharding=device)}
  with pytest.raises(inference.RunError, match=r'checkpoints/7 holds no lm_head of the model asked for'):
    inference.restore_params(tmp_path / 'checkpoints', asked)
  del asked['lm_head']
  params, step = inference.restore_params(tmp_path / 'checkpoints', asked)
  assert step == 7 and (np.asarray(params['embed']['embedding']) == 1).all()


def _stopped_run(tmp_path, steps: int, checkpoints: list[str]):
  """A run's files as training leaves them before its end: config.json, its tokenizer, and
  checkpoint folders (orbax names one by its step once the save is complete)."""
  base = _base_run(tmp_path)
  config = json.loads((base / 'config.json').read_text())
  config['train']['steps'] = steps
  (base / 'config.json').write_text(json.dumps(config))
  (base / 'tokenizer.model').write_bytes(b'')
  for name in checkpoints:
    (base / 'checkpoints' / name).mkdir(parents=True)
  config = base_config()
  config.init_from = str(base)
  return base, config


def test_an_unfinished_run_is_refused_naming_the_step_it_stopped_at(tmp_path):
  base, config = _stopped_run(tmp_path, 30, ['10', '20.orbax-checkpoint-tmp-1'])
  with pytest.raises(ValueError, match=r'unfinished run \(no summary.json\): it stopped at step 10 of train.steps=30; '
                                       r'rerun its training command to finish it, or with --config.train.steps=10'):
    init_from.base_run(config)
  (base / 'summary.json').write_text('{}')  # what train.run writes last
  assert init_from.base_run(config) == base


def test_a_run_without_a_checkpoint_is_refused(tmp_path):
  _, config = _stopped_run(tmp_path, 30, [])
  with pytest.raises(ValueError, match='unfinished run .* with no checkpoint yet'):
    init_from.base_run(config)


def test_an_imported_run_counts_as_finished(tmp_path):
  """llm.hf import writes one checkpoint, step 0, and import.json: no summary.json."""
  base, config = _stopped_run(tmp_path, 30, ['0'])
  (base / 'import.json').write_text('{}')
  assert init_from.base_run(config) == base
