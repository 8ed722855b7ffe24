"""The talks' "an LLM is two files": a run's parameters as one float16 file (model.f16) and one
numpy-only script that loads them and decodes greedily (run.py, a copy of numpy_sampler.py)."""
import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np

from llm import inference
from llm.interop import params as params_lib

_FP16_MAX = float(np.finfo(np.float16).max)
_BYTE_PIECE = re.compile(r'<0x([0-9A-Fa-f]{2})>')
# The model fields the script reads (the rest say how to train or run it here, not what it is).
_FIELDS = ('vocab_size', 'num_layers', 'num_heads', 'num_kv_heads', 'dim', 'mlp_dim', 'max_seq_len', 'position',
           'norm', 'mlp', 'qk_norm', 'tied_embeddings', 'rope_theta', 'bias', 'norm_eps', 'smear_keys')


def _byte_level_decoder() -> dict[str, int]:
  """GPT-2's byte-level alphabet: the printable character that stands for each byte."""
  printable = [*range(ord('!'), ord('~') + 1), *range(ord('\xa1'), ord('\xac') + 1), *range(ord('\xae'), 256)]
  others = [b for b in range(256) if b not in printable]
  chars = printable + [256 + n for n in range(len(others))]
  return {chr(c): b for b, c in zip(printable + others, chars, strict=True)}


def token_strings(tok) -> list[bytes]:
  """The bytes each token id decodes to (none for special tokens and padding rows)."""
  sizes, byte_level = tok.token_bytes(), getattr(tok, 'byte_level', False)
  decoder = _byte_level_decoder() if byte_level else None
  out = []
  for i, size in enumerate(sizes):
    piece = tok.id_to_piece(i) if size else ''
    byte = _BYTE_PIECE.fullmatch(piece)
    if not size:
      out.append(b'')
    elif byte:
      out.append(bytes([int(byte.group(1), 16)]))
    elif byte_level:
      out.append(bytes(decoder[c] for c in piece))
    else:
      out.append(piece.replace('\u2581', ' ').encode())
  return out


def export_two_files(workdir, out_dir, step: int | None = None) -> Path:
  out_dir = Path(out_dir)
  if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
    raise FileExistsError(f'--out_dir={out_dir} already exists and is not empty; export into a new directory')
  head = inference.read_config(workdir).model.get('head', 'lm')
  if head != 'lm':
    raise ValueError(f"model.head={head!r}: the two files hold a language model's sampler; a reward model has none")
  run = inference.load(workdir, step)
  cfg = run.model_cfg
  top, layers = params_lib.to_host(run.params, cfg.num_layers)
  tensors = {**top, **{f'layer_{i}/{k}': v for i, layer in enumerate(layers) for k, v in layer.items()}}
  for name, x in tensors.items():
    if np.abs(x).max() > _FP16_MAX:
      raise ValueError(f'parameter {name} holds {np.abs(x).max():.3g}, past float16 range ({_FP16_MAX:.0f})')
  header = {'model': {k: v for k, v in dataclasses.asdict(cfg).items() if k in _FIELDS},
            'tensors': [[name, list(x.shape)] for name, x in tensors.items()],
            'bos_id': run.tokenizer.bos_id, 'eos_id': run.tokenizer.eos_id,
            'tokens': [b.hex() for b in token_strings(run.tokenizer)]}
  blob = json.dumps(header).encode()
  out_dir.mkdir(parents=True, exist_ok=True)
  with open(out_dir / 'model.f16', 'wb') as f:
    f.write(len(blob).to_bytes(8, 'little') + blob)
    for x in tensors.values():
      f.write(np.ascontiguousarray(x, np.float16).tobytes())
  shutil.copyfile(Path(__file__).with_name('numpy_sampler.py'), out_dir / 'run.py')
  return out_dir
