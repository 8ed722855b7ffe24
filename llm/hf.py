"""Hugging Face checkpoints in and out (llm/interop):

    python -m llm.hf import --hf_dir=DIR --workdir=RUN          # GPT-2 or Llama-style -> a run
    python -m llm.hf export --workdir=RUN --hf_dir=DIR          # a run -> transformers' from_pretrained
    python -m llm.hf export --workdir=RUN --format=two_files --out_dir=DIR   # model.f16 + run.py (numpy)
    python -m llm.hf encode --workdir=RUN --prompt="Hello"      # bos + the prompt's ids, for run.py
"""
import json
import sys
from pathlib import Path

from absl import app, flags

from llm import cli

_HF_DIR = flags.DEFINE_string('hf_dir', None, 'Hugging Face model directory (read by import, written by export).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (written by import, read by export).', required=True)
_FORMAT = flags.DEFINE_enum('format', 'hf', ['hf', 'two_files'], 'export: a transformers directory, or two files.')
_OUT_DIR = flags.DEFINE_string('out_dir', None, 'export --format=two_files: where model.f16 and run.py go.')
_CHAT_TOKENS = flags.DEFINE_bool('chat_tokens', True, "import: add the chat special tokens the SFT and RL stages "
                                 "use (the embedding table grows by as many rows); false keeps the model's vocabulary")
_MAX_SEQ_LEN = flags.DEFINE_integer('max_seq_len', 0, "import: context of a RoPE model (0 = the checkpoint's "
                                    'max_position_embeddings)')
_STEP = flags.DEFINE_integer('step', None, "export: the checkpoint to write (default: the run's latest)")
_PROMPT = flags.DEFINE_string('prompt', '', 'encode: text to turn into token ids.')


def _check_run(workdir: str):
  """--workdir of export and encode is a run: not a Hugging Face directory, nor a missing one."""
  from llm import tokenizer as tokenizer_lib
  config = Path(workdir) / 'config.json'
  if not config.is_file():
    raise ValueError(f'--workdir={workdir} is not a run (its config.json is missing): give the directory of a '
                     'training run (python -m llm.main) or of an import (python -m llm.hf import)')
  try:
    from_hf = 'model_type' in json.loads(config.read_text())
  except ValueError:
    from_hf = False  # not ours to judge here: reading the run says what is wrong with it
  if from_hf:
    raise ValueError(f'--workdir={workdir} is a Hugging Face model directory, not a run: import it first with '
                     f'python -m llm.hf import --hf_dir={workdir} --workdir=RUN')
  if not tokenizer_lib.run_file(workdir).exists():
    raise ValueError(f'--workdir={workdir} has no tokenizer ({" or ".join(tokenizer_lib.RUN_FILES)}): copy the one '
                     'the run trained with there')


def _run(command: str):
  from llm import tokenizer as tokenizer_lib
  from llm.interop import exporter, importer, two_files
  if command != 'import':
    _check_run(_WORKDIR.value)
  if command == 'import':
    if not _HF_DIR.value:
      raise ValueError('import needs --hf_dir=DIR, a Hugging Face model directory')
    print(importer.import_hf(_HF_DIR.value, _WORKDIR.value, _CHAT_TOKENS.value, _MAX_SEQ_LEN.value))
  elif command == 'export' and _FORMAT.value == 'two_files':
    if not _OUT_DIR.value:
      raise ValueError('export --format=two_files needs --out_dir=DIR')
    print(two_files.export_two_files(_WORKDIR.value, _OUT_DIR.value, _STEP.value))
  elif command == 'export':
    if not _HF_DIR.value:
      raise ValueError('export needs --hf_dir=DIR, the directory to write')
    print(exporter.export_hf(_WORKDIR.value, _HF_DIR.value, _STEP.value))
  else:  # encode
    tok = tokenizer_lib.load_any(tokenizer_lib.run_file(_WORKDIR.value))
    print(','.join(map(str, [tok.bos_id] + tok.encode(_PROMPT.value))))


def main(argv):
  if len(argv) != 2 or argv[1] not in ('import', 'export', 'encode'):
    raise app.UsageError('usage: python -m llm.hf import|export|encode --workdir=RUN ...')
  try:
    _run(argv[1])
  except (ValueError, OSError) as e:  # bad input: one line that says what and how to fix it
    sys.exit(f'llm.hf: {" ".join(str(e).split())}')


if __name__ == '__main__':
  cli.run(main, 'llm.hf', positional=True)  # the command
