"""A Hugging Face model directory -> a run directory every stage can init_from or sample.

    RUN/config.json          this project's config, config.model mapped from the HF config.json
    RUN/tokenizer.hf.json    the model's own tokenizer (llm/interop/tokenizer.py)
    RUN/checkpoints/0/       orbax, the train state's 'params' subtree only (no optimizer state)
    RUN/import.json          where it came from, and the chat tokens added

Each parameter is placed straight onto the mesh, shard by shard, with make_array_from_callback:
a device's shard is cut from the tensors of only the layers it holds, read from the safetensors
memory map, so the host never holds more than one parameter's worth of one layer range. The
mesh is FSDP over every device (written to config.json too), unless the caller passes one.
"""
import dataclasses
import json
from pathlib import Path

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from llm import config as config_lib, inference, model as model_lib, sharding
from llm.interop import architectures, params as params_lib
from llm.interop.errors import UnsupportedCheckpoint
from llm.interop.tokenizer import FILE_NAME as TOKENIZER_FILE, HFTokenizer
from llm.interop.weights import Weights

_VOCAB_PARAMS = {'embed/embedding': 0, 'lm_head': 1}  # parameter -> its vocabulary axis


def read_hf_config(hf_dir: Path) -> dict:
  path = hf_dir / 'config.json'
  if not path.is_file():
    raise FileNotFoundError(f'{path} is missing: --hf_dir must be a Hugging Face model directory')
  try:
    hf = json.loads(path.read_text())
  except ValueError as e:
    raise ValueError(f'{path} is not valid JSON: {e}') from None
  if not isinstance(hf, dict):
    raise ValueError(f'{path} holds a {type(hf).__name__}, not a config object')
  if {'task', 'model'} <= hf.keys():  # what llm.main writes; a Hugging Face config has neither
    raise ValueError(f'{hf_dir} is an llm run (its config.json holds our task and model), not a Hugging Face model '
                     f'directory: it needs no import; start from it with --config.init_from={hf_dir}, or sample, '
                     f'chat with, evaluate or serve it with --workdir={hf_dir}')
  return hf


def _check_fields(fields: dict, path: Path):
  """What config.json gave, before any use: each field of its default's kind, numbers above 0."""
  defaults = config_lib.base_config().model
  for name, value in fields.items():
    kind = type(defaults[name]) if name in defaults else int
    if kind in (int, float):
      ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool) and value > 0
      want = f'a positive {kind.__name__}'
    else:
      ok, want = isinstance(value, kind), f'a {kind.__name__}'
    if not ok:
      raise ValueError(f'{path} maps to {name}={value!r}, which must be {want}: fix the field it comes from')


def _check_new_workdir(workdir: Path):
  """Never import over a run: a directory that already holds anything is refused."""
  if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
    raise FileExistsError(f'--workdir={workdir} already exists and is not empty; import into a new directory')


def _with_new_tokens(x: np.ndarray, new: range, rows: int, axis: int, param: str) -> np.ndarray:
  """x grown to `rows` vocabulary rows along axis, the rows of the new token ids each the mean of
  the rows of the tokens before them: a new token starts as an average token, its logit near the
  others' (a zero row would not be). New ids that fall on the checkpoint's padding rows (a
  vocabulary rounded up) overwrite them: those rows were never trained. A table without a row for
  every id before the new ones, or with rows beyond `rows`, is refused."""
  x = np.moveaxis(x, axis, 0)
  if len(x) < new.start or rows != max(len(x), new.stop):
    raise ValueError(f'parameter {param}: the checkpoint has {len(x)} vocabulary rows, which config.json\'s '
                     f'vocab_size and its tokenizer ({new.start} tokens) do not match: fix vocab_size or the checkpoint')
  out = np.concatenate([x, np.zeros((max(rows - len(x), 0), *x.shape[1:]), x.dtype)])
  out[new.start:new.stop] = x[:new.start].mean(0)
  return np.moveaxis(out, 0, axis)


def _checked(x: np.ndarray, shape, param: str) -> np.ndarray:
  if x.shape != tuple(shape):
    raise ValueError(f'parameter {param}: the checkpoint gives shape {x.shape}, the config implies {tuple(shape)}')
  return x


def _placed(abstract, param: str, read=None, read_layer=None):
  """A global array of abstract's shape and sharding, each addressable shard cut from read()
  (the whole parameter) or, for a parameter stacked over layers, from read_layer(i) of the
  layers the shard holds, one layer at a time."""
  memo = {}  # devices holding the same shard (replicas) read it once

  def shard(index):
    key = tuple((s.start, s.stop, s.step) for s in index)
    if key not in memo:
      if read_layer is None:
        memo[key] = _checked(read(), abstract.shape, param)[index].astype(abstract.dtype)
      else:
        memo[key] = np.stack([_checked(read_layer(i), abstract.shape[1:], param)[index[1:]].astype(abstract.dtype)
                              for i in range(abstract.shape[0])[index[0]]])
    return memo[key]

  return jax.make_array_from_callback(abstract.shape, abstract.sharding, shard)


def _place_all(arch, weights, model_cfg, abstract, new_tokens: range):
  """Our parameters on abstract's shardings, read from weights, with rows for the new_tokens ids."""
  top, layer = arch.import_thunks(weights, model_cfg)

  def place(path, a):
    path = params_lib.path_str(path)
    where, i, name = params_lib.locate(path)
    if where == 'stacked':
      return _placed(a, path, read_layer=lambda j: _lookup(layer(j), name)())
    thunk = _lookup(top, name) if where == 'top' else _lookup(layer(i), name)
    if name in _VOCAB_PARAMS:
      return _placed(a, path, read=lambda: _with_new_tokens(thunk(), new_tokens, model_cfg.vocab_size,
                                                             _VOCAB_PARAMS[name], path))
    return _placed(a, path, read=thunk)

  return jax.tree_util.tree_map_with_path(place, abstract)


def _lookup(thunks: dict, name: str):
  if name not in thunks:
    raise ValueError(f'our parameter {name} has no counterpart in this checkpoint')
  return thunks[name]


@dataclasses.dataclass(frozen=True)
class Imported:
  config: ml_collections.ConfigDict  # this project's config, config.model mapped from the HF one
  tokenizer: HFTokenizer
  params: dict  # on the mesh
  hf_config: dict
  chat_tokens_added: list[str]


def read_hf(hf_dir, chat_tokens: bool = True, max_seq_len: int = 0, mesh=None) -> Imported:
  """The Hugging Face model in hf_dir as our config, tokenizer and parameters on mesh (default:
  FSDP over every device)."""
  if max_seq_len < 0:
    raise ValueError(f"--max_seq_len={max_seq_len}: give a positive context, or 0 for the checkpoint's "
                     'max_position_embeddings')
  hf_dir = Path(hf_dir)
  hf = read_hf_config(hf_dir)
  arch = architectures.for_model_type(hf.get('model_type'))
  try:
    fields = arch.model_fields(hf)
    vocab = hf['vocab_size']
  except KeyError as e:
    raise ValueError(f'{hf_dir / "config.json"} has no {e.args[0]!r}, which a {hf["model_type"]} config '
                     'needs') from None
  except UnsupportedCheckpoint:
    raise
  except (TypeError, ValueError, ArithmeticError) as e:  # a field of the wrong kind, or 0 heads to divide by
    raise ValueError(f'{hf_dir / "config.json"} holds a field of the wrong kind or 0: {e}') from None
  _check_fields(fields | {'vocab_size': vocab}, hf_dir / 'config.json')
  if max_seq_len:
    if fields['position'] == 'learned':
      raise ValueError(f'--max_seq_len={max_seq_len}: learned positions fix the context at {fields["max_seq_len"]}')
    fields['max_seq_len'] = max_seq_len
  weights = Weights(hf_dir)
  tok = HFTokenizer.from_hf_dir(hf_dir, hf)
  if tok.vocab_size > vocab:
    raise ValueError(f'{hf_dir / "config.json"}: vocab_size={vocab} is smaller than its tokenizer '
                     f'({tok.vocab_size} tokens): the model has no embedding for the last ones')
  first_new = tok.vocab_size  # the chat tokens take the ids after the tokenizer's own
  tok = tok.with_vocab_size(vocab)
  added = tok.missing_chat_tokens() if chat_tokens else []
  if added:
    tok = tok.with_chat_tokens()

  config = config_lib.base_config()
  config.model.update(fields)
  config.tokenizer.vocab_size = tok.vocab_size
  config.train.seq_len = min(config.train.seq_len, fields['max_seq_len'])
  # FSDP over every device: an imported model is often larger than one device holds replicated.
  config.mesh.data, config.mesh.fsdp = 1, -1
  model_cfg = model_lib.ModelConfig.from_config(config.model, tok.vocab_size)
  mesh = sharding.make_mesh(config.mesh) if mesh is None else mesh
  rules = sharding.logical_rules(config.mesh.rules)
  abstract = inference.abstract_params(model_cfg, mesh, rules)
  params = _place_all(arch, weights, model_cfg, abstract, range(first_new, first_new + len(added)))
  unused = sorted(n for n in weights.names() - weights.read if not arch.ignored(n, model_cfg))
  if unused:
    raise ValueError(f'{hf_dir}: tensor {unused[0]!r} ({len(unused)} unused in all) has no place in our '
                     f'{hf["model_type"]} mapping; is this checkpoint a plain {hf["model_type"]}?')
  return Imported(config, tok, params, hf, added)


def import_hf(hf_dir, workdir, chat_tokens: bool = True, max_seq_len: int = 0, mesh=None) -> Path:
  """Writes workdir (which must be new or empty) from the Hugging Face model in hf_dir."""
  hf_dir, workdir = Path(hf_dir), Path(workdir)
  _check_new_workdir(workdir)
  imported = read_hf(hf_dir, chat_tokens, max_seq_len, mesh)
  config, tok, params, hf = imported.config, imported.tokenizer, imported.params, imported.hf_config
  vocab = int(hf['vocab_size'])
  workdir.mkdir(parents=True, exist_ok=True)
  manager = ocp.CheckpointManager((workdir / 'checkpoints').absolute(),
                                  item_handlers={'state': ocp.StandardCheckpointHandler()},
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave({'params': params})))
  manager.wait_until_finished()
  manager.close()
  if jax.process_index() == 0:
    tok.save(workdir / TOKENIZER_FILE)
    (workdir / 'import.json').write_text(json.dumps(
        {'hf_dir': str(hf_dir.absolute()), 'model_type': hf['model_type'], 'hf_vocab_size': vocab,
         'vocab_size': tok.vocab_size, 'chat_tokens_added': imported.chat_tokens_added}, indent=2) + '\n')
    # Last: a directory without config.json is not a run, so an interrupted import is never read as one.
    (workdir / 'config.json').write_text(json.dumps(json.loads(config.to_json_best_effort()), indent=2) + '\n')
  logging.info('imported %s (%s, %s params) into %s', hf_dir, hf['model_type'],
               f'{model_lib.count_params(params)["total"]:,}', workdir)
  return workdir
