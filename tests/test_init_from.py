"""Starting from another run: the model must be the one that run holds, implementation choices aside."""
import json

import pytest

from llm import init_from
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
