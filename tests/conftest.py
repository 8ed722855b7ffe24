"""Shared fixtures: tiny configs over the real data in ../shared/data."""
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tiny_config import SHARED_DATA, tiny_config  # noqa: E402,F401  (re-exported for the tests)

# The suite compiles hundreds of tiny programs and runs each a few times, so LLVM's optimisation
# is time spent for nothing: -O0 takes the attention-equivalence test from 36 s to 22 s on the
# 2-core EPYC. Results may differ in the last bits, never in what a test checks (every comparison
# runs both sides under the same flags). Set here, before any test imports JAX, and in every child.
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0'
os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()


def xla_flags(devices: int = 0) -> str:
  """XLA_FLAGS for a child process: the suite's, and `devices` fake CPU devices where given."""
  return TEST_XLA_FLAGS + (f' --xla_force_host_platform_device_count={devices}' if devices else '')


@pytest.fixture(scope='session')
def data_dir() -> Path:
  if not SHARED_DATA.is_dir():
    pytest.skip(f'shared data not found at {SHARED_DATA}')
  return SHARED_DATA


@pytest.fixture(scope='session')
def tok(data_dir, tmp_path_factory):
  """A 512-token tokenizer trained on 200 KB of tiny Shakespeare."""
  from llm.tokenizer import train_tokenizer
  text = (data_dir / 'tinyshakespeare' / 'input.txt').read_text(encoding='utf-8')[:200_000]
  return train_tokenizer([text], 512, tmp_path_factory.mktemp('tok') / 'tok.model', 10**9)


@pytest.fixture(scope='session')
def cache_dir(tmp_path_factory, data_dir):
  """Tokenizer and token caches of the real data, shared by the whole session (built once);
  without the data, the tests that need it skip."""
  return tmp_path_factory.mktemp('llm_cache')


@pytest.fixture(scope='session', autouse=True)
def xla_cache(tmp_path_factory) -> Path:
  """One persistent XLA compilation cache for the whole session, shared by the xdist workers and
  every child process: the many tests that build the same tiny model, and each kill/resume pair,
  compile its programs once. Every program is stored, however fast it compiled (JAX's default
  keeps only those over a second): tiny models compile in less."""
  import jax
  base = tmp_path_factory.getbasetemp()
  path = (base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base) / 'xla_cache'
  path.mkdir(exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', str(path))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  return path


@pytest.fixture(scope='session')
def python_env(tmp_path_factory, xla_cache):
  """Environment for `python ...` children that need no data: the repo importable, one quiet
  CPU device, compiled kernels and XLA programs cached for the session."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), LLM_CACHE_DIR=str(tmp_path_factory.mktemp('kernels')),
             JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=str(xla_cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  env['XLA_FLAGS'] = xla_flags()  # not the parent's device count
  return env


@pytest.fixture
def subprocess_env(python_env, cache_dir):
  """Environment for `python -m llm...` children that read the data: its caches shared too."""
  return dict(python_env, LLM_CACHE_DIR=str(cache_dir))


@pytest.fixture(scope='session')
def pretrained(tmp_path_factory, cache_dir):
  """A tiny pretrained run (seq_len 128) that sft and grpo tests start from."""
  from llm import train
  workdir = tmp_path_factory.mktemp('pretrained')
  train.run(tiny_config(cache_dir, **{'train.steps': 10, 'model.max_seq_len': 128, 'train.seq_len': 128}),
            workdir)
  return workdir


# The SFT mixture of hh_sft: what its run trained on of the preference data, by its own split.
HH_SFT = {'mixture': {'hh_chosen': 0.3, 'arithmetic': 1.0}, 'val_fraction': 0.5, 'max_per_source': 0}


@pytest.fixture(scope='session')
def hh_sft(tmp_path_factory, pretrained):
  """A folder that reads as a finished SFT run of `pretrained` with HH_SFT (its config.json,
  summary.json and tokenizer, no checkpoint): the init_from of a reward model or RLHF run whose
  held-out prompts must leave out what that SFT trained on."""
  workdir = tmp_path_factory.mktemp('hh_sft')
  config = json.loads((pretrained / 'config.json').read_text())
  config.update(task='sft', init_from=str(pretrained), sft=HH_SFT)
  (workdir / 'config.json').write_text(json.dumps(config))
  for name in ('summary.json', 'tokenizer.model'):
    (workdir / name).write_bytes((pretrained / name).read_bytes())
  return workdir


def request_words(request: str) -> str:
  """A request as SFT's split groups it: lower case, letters and digits only ('Who are you?' is
  'whoareyou')."""
  return re.sub(r'[\W_]+', '', request.lower())


def hh_sft_openings(hh_sft: Path, data_dir: Path, tok) -> set[str]:
  """The first user turns (request_words) of the hh_chosen conversations hh_sft trained on: its
  training split as SFT makes it (llm.tasks.sft: load_mixture, fitted to train.seq_len + 1 tokens)."""
  from llm.data import conversations
  config = json.loads((hh_sft / 'config.json').read_text())
  splits = conversations.load_mixture(data_dir, {'hh_chosen': HH_SFT['mixture']['hh_chosen']}, HH_SFT['val_fraction'],
                                      config['seed'], HH_SFT['max_per_source'], tok, config['train']['seq_len'] + 1)
  return {request_words(c[0]['content']) for c in splits['hh_chosen'][0]}


def losses_by_step(workdir: Path) -> dict:
  rows = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return {r['step']: r['loss'] for r in rows if 'loss' in r}


def kill_when(cmd: list[str], env: dict, ready) -> int:
  """Starts cmd and SIGKILLs it as soon as ready() holds (polled every 10 ms); its exit status
  (-9 when killed, anything else when it ended first)."""
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  while proc.poll() is None and not ready():
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  return proc.wait()


def tensorboard_scalars(folder: Path, tag: str) -> list:
  """(step, value) of tag in the TFRecord event files under folder (8-byte length, 4-byte CRC, the
  Event proto, 4-byte CRC per record), as TensorBoard shows them: a session START event at step s
  (a restart) purges the points at s and after that came before it."""
  from tensorboardX.proto import event_pb2
  found = []
  for path in sorted(folder.iterdir()):
    data, at = path.read_bytes(), 0
    while at < len(data):
      (length,) = struct.unpack('<Q', data[at:at + 8])
      if at + 12 + length + 4 > len(data):  # a last record cut short by a kill, as TensorBoard skips it
        break
      event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
      at += 12 + length + 4
      if event.HasField('session_log') and event.session_log.status == event.session_log.START:
        found = [(step, value) for step, value in found if step < event.step]
      found += [(event.step, round(v.simple_value, 4)) for v in event.summary.value if v.tag == tag]
  return found


def kill_then_resume(cmd: list[str], env: dict, workdir: Path, kill_after_checkpoint: int, total: int):
  """Starts cmd, SIGKILLs it once its checkpoint of step kill_after_checkpoint is complete on disk
  (orbax gives a checkpoint's folder its step name only when the save is finished), checks from
  the logged steps that the run was cut short, then reruns cmd to the end."""
  checkpoint = workdir / 'checkpoints' / str(kill_after_checkpoint)
  returncode = kill_when(cmd, env, checkpoint.is_dir)
  assert checkpoint.is_dir(), f'the run ended (exit {returncode}) before its checkpoint of step {kill_after_checkpoint}'
  logged = losses_by_step(workdir)
  assert max(logged) < total and not (workdir / 'summary.json').exists(), 'the run finished before the kill'
  subprocess.run(cmd, env=env, check=True, capture_output=True)
