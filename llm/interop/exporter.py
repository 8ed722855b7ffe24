"""A run directory -> a Hugging Face model directory that transformers' from_pretrained loads:
config.json (GPT2LMHeadModel for learned positions, LlamaForCausalLM for RoPE), model.safetensors,
generation_config.json, and the tokenizer as tokenizer.json and tokenizer_config.json: an
imported model's own, or a SentencePiece run's converted to encode every text to the same ids
(sentencepiece_json.py; transformers' own conversion of a tokenizer.model would not: it knows
neither our cut after blank lines nor our U+2581 in bytes).

The chat format goes with it (chat_format): tokenizer_config.json's chat_template and
generation_config.json's stop ids, so that transformers' apply_chat_template and generate, and
vLLM, talk to the model as llm.chat does.
"""
import json
import shutil
from pathlib import Path

import jax

from llm import chat_template, inference
from llm.interop import architectures, params as params_lib, weights as weights_lib
from llm.interop.tokenizer import HFTokenizer


def _check_new_dir(out: Path, flag: str):
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise FileExistsError(f'{flag}={out} already exists and is not empty; export into a new directory')


def special_ids(tok) -> dict:
  return {'bos_token_id': tok.bos_id, 'eos_token_id': tok.eos_id, 'pad_token_id': tok.pad_id}


def chat_format(tok: HFTokenizer, task: str) -> tuple[str | list | None, list[int]]:
  """(chat template, stop ids) of a run's model. Ours (llm.chat_template.JINJA, stopping at the end
  of a turn too) for a model with our chat tokens, unless it is an imported model as it came, or
  pretrained on (task 'pretrain'), that has a template of its own: that one and its own stop ids.
  A run trained here on conversations (sft, grpo, rlhf) speaks ours whatever it came with."""
  if not tok.has_special('<|end|>') or (tok.chat_template is not None and task == 'pretrain'):
    return tok.chat_template, tok.stop_ids
  return chat_template.JINJA, list(dict.fromkeys([*tok.stop_ids, tok.special_id('<|end|>')]))


def export_hf(workdir, hf_dir, step: int | None = None) -> Path:
  """Writes hf_dir from the run in workdir (its latest or the given checkpoint); returns hf_dir."""
  hf_dir = Path(hf_dir)
  _check_new_dir(hf_dir, '--hf_dir')
  run = inference.load(workdir, step)
  arch = architectures.for_model(run.model_cfg)
  tok = run.tokenizer if isinstance(run.tokenizer, HFTokenizer) else HFTokenizer.from_ours(run.tokenizer)
  top, layers = params_lib.to_host(run.params, run.model_cfg.num_layers)
  tensors = arch.export_tensors(top, layers, run.model_cfg)
  if jax.process_index() != 0:
    return hf_dir
  ids = special_ids(run.tokenizer)
  config = {**arch.hf_config(run.model_cfg, ids), 'dtype': 'float32'}
  template, stop_ids = chat_format(tok, run.config.task)
  texts = {'config.json': json.dumps(config, indent=2) + '\n',
           'generation_config.json': json.dumps(ids | {'eos_token_id': stop_ids}, indent=2) + '\n',
           **tok.to_hf_files(template)}
  # Written beside hf_dir and renamed onto it whole: an export that fails or is killed leaves
  # hf_dir as it was, so the same command can run again.
  partial = hf_dir.with_name(f'.{hf_dir.name}.partial')
  shutil.rmtree(partial, ignore_errors=True)  # a killed export's
  partial.mkdir(parents=True)
  try:
    weights_lib.save(tensors, partial / weights_lib.SINGLE)
    for name, text in texts.items():
      (partial / name).write_text(text, encoding='utf-8')
    partial.replace(hf_dir)  # onto an empty directory too
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  return hf_dir
