"""Each stage past pretraining searches for the data dir that holds what it reads, as pretraining
does for config.data.source: a ./data made by llm.data.download for one corpus must not hide the
SFT mixture files, GSM8K or the preference data that only ../shared/data holds."""
from pathlib import Path

import pytest

import tiny_config
from llm.data import conversations, preferences
from llm.evals import heldout
from llm.rl import tasks as rl_tasks
from llm.security import filter_recall
from llm.tasks import grpo, reward_model, rlhf, sft


SEARCH = {'data.dir': ''}  # no data dir set: the stage searches ./data, then ../shared/data


class _Reached(Exception):
  """The stage went on to read its data, from the dir it was given (args[0])."""


def _stop_at(monkeypatch, module, name: str):
  """Replaces module.name, the stage's first reader of its data dir, by one that stops the stage
  there with the data dir it was passed (its first Path argument)."""
  def reached(*args, **kwargs):
    raise _Reached(next(a for a in args if isinstance(a, Path)))
  monkeypatch.setattr(module, name, reached)


def _sft(pretrained, cache_dir, monkeypatch):
  _stop_at(monkeypatch, conversations, 'load_mixture')
  config = tiny_config.tiny_sft_config(cache_dir, init_from=str(pretrained), **SEARCH, **{'sft.mixture.gsm8k': 1.0})
  return lambda: sft.data(config, None)


def _grpo(pretrained, cache_dir, monkeypatch):
  _stop_at(monkeypatch, rl_tasks, 'make_task')
  config = tiny_config.tiny_grpo_config(cache_dir, init_from=str(pretrained), **SEARCH, **{'grpo.task': 'gsm8k'})
  return lambda: grpo.data(config, pretrained, grpo.Rollouts())


def _reward_model(pretrained, cache_dir, monkeypatch):
  _stop_at(monkeypatch, preferences, 'load')
  config = tiny_config.tiny_reward_model_config(cache_dir, init_from=str(pretrained),
                                                **SEARCH, **{'reward_model.source': 'hh_rlhf_harmless_base'})
  return lambda: reward_model.data(config, None)


def _rlhf(pretrained, cache_dir, monkeypatch):
  _stop_at(monkeypatch, heldout, 'trained_requests')
  monkeypatch.setattr(rlhf, '_proxy_val_fraction', lambda config: preferences.VAL_FRACTION)  # no proxy run to read
  config = tiny_config.tiny_rlhf_config(cache_dir, init_from=str(pretrained),
                                        **SEARCH, **{'rlhf.prompts': 'hh_rlhf_harmless_base', 'rlhf.proxy': 'unread'})
  return lambda: rlhf.data(config, pretrained, rlhf._State())


def _filter_recall(pretrained, cache_dir, monkeypatch):
  _stop_at(monkeypatch, conversations, 'load_mixture')
  config = tiny_config.tiny_sft_config(cache_dir, **SEARCH, **{'sft.mixture.gsm8k': 1.0})
  return lambda: filter_recall._sft_table(config, [0.01])


# stage: (what builds its run, a path under the data dir it reads, the flag that names that source)
STAGES = {
    'sft': (_sft, 'gsm8k', '--config.sft.mixture'),
    'grpo': (_grpo, 'gsm8k', '--config.grpo.task'),
    'reward_model': (_reward_model, 'hh_rlhf_harmless_base/test.jsonl.gz', '--config.reward_model.source'),
    'rlhf': (_rlhf, 'hh_rlhf_harmless_base/test.jsonl.gz', '--config.rlhf.prompts'),
    'filter_recall': (_filter_recall, 'gsm8k', '--config.sft.mixture'),
}


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
  """cwd: a checkout whose ./data holds one downloaded corpus, beside an empty ../shared/data."""
  monkeypatch.delenv('LLM_DATA_DIR', raising=False)
  (tmp_path / 'checkout' / 'data' / 'fineweb_edu').mkdir(parents=True)
  (tmp_path / 'shared' / 'data').mkdir(parents=True)
  monkeypatch.chdir(tmp_path / 'checkout')
  return tmp_path / 'checkout'


@pytest.mark.parametrize('stage', STAGES)
def test_a_stage_reads_the_shared_data_dir_when_only_that_holds_its_source(stage, checkout, pretrained, cache_dir,
                                                                           monkeypatch):
  make, source, _ = STAGES[stage]
  run = make(pretrained, cache_dir, monkeypatch)
  path = checkout.parent / 'shared' / 'data' / source
  path.parent.mkdir(parents=True, exist_ok=True)
  if path.suffix:
    path.touch()
  else:
    path.mkdir()
  with pytest.raises(_Reached) as reached:
    run()
  assert reached.value.args[0] == Path('../shared/data')


@pytest.mark.parametrize('stage', STAGES)
def test_a_stage_whose_source_no_data_dir_holds_names_it_and_the_flag(stage, checkout, pretrained, cache_dir,
                                                                      monkeypatch):
  make, source, flag = STAGES[stage]
  run = make(pretrained, cache_dir, monkeypatch)
  with pytest.raises(FileNotFoundError) as error:
    run()
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith(f'no data dir holds {source} (looked in {checkout}/data, {checkout}/../shared/data)')
  assert message.endswith(f'or fix {flag}')
