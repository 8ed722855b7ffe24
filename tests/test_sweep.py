"""Scaling configs and the sweep runner: N as asked, skip finished points, resume killed ones."""
import json
import os
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / 'configs'))
import scaling  # noqa: E402

from llm import model as model_lib  # noqa: E402


def _counted(arg: str) -> dict:
  config = scaling.get_config(arg)
  cfg = model_lib.ModelConfig.from_config(config.model, scaling.VOCAB)
  boxed = jax.eval_shape(lambda: model_lib.Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
  counts = model_lib.count_params(nn.unbox(boxed)['params'])
  return dict(config=config, cfg=cfg, **counts)


@pytest.mark.parametrize('n', [3e4, 1e5, 4e5, 1.6e6, 6.4e6, 20e6, 124e6])
def test_derived_model_has_the_requested_size(n):
  got = _counted(f'n={n:g},d=1e6')
  assert got['non_embedding'] == pytest.approx(n, rel=0.03)
  assert got['non_embedding'] == scaling.non_embedding_params(**scaling.shape_for(n))
  assert got['total'] == scaling.total_params(**scaling.shape_for(n))


def test_compute_budget_sets_tokens_and_the_schedule_matches_them():
  got = _counted('size=m,c=1e13')
  config = got['config']
  flops_tok = model_lib.flops_per_token(got['cfg'], got['non_embedding'], config.train.seq_len)
  tokens = config.train.steps * config.train.batch_size * config.train.seq_len
  assert tokens == config.scaling.d
  assert tokens * flops_tok == pytest.approx(1e13, rel=0.01)  # steps are rounded to whole batches
  assert config.train.eval_every == config.train.steps  # the cosine ends where the run ends
  bigger = scaling.get_config('size=xl,c=1e13')
  assert bigger.train.lr < config.train.lr and bigger.model.num_layers > config.model.num_layers


@pytest.mark.parametrize('arg, message', [
    ('n=1e6', 'exactly one of d and c'),
    ('n=1e6,d=1e7,c=1e13', 'exactly one of d and c'),
    ('size=huge,d=1e7', "unknown size 'huge'"),
    ('m=1e6,d=1e7', 'expected n=PARAMS'),
])
def test_bad_points_are_named(arg, message):
  with pytest.raises(ValueError, match=message):
    scaling.get_config(arg)


def _sweep(root, env, *extra, **kwargs):
  return subprocess.run([sys.executable, '-m', 'llm.sweep', '--sweep=tests/tiny_sweep.py:two', f'--root={root}',
                         *extra], env=env, cwd=ROOT, capture_output=True, text=True, **kwargs)


def _steps(workdir):
  rows = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return [r['step'] for r in rows if 'loss' in r]


def test_sweep_resumes_a_killed_point_then_skips_finished_ones(tmp_path, subprocess_env):
  root = tmp_path / 'sweep'
  first = root / 'dim32'
  proc = subprocess.Popen([sys.executable, '-m', 'llm.sweep', '--sweep=tests/tiny_sweep.py:two', f'--root={root}'],
                          env=subprocess_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)  # its own process group: the kill reaches llm.main too
  ckpt = first / 'checkpoints'
  while proc.poll() is None and not (ckpt.is_dir() and any(p.name.isdigit() and int(p.name) >= 20 for p in ckpt.iterdir())):
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (first / 'summary.json').exists(), 'the point finished before it could be killed'

  resumed = _sweep(root, subprocess_env)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert '[1/2] dim32: resuming' in resumed.stdout and '[2/2] dim48: starting' in resumed.stdout
  for point in ('dim32', 'dim48'):
    assert _steps(root / point) == list(range(1, 41))  # every step once: nothing lost or repeated
    assert json.loads((root / point / 'summary.json').read_text())['steps'] == 40

  before = {p: (root / p / 'summary.json').stat().st_mtime_ns for p in ('dim32', 'dim48')}
  again = _sweep(root, subprocess_env)
  assert again.returncode == 0
  assert again.stdout.count('finished, skipped') == 2
  assert before == {p: (root / p / 'summary.json').stat().st_mtime_ns for p in ('dim32', 'dim48')}


def test_print_and_tpu_dry_run_list_every_point(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  printed = _sweep('/runs/s', env, '--mode=print', '--', '--config.data.dir=/data')
  assert printed.returncode == 0, printed.stderr
  assert printed.stdout.splitlines() == [
      f'python -m llm.main --config=tests/tiny_sweep.py:dim={d} --workdir=/runs/s/dim{d} --config.data.dir=/data'
      for d in (32, 48)]
  dry = _sweep('/gcs/s', env, '--mode=tpu', '--zone=us-central2-b', '--accelerator=v4-8', '--dry_run')
  assert dry.returncode == 0, dry.stderr
  gcloud = [l for l in dry.stdout.splitlines() if l.startswith('gcloud')]
  assert [l.split()[4:6] for l in gcloud if ' create ' in l] == [['create', 'llm-sweep-0'], ['create', 'llm-sweep-1']]
  runs = [l for l in gcloud if 'run_tpu.sh' in l]
  assert len(runs) == 2 and '--worker=all' in runs[0]
  assert '--config=tests/tiny_sweep.py:dim=48 --workdir=/gcs/s/dim48' in runs[1]
  missing = _sweep('/gcs/s', env, '--mode=tpu', '--dry_run')
  assert missing.returncode != 0 and 'needs --zone' in missing.stderr


@pytest.mark.parametrize('root', ['a_file', 'a_file/sweep'])
def test_a_root_that_is_a_file_or_under_one_is_one_line_before_any_point(tmp_path, root):
  (tmp_path / 'a_file').write_text('')
  result = _sweep(tmp_path / root, dict(os.environ, PYTHONPATH=str(ROOT)))
  assert result.returncode == 1 and result.stdout == ''  # no point started
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith(f'llm.sweep: {tmp_path / root} cannot be written')


def test_tpu_vm_dry_run_prints_queued_create_copy_and_run_on_every_worker():
  def dry(*args):
    out = subprocess.run([sys.executable, 'launch/tpu_vm.py', args[0], '--dry_run', *args[1:]], cwd=ROOT, capture_output=True,
                         text=True)
    return out.returncode, out.stdout.splitlines(), out.stderr

  code, lines, _ = dry('create', '--name=v', '--zone=us-central2-b', '--accelerator=v4-32', '--queued', '--spot')
  assert code == 0
  assert lines[0] == ('gcloud compute tpus queued-resources create v --zone=us-central2-b --node-id=v '
                      '--accelerator-type=v4-32 --runtime-version=tpu-ubuntu2204-base --spot')
  assert 'queued-resources describe v' in lines[1] and 'ACTIVE' in lines[1]
  code, lines, _ = dry('run', '--name=v', '--zone=us-central2-b', '--', '--config=configs/pretrain_gpt2_124m.py',
                       '--workdir=/gcs/r')
  assert code == 0 and len(lines) == 3
  assert all('--worker=all' in l for l in lines)
  assert ' scp --recurse ' in lines[1] and all(f'{ROOT}/{p}' in lines[1] for p in ('llm', 'configs', 'launch'))
  assert 'launch/run_tpu.sh --config=configs/pretrain_gpt2_124m.py --workdir=/gcs/r' in lines[2]
  code, _, err = dry('run', '--name=v', '--zone=us-central2-b')
  assert code != 0 and 'give the training flags after --' in err


def test_run_tpu_sh_needs_python_3_11_and_keeps_its_venv_outside_the_code(tmp_path):
  """launch/run_tpu.sh on a worker whose python3 is 3.10 (the default image's) and where none newer
  can be installed, then with a python3.11 and the venv of these requirements already made."""
  import hashlib
  import shutil
  tools = tmp_path / 'bin'
  tools.mkdir()
  for name in ('sha256sum', 'cut', 'grep', 'hostname', 'rm', 'touch', 'dirname'):
    (tools / name).symlink_to(shutil.which(name))
  (tools / 'python3').write_text('#!/bin/sh\necho Python 3.10.12\n')
  (tools / 'sudo').write_text('#!/bin/sh\nexit 1\n')  # no apt here
  for stub in ('python3', 'sudo'):
    (tools / stub).chmod(0o755)
  env = {'PATH': str(tools), 'HOME': str(tmp_path / 'home')}
  run = lambda: subprocess.run(['/bin/bash', 'launch/run_tpu.sh', '--config=x.py'], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=120)
  refused = run()
  assert refused.returncode == 1 and 'no Python >= 3.11' in refused.stderr and 'Python 3.10.12' in refused.stderr
  (tools / 'python3.11').symlink_to(sys.executable)
  key = hashlib.sha256((ROOT / 'requirements.txt').read_bytes()).hexdigest()[:12]
  venv = tmp_path / 'home' / f'.venv-llm-{key}'
  (venv / 'bin').mkdir(parents=True)
  (venv / '.installed').touch()
  (venv / 'bin' / 'python').write_text('#!/bin/sh\necho "$@"\n')
  (venv / 'bin' / 'python').chmod(0o755)
  started = run()
  assert started.returncode == 0, started.stderr
  assert started.stdout.strip() == '-m llm.main --config=x.py --config.mesh.distributed=True'
  assert sorted(os.listdir(venv)) == ['.installed', 'bin']  # the made venv reused as it was


@pytest.mark.parametrize('config, message', [
    ('configs/scaling.py:n=1e6', 'give n (or size) and exactly one of d and c'),
    ('configs/no_such_config.py', "No such file or directory: 'configs/no_such_config.py'"),
])
def test_bad_config_file_or_point_is_one_line(tmp_path, config, message):
  result = subprocess.run([sys.executable, '-m', 'llm.main', f'--config={config}', f'--workdir={tmp_path}'],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
  assert result.returncode == 1
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith('llm: ') and message in line
