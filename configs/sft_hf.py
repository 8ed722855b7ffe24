"""SFT of a model imported from Hugging Face (python -m llm.hf import), or of any pretraining run
(configs/pretrain_gpt2_124m.py's: configs/sft_hf.py:runs/gpt2_124m): the chat mixture of
configs/sft_small.py, the model and tokenizer read from that run, a fine-tuning learning rate.

    python -m llm.hf import --hf_dir=hf/gpt2 --workdir=runs/gpt2
    python -m llm.main --config=configs/sft_hf.py:runs/gpt2 --workdir=runs/sft_gpt2
    python -m llm.chat --workdir=runs/sft_gpt2
"""
import json
from pathlib import Path

from configs import sft_small


def get_config(arg=None):
  """arg: the imported run's directory (default runs/gpt2)."""
  base = Path(arg or 'runs/gpt2')
  c = sft_small.get_config()
  c.init_from = str(base)
  if (base / 'config.json').is_file():  # absent when only listing the config's fields
    c.model.update(json.loads((base / 'config.json').read_text())['model'])
  c.train.seq_len = min(512, c.model.max_seq_len)
  c.mesh.data, c.mesh.fsdp = 1, -1  # parameters and Adam moments sharded over every device
  c.train.lr = 3e-5  # a pretrained 100M+ model: full fine-tuning at the usual rate
  c.train.warmup_steps = 30
  c.train.batch_size = 16
  return c
