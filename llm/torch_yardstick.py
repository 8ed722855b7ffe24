"""The PyTorch yardsticks (`../shared/bench/torch_*_reference.py`), run in a child process.

On a CPU host they run as written (fp32; under an emulated AVX2 build, torch capped at AVX2 too).
On a GPU host the same scripts run on CUDA in bfloat16 autocast, the way nanoGPT trains without
torch.compile: this module is then the child, and it sets torch's default device, enters autocast
and makes every `time.perf_counter()` the scripts call wait for the GPU first, so their timings
cover finished work, not queued kernels.

    python -m llm.torch_yardstick SCRIPT --layers=12 ...   # the child on a GPU host (bench does this)
"""
import json
import runpy
import subprocess
import sys
import time
from pathlib import Path

SHARED_BENCH = Path(__file__).resolve().parents[1].parent / 'shared' / 'bench'


def run(script_name: str, args: dict, on_gpu: bool) -> dict | None:
  """The script's last JSON line, or None (and a line on stderr saying why) when it cannot run."""
  try:
    import torch
  except ImportError:
    print(f'{script_name} skipped: torch is not importable (pip install torch==2.13.0)', file=sys.stderr)
    return None
  script = SHARED_BENCH / script_name
  if not script.exists():
    print(f'{script_name} skipped: {script} not found', file=sys.stderr)
    return None
  if on_gpu and not torch.cuda.is_available():
    print(f'{script_name} skipped: JAX runs on a GPU but this torch has no CUDA', file=sys.stderr)
    return None
  from llm import hostinfo
  prefix = [sys.executable, '-m', 'llm.torch_yardstick'] if on_gpu else [sys.executable]
  cmd = prefix + [str(script)] + [f'--{k}={v}' for k, v in args.items()]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=hostinfo.torch_env(),
                       cwd=Path(__file__).resolve().parents[1]).stdout
  result = json.loads(out.strip().splitlines()[-1])
  if on_gpu:
    result.update(device=torch.cuda.get_device_name(), dtype='bfloat16 autocast')
  else:
    result.update(dtype='float32')  # the scripts as written
  return result


def _main_on_gpu(script: str) -> None:
  import torch
  torch.set_default_device('cuda')
  wall_clock = time.perf_counter

  def synchronised_clock():
    torch.cuda.synchronize()
    return wall_clock()

  time.perf_counter = synchronised_clock
  sys.argv = sys.argv[1:]
  with torch.autocast('cuda', dtype=torch.bfloat16):
    runpy.run_path(script, run_name='__main__')


if __name__ == '__main__':
  _main_on_gpu(sys.argv[1])
