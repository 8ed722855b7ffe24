"""Hugging Face weight files: safetensors read as numpy memory maps, written with `safetensors`
(no torch either way).

A safetensors file is an 8-byte header length, a JSON header (each tensor's dtype, shape and byte
range) and the raw data. Reading maps the file and converts one tensor when asked for it, so the
importer holds one layer's tensors at a time on the host. The header is parsed here rather than
by safetensors' numpy reader, which cannot return bfloat16 (most Llama-style checkpoints).
"""
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

SINGLE = 'model.safetensors'
INDEX = 'model.safetensors.index.json'
_DTYPES = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16, 'BF16': np.uint16}  # BF16: bits, widened below


def _read_header(path: Path) -> tuple[int, dict]:
  """(offset of the data, {name: header entry}), checked against the file's size."""
  try:
    size = path.stat().st_size
    with open(path, 'rb') as f:
      length = int.from_bytes(f.read(8), 'little')
      if length > size - 8:
        raise ValueError(f'its header claims {length} bytes, more than the file holds')
      header = json.loads(f.read(length))
    header.pop('__metadata__', None)
    end = max((t['data_offsets'][1] for t in header.values()), default=0)
  except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
    raise ValueError(f'{path} cannot be read as safetensors: {" ".join(str(e).split())}') from None
  if 8 + length + end > size:
    raise ValueError(f'{path} cannot be read as safetensors: truncated ({size} bytes, its header needs '
                     f'{8 + length + end})')
  return 8 + length, header


class Weights:
  """name -> float32 numpy array, from model.safetensors or the shards its index lists."""

  def __init__(self, hf_dir: Path | str):
    hf_dir = Path(hf_dir)
    if (hf_dir / INDEX).is_file():
      try:
        files = sorted(set(json.loads((hf_dir / INDEX).read_text())['weight_map'].values()))
      except (ValueError, KeyError, TypeError, AttributeError):
        raise ValueError(f'{hf_dir / INDEX} is not a safetensors index (no "weight_map")') from None
    elif (hf_dir / SINGLE).is_file():
      files = [SINGLE]
    else:
      found = sorted(p.name for p in hf_dir.glob('*.bin')) + sorted(p.name for p in hf_dir.glob('*.pt*'))
      hint = (f'; it holds {found[0]}: convert it with transformers (from_pretrained, then '
              'save_pretrained(dir, safe_serialization=True))' if found else '')
      raise FileNotFoundError(f'{hf_dir} has neither {SINGLE} nor {INDEX}{hint}')
    self._where = {}  # name -> (path, data offset, header entry)
    for name in files:
      offset, header = _read_header(hf_dir / name)
      self._where |= {k: (hf_dir / name, offset, entry) for k, entry in header.items()}
    self.read = set()  # names read so far: what is left over is a tensor the mapping does not know

  def names(self) -> set[str]:
    return set(self._where)

  def __getitem__(self, name: str) -> np.ndarray:
    if name not in self._where:
      raise ValueError(f'the checkpoint has no tensor {name!r}')
    path, offset, entry = self._where[name]
    if entry.get('dtype') not in _DTYPES:
      raise ValueError(f'tensor {name!r} is {entry.get("dtype")}; the importer reads {sorted(_DTYPES)} (not quantized '
                       'weights)')
    shape = entry.get('shape')
    if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
      raise ValueError(f'tensor {name!r} in {path}: shape {shape!r} is not a list of sizes')
    begin, end = entry['data_offsets']
    dtype, shape = np.dtype(_DTYPES[entry['dtype']]), tuple(shape)
    if end - begin != dtype.itemsize * int(np.prod(shape)):
      raise ValueError(f'tensor {name!r}: {end - begin} bytes for shape {shape} of {entry["dtype"]}')
    data = np.memmap(path, dtype, 'r', offset=offset + begin, shape=shape) if end > begin else np.zeros(shape, dtype)
    self.read.add(name)
    if entry['dtype'] == 'BF16':  # bfloat16 is the top half of a float32
      return (data.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(data, np.float32)


def save(tensors: dict[str, np.ndarray], path: Path | str):
  """One model.safetensors; 'format': 'pt' is the metadata transformers expects."""
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata={'format': 'pt'})
