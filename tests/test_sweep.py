"""Scaling configs and the sweep runner: N as asked, skip finished points, resume killed ones."""
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / 'configs'))
import scaling  # noqa: E402

from llm import model as model_lib, sweep  # noqa: E402


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


def test_only_a_point_given_its_budget_joins_an_isoflop_slice(tmp_path):
  """llm.scaling groups runs into IsoFLOP slices by config scaling.c: a grid of n=,d= points must not
  become one-run slices."""
  from llm import scaling as fit
  for arg, budget in (('size=m,c=1e13', 1e13), ('size=m,d=2e7', None)):
    run = tmp_path / scaling.point_name(arg)
    run.mkdir()
    (run / 'config.json').write_text(scaling.get_config(arg).to_json_best_effort())
    (run / 'summary.json').write_text(json.dumps(dict.fromkeys(fit.SUMMARY_KEYS, 1.0)))
    (loaded,) = fit.load_runs([run])
    assert loaded.budget == budget


@pytest.mark.parametrize('arg, message', [
    ('n=1e6', 'exactly one of d and c'),
    ('n=1e6,d=1e7,c=1e13', 'exactly one of d and c'),
    ('size=huge,d=1e7', "unknown size 'huge'"),
    ('m=1e6,d=1e7', 'expected n=PARAMS'),
    # Each of these was taken: 1 step for d <= 0 or c < 0, n ignored beside size, the last of a repeated key.
    ('n=1e6,d=0', 'd=0 is not a positive number'),
    ('n=1e6,d=-5e6', 'd=-5e6 is not a positive number'),
    ('size=m,c=-1e13', 'c=-1e13 is not a positive number'),
    ('n=1e6,d=nan', 'd=nan is not a positive number'),
    ('n=1e6,c=inf', 'c=inf is not a positive number'),
    ('n=1e6,d=lots', 'd=lots is not a positive number'),
    ('n=nan,d=1e7', 'n=nan is not a positive number'),
    ('size=m,n=1e6,d=1e7', 'give n or size, not both'),
    ('n=1e6,d=1e7,d=2e7', 'd given twice'),
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


def test_sweep_started_outside_the_repository_trains_under_its_relative_root(tmp_path, subprocess_env):
  """--sweep and --root relative to where the sweep starts; each point's llm.main runs in the repository."""
  root = f'sweep_{tmp_path.name}'  # where a point lands if its llm.main reads --root from the repository
  (tmp_path / 'here_sweep.py').write_text(f'import sys\nsys.path.insert(0, {str(ROOT / "tests")!r})\n'
                                          'from tiny_sweep import get_config, point_name, sweep\n')
  try:
    result = subprocess.run([sys.executable, '-m', 'llm.sweep', '--sweep=here_sweep.py:two', f'--root={root}', '--',
                             '--config.train.steps=12'], env=subprocess_env, cwd=tmp_path, capture_output=True, text=True)
    assert not (ROOT / root).exists()
  finally:
    shutil.rmtree(ROOT / root, ignore_errors=True)
  assert result.returncode == 0, result.stdout + result.stderr
  for point in ('dim32', 'dim48'):
    assert json.loads((tmp_path / root / point / 'summary.json').read_text())['steps'] == 12


@pytest.mark.parametrize('extra, progress_bar', [([], ['--config.train.progress_bar=False']),
                                                  (['--config.train.progress_bar=True'], ['--config.train.progress_bar=True'])])
def test_a_local_sweep_turns_the_progress_bar_off_unless_asked_for_it_once(tmp_path, monkeypatch, extra, progress_bar):
  """Its own =False and a later =True in extra: llm.main refuses a key given twice."""
  started = []
  monkeypatch.setattr(sweep, 'call_stoppable', lambda cmd, **_: started.append(cmd) or 1)
  sweep.run_local('tests/tiny_sweep.py', [('dim32', 'dim=32')], tmp_path, extra)
  (cmd,) = started
  assert [a for a in cmd if 'progress_bar' in a] == progress_bar


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_sweep_stops_the_point_it_runs(tmp_path, subprocess_env, sig):
  proc = subprocess.Popen([sys.executable, '-m', 'llm.sweep', '--sweep=tests/tiny_sweep.py:two', f'--root={tmp_path}'],
                          env=subprocess_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)  # a process group of its own, which its points join
  log = tmp_path / 'dim32' / 'log.txt'
  try:
    while proc.poll() is None and not (log.exists() and log.stat().st_size):  # llm.main has started
      time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    with pytest.raises(ProcessLookupError):  # no process left in the group: the point did not train on
      os.killpg(proc.pid, 0)
  finally:
    with contextlib.suppress(ProcessLookupError):  # whatever the sweep left, if the test failed
      os.killpg(proc.pid, signal.SIGKILL)
  assert proc.returncode == 1
  assert err.strip().splitlines() == [f'llm.sweep: {sig.name}: stopped the running point and the sweep; rerun the '
                                      'same command to resume']
  assert not (tmp_path / 'dim32' / 'summary.json').exists() and not (tmp_path / 'dim48').exists()


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


@pytest.mark.parametrize('mode', ['local', 'print'])
def test_a_key_given_twice_after_the_double_dash_is_one_line_before_any_point(tmp_path, mode):
  """Each point's llm.main would refuse it, after the sweep had started them one by one."""
  result = _sweep(tmp_path, dict(os.environ, PYTHONPATH=str(ROOT)), f'--mode={mode}', '--', '--config.train.steps=3',
                  '--config.train.steps=5')
  assert result.returncode == 1 and result.stdout == '' and not list(tmp_path.iterdir())
  assert result.stderr.strip().splitlines() == [
      'llm.sweep: among the flags after --: --config.train.steps is given twice; give it once']


def _tpu_vm_dry(*args):
  out = subprocess.run([sys.executable, 'launch/tpu_vm.py', args[0], '--dry_run', *args[1:]], cwd=ROOT, capture_output=True,
                       text=True)
  return out.returncode, out.stdout.splitlines(), out.stderr


def test_tpu_vm_dry_run_prints_queued_create_copy_and_run_on_every_worker():
  dry = _tpu_vm_dry
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


@pytest.mark.parametrize('accelerator, runtime', [
    ('v4-32', 'tpu-ubuntu2204-base'), ('v3-8', 'tpu-ubuntu2204-base'), ('v5litepod-16', 'v2-alpha-tpuv5-lite'),
    ('v5p-8', 'v2-alpha-tpuv5'), ('v6e-8', 'v2-alpha-tpuv6e')])
def test_tpu_vm_creates_each_accelerator_with_its_software_version(accelerator, runtime):
  """Google's table (cloud.google.com/tpu/docs/runtimes): v5e, v5p and v6e VMs need their own image."""
  for queued, flag in (([], '--version'), (['--queued'], '--runtime-version')):
    code, lines, err = _tpu_vm_dry('create', '--name=v', '--zone=z', f'--accelerator={accelerator}', *queued)
    assert code == 0, err
    assert f'--accelerator-type={accelerator} {flag}={runtime}' in lines[0]
  code, lines, _ = _tpu_vm_dry('create', '--name=v', '--zone=z', f'--accelerator={accelerator}', '--runtime=mine')
  assert code == 0 and lines[0].endswith('--version=mine')


def test_tpu_vm_refuses_to_guess_the_software_version_of_an_unknown_accelerator():
  code, lines, err = _tpu_vm_dry('create', '--name=v', '--zone=z', '--accelerator=v9x-8')
  assert code == 2 and lines == []
  assert err.splitlines()[-1].startswith("tpu_vm.py: error: --accelerator=v9x-8: no default software version for 'v9x'")
  assert err.splitlines()[-1].endswith('pass --runtime=VERSION')


def test_tpu_vm_run_replaces_only_the_code_on_each_worker(tmp_path):
  """The dry run's clear and copy steps played on a worker's home (scp --recurse copies each path
  into the folder): the data and caches put beside the code stay, a file deleted from the code
  goes."""
  import shutil
  code, lines, _ = _tpu_vm_dry('run', '--name=v', '--zone=us-central2-b', '--', '--config=c.py')
  assert code == 0
  home = tmp_path / 'home'
  shard = home / 'llm' / 'data' / 'fineweb_edu' / 'shard_000.jsonl'
  shard.parent.mkdir(parents=True)
  shard.write_text('{"text": "kept"}\n')
  (home / 'llm' / 'llm').mkdir()
  (home / 'llm' / 'llm' / 'gone.py').write_text('')  # a module since deleted from the checkout
  clear = shlex.split(lines[0])[-1].removeprefix('--command=')
  subprocess.run(['bash', '-c', clear], env={'HOME': str(home), 'PATH': os.environ['PATH']}, check=True)
  copy = shlex.split(lines[1])
  (dest,) = [a.split(':', 1)[1] for a in copy if a.startswith('v:')]
  dest = home / dest.removeprefix('~/')
  for src in map(Path, (a for a in copy if a.startswith(str(ROOT)))):
    (shutil.copytree(src, dest / src.name, ignore=shutil.ignore_patterns('__pycache__')) if src.is_dir()
     else shutil.copyfile(src, dest / src.name))
  assert shard.read_text() == '{"text": "kept"}\n'
  assert not (dest / 'llm' / 'gone.py').exists() and (dest / 'llm' / 'main.py').is_file()
  assert (dest / 'launch' / 'run_tpu.sh').is_file() and (dest / 'requirements.txt').is_file()


def test_tpu_vm_run_appends_each_start_to_the_log(tmp_path):
  """A second `run` (to resume a crashed job) keeps the first job's log: each start's output goes
  after a dated line naming the start. The dry run's start command played twice on a worker whose
  run_tpu.sh prints a line."""
  code, lines, _ = _tpu_vm_dry('run', '--name=v', '--zone=z', '--', '--config=c.py', '--workdir=/gcs/r x')
  assert code == 0
  start = shlex.split(lines[2])[-1].removeprefix('--command=')
  home = tmp_path / 'home'
  (home / 'llm' / 'launch').mkdir(parents=True)
  (home / 'llm' / 'launch' / 'run_tpu.sh').write_text('echo "job $1"\n')
  for _ in range(2):
    subprocess.run(['bash', '-c', f'{start}\nwait'], env={'HOME': str(home), 'PATH': os.environ['PATH']}, check=True)
  log = (home / 'llm.log').read_text().splitlines()
  assert len(log) == 4 and log[1] == log[3] == 'job --config=c.py', log
  for header in log[0], log[2]:
    assert re.fullmatch(r"==== \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ start: launch/run_tpu.sh --config=c.py '--workdir=/gcs/r x'",
                        header), header


def fake_gcloud(tmp_path, script: str) -> dict:
  """An environment whose gcloud is a shell script: it logs its arguments to tmp_path/gcloud.log, then runs script."""
  tools = tmp_path / 'bin'
  tools.mkdir()
  (tools / 'gcloud').write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "gcloud.log"}\n{script}')
  (tools / 'gcloud').chmod(0o755)
  return dict(os.environ, PYTHONPATH=str(ROOT), PATH=f'{tools}{os.pathsep}{os.environ["PATH"]}')


@pytest.mark.parametrize('state', ['FAILED', 'SUSPENDING', 'SUSPENDED'])
def test_a_queued_resource_that_will_never_be_active_ends_the_wait_naming_its_state(state, tmp_path):
  """SUSPENDING leads only to SUSPENDED: waiting on it for ACTIVE polled forever."""
  env = fake_gcloud(tmp_path, f'case "$*" in *"queued-resources describe"*) echo {state};; esac\n')
  vm = subprocess.run([sys.executable, 'launch/tpu_vm.py', 'create', '--name=v', '--zone=z', '--queued', '--poll_s=0.1'],
                      cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
  assert vm.returncode == 1 and vm.stderr.splitlines()[-1].startswith(f'tpu_vm.py: queued resource v is {state}; ')


def test_a_failing_gcloud_call_ends_in_one_line_naming_it(tmp_path):
  """gcloud's own error passes through; then one line, no traceback, from tpu_vm.py and from the sweep."""
  error = 'ERROR: (gcloud.compute.tpus.tpu-vm.create) PERMISSION_DENIED: quota exceeded'
  env = fake_gcloud(tmp_path, f'case "$*" in *describe*) echo "ERROR: NOT_FOUND" >&2; exit 1;; '
                              f'*"tpu-vm create"*) echo "{error}" >&2; exit 1;; esac\n')
  vm = subprocess.run([sys.executable, 'launch/tpu_vm.py', 'create', '--name=v', '--zone=z'], cwd=ROOT, env=env,
                      capture_output=True, text=True)
  assert vm.returncode == 1 and 'Traceback' not in vm.stderr
  assert vm.stderr.splitlines() == [error, 'tpu_vm.py: gcloud compute tpus tpu-vm create v --zone=z --accelerator-type=v4-8 '
                                           f'--version=tpu-ubuntu2204-base failed (exit 1): {error}']
  queued = subprocess.run([sys.executable, 'launch/tpu_vm.py', 'create', '--name=v', '--zone=z', '--queued'], cwd=ROOT,
                          env=env, capture_output=True, text=True)  # created; then its state cannot be read
  assert queued.returncode == 1 and 'Traceback' not in queued.stderr
  assert queued.stderr.splitlines()[-1].startswith('tpu_vm.py: gcloud compute tpus queued-resources describe v ')
  assert queued.stderr.splitlines()[-1].endswith('failed (exit 1): ERROR: NOT_FOUND')
  no_gcloud = subprocess.run([sys.executable, 'launch/tpu_vm.py', 'create', '--name=v', '--zone=z'], cwd=ROOT,
                             env=dict(env, PATH=str(tmp_path)), capture_output=True, text=True)
  assert no_gcloud.returncode == 1
  assert no_gcloud.stderr == 'tpu_vm.py: gcloud not found: install the Google Cloud CLI and put gcloud on PATH\n'
  sweep = _sweep('/gcs/s', env, '--mode=tpu', '--zone=z')
  assert sweep.returncode == 1 and 'Traceback' not in sweep.stderr
  assert sweep.stderr.splitlines()[-2:] == [
      vm.stderr.splitlines()[-1].replace('create v ', 'create llm-sweep-0 '),
      'llm.sweep: [1/2] dim32: launch/tpu_vm.py create failed (exit 1; its error is above); rerun the same command '
      'to continue (points whose VM exists are skipped)']


def test_tpu_sweep_rerun_skips_the_points_whose_vm_exists(tmp_path):
  env = fake_gcloud(tmp_path, 'case "$*" in *"describe llm-sweep-0 "*) echo READY;; '
                              '*describe*) echo "ERROR: NOT_FOUND" >&2; exit 1;; esac\n')
  sweep = _sweep('/gcs/s', env, '--mode=tpu', '--zone=z')
  assert sweep.returncode == 0, sweep.stderr
  assert sweep.stdout.splitlines()[0] == ('[1/2] dim32: VM llm-sweep-0 exists (READY), skipped (to launch the point again, '
                                          'delete it: python launch/tpu_vm.py delete --name=llm-sweep-0 --zone=z)')
  calls = (tmp_path / 'gcloud.log').read_text().splitlines()
  assert [c.split()[3:5] for c in calls if 'describe' not in c] == [['create', 'llm-sweep-1'], ['ssh', 'llm-sweep-1'],
                                                                     ['scp', '--recurse'], ['ssh', 'llm-sweep-1']]
  assert 'tiny_sweep.py:dim=48' in calls[-1] and 'dim=32' not in ''.join(calls)



@pytest.mark.parametrize('state,queued', [('FAILED', True), ('SUSPENDED', True), ('DELETING', True),
                                          ('PREEMPTED', False), ('TERMINATED', False)])
def test_tpu_sweep_names_a_point_whose_vm_ended_instead_of_skipping_it(tmp_path, state, queued):
  """A VM that exists but runs nothing (its queued request failed, it was preempted) is no launched
  point: the sweep says so with the command that deletes it, launches the others, and fails."""
  log = tmp_path / 'gcloud.log'  # the other point's VM exists (ACTIVE, once queued) after its create
  env = fake_gcloud(tmp_path, f'case "$*" in *"describe llm-sweep-0 "*) echo {state};; '
                              f'*describe*) grep -q "create llm-sweep-1" {log} && echo ACTIVE && exit 0; '
                              'echo "ERROR: NOT_FOUND" >&2; exit 1;; esac\n')
  sweep = _sweep('/gcs/s', env, '--mode=tpu', '--zone=z', *(['--queued'] if queued else []))
  assert sweep.returncode == 1 and 'Traceback' not in sweep.stderr
  delete = 'python launch/tpu_vm.py delete --name=llm-sweep-0 --zone=z' + (' --queued' if queued else '')
  # One being deleted already needs no second delete, only time.
  todo = 'wait until its deletion ends' if state == 'DELETING' else f'delete it ({delete})'
  assert sweep.stdout.splitlines()[0] == (f'[1/2] dim32: VM llm-sweep-0 is {state}, its point is not running: '
                                          f'{todo}, then rerun the same command')
  assert sweep.stderr.splitlines()[-1] == ('llm.sweep: 1 point(s) not launched, their VM has ended: dim32; once '
                                           'those VMs are deleted (see above), rerun the same command')
  calls = log.read_text().splitlines()
  assert 'llm-sweep-0' not in ''.join(c for c in calls if 'describe' not in c)  # neither created nor run again
  assert any('create llm-sweep-1' in c for c in calls)

def _tpu_worker(tmp_path):
  """A fake worker with no apt and python3 3.10: (run: run_tpu.sh with these args and extra
  environment -> its result, add_python: a python3.11 and the venv of these requirements already
  made, whose python prints its arguments, the venv's path)."""
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
  key = hashlib.sha256((ROOT / 'requirements.txt').read_bytes()).hexdigest()[:12]
  venv = tmp_path / 'home' / f'.venv-llm-{key}'

  def run(*args, **env):
    return subprocess.run(['/bin/bash', 'launch/run_tpu.sh', *args], cwd=ROOT, capture_output=True, text=True,
                          env={'PATH': str(tools), 'HOME': str(tmp_path / 'home'), **env}, timeout=120)

  def add_python():
    (tools / 'python3.11').symlink_to(sys.executable)
    (venv / 'bin').mkdir(parents=True)
    (venv / '.installed').touch()
    (venv / 'bin' / 'python').write_text('#!/bin/sh\necho "$@"\n')
    (venv / 'bin' / 'python').chmod(0o755)

  return run, add_python, venv


def test_run_tpu_sh_needs_python_3_11_and_keeps_its_venv_outside_the_code(tmp_path):
  """launch/run_tpu.sh on a worker whose python3 is 3.10 (the default image's) and where none newer
  can be installed, then with a python3.11 and the venv of these requirements already made."""
  run, add_python, venv = _tpu_worker(tmp_path)
  refused = run('--config=x.py')
  assert refused.returncode == 1 and 'no Python >= 3.11' in refused.stderr and 'Python 3.10.12' in refused.stderr
  add_python()
  started = run('--config=x.py')
  assert started.returncode == 0, started.stderr
  assert started.stdout.strip() == '-m llm.main --config=x.py --config.mesh.distributed=True'
  assert sorted(os.listdir(venv)) == ['.installed', 'bin']  # the made venv reused as it was
  for flag in (['--config.mesh.distributed=True'], ['--config.mesh.distributed', 'False'],
               ['--config.mesh.distributed'], ['--noconfig.mesh.distributed']):  # not given twice: llm.main refuses it
    given = run('--config=x.py', *flag, '--workdir=w')
    assert given.stdout.split() == ['-m', 'llm.main', '--config=x.py', *flag, '--workdir=w'], given.stderr


def test_run_tpu_sh_refuses_several_workers_without_shared_data_and_cache(tmp_path):
  """Each worker's own ./data and ~/.cache/llm would leave process 0's tokenizer and token caches
  unseen by the others: on a slice of two workers both data flags are needed, in one line."""
  run, add_python, _ = _tpu_worker(tmp_path)
  add_python()
  two = {'TPU_WORKER_HOSTNAMES': 'w0,w1'}
  for args in (['--config=x.py'], ['--config=x.py', '--config.data.dir=/gcs/data'],
               ['--config=x.py', '--config.data.dir=', '--config.data.cache_dir=/gcs/cache']):
    refused = run(*args, **two)
    assert refused.returncode == 1 and refused.stdout == '', args
    (line,) = refused.stderr.splitlines()
    assert line.startswith('run_tpu.sh: 2 workers need --config.data.dir=DIR and --config.data.cache_dir=DIR'), line
  shared = ('--config=x.py', '--config.data.dir=/gcs/data', '--config.data.cache_dir', '/gcs/cache')
  started = run(*shared, **two)
  assert started.returncode == 0, started.stderr
  assert started.stdout.split() == ['-m', 'llm.main', *shared, '--config.mesh.distributed=True']
  alone = run('--config=x.py', TPU_WORKER_HOSTNAMES='w0')  # one worker: its own disk is everyone's
  assert alone.returncode == 0, alone.stderr


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


def test_a_points_default_workdir_name_drops_equals_and_joins_settings_with_underscores(tmp_path):
  config = tmp_path / 'grid.py'
  config.write_text("def sweep(grid):\n  return {'two': ['n=1e6,d=2e7', 'n=2e6,d=4e7'], 'same': ['n=1e6', 'n=1e6']}[grid]\n")
  assert sweep.load_sweep(f'{config}:two')[1] == [('n1e6_d2e7', 'n=1e6,d=2e7'), ('n2e6_d4e7', 'n=2e6,d=4e7')]
  with pytest.raises(ValueError, match='two points share a workdir name'):
    sweep.load_sweep(f'{config}:same')
