"""Runs every point of a sweep, each as `python -m llm.main` in its own workdir.

    python -m llm.sweep --sweep=configs/scaling.py:isoflop_cpu --root=runs/scaling
    python -m llm.sweep --sweep=configs/scaling.py:isoflop_cpu --root=runs/scaling --mode=print
    python -m llm.sweep --sweep=configs/scaling.py:chinchilla_tpu --root=/gcs/scaling --mode=tpu \\
        --zone=us-central2-b --accelerator=v4-8 --dry_run \\
        -- --config.data.dir=/gcs/data --config.data.cache_dir=/gcs/cache

A sweep is a config file with `get_config(arg)` (one point) and `sweep(grid) -> [arg, ...]`
(the points of a named grid); `point_name(arg)`, if defined, names the point's workdir.
Modes:
- local: the points one after another on this machine. A point whose summary.json exists is
  finished and skipped; an interrupted one resumes from its checkpoint (llm.main does that),
  so rerunning the same command after a crash or a kill continues the sweep. Each point's
  output goes to ROOT/NAME/log.txt.
- print: the per-point commands, for any scheduler.
- tpu: one Cloud TPU VM per point via launch/tpu_vm.py (create, then run); --dry_run prints
  the gcloud commands. ROOT must be storage every VM sees (a mounted GCS bucket). A point whose
  VM exists (PREFIX-INDEX) was launched by an earlier run and is skipped, so rerunning the same
  command after a failed gcloud call continues the sweep; one whose VM has ended (a FAILED or
  SUSPENDED queued resource, a PREEMPTED or TERMINATED VM) is named with the command that deletes
  it, and the sweep ends in failure: delete those, then rerun it. A slice of several workers needs
  --config.data.dir and --config.data.cache_dir after `--`, on storage they all see
  (launch/run_tpu.sh refuses to start without them).
Flags after `--` go to every point's llm.main (e.g. -- --config.data.dir=/data); in local mode
llm.main runs in the repository root, so a relative path among them is read from there.
"""
import importlib.util
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from absl import flags

from llm import cli, files

REPO = Path(__file__).resolve().parents[1]
# States gcloud describes a TPU VM (tpu-vm) or queued resource in where nothing runs on it any more and
# it will not come back by itself: its point is not training, and a VM of its name blocks a new one.
ENDED_STATES = ('FAILED', 'SUSPENDING', 'SUSPENDED', 'DELETING', 'PREEMPTED', 'TERMINATED', 'STOPPING', 'STOPPED')

_SWEEP = flags.DEFINE_string('sweep', None, 'CONFIG_FILE:GRID, e.g. configs/scaling.py:isoflop_cpu.')
_ROOT = flags.DEFINE_string('root', None, 'Folder holding one workdir per point.')
_MODE = flags.DEFINE_enum('mode', 'local', ['local', 'print', 'tpu'], 'Run here, print commands, or one TPU VM per point.')
_ZONE = flags.DEFINE_string('zone', '', 'tpu mode: the zone of the VMs.')
_ACCELERATOR = flags.DEFINE_string('accelerator', 'v4-8', 'tpu mode: accelerator type of each VM.')
_PREFIX = flags.DEFINE_string('vm_prefix', 'llm-sweep', 'tpu mode: VM names are PREFIX-INDEX.')
_QUEUED = flags.DEFINE_bool('queued', False, 'tpu mode: ask for each VM as a queued resource (waits for capacity).')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'tpu mode: print the gcloud commands, run nothing.')
flags.mark_flags_as_required(['sweep', 'root'])


def load_sweep(spec: str):
  """'configs/scaling.py:grid' -> (config path, [(name, arg), ...])."""
  path, sep, grid = spec.partition(':')
  if not sep or not grid:
    raise ValueError(f'--sweep={spec}: expected CONFIG_FILE:GRID, e.g. configs/scaling.py:isoflop_cpu')
  if not Path(path).is_file():
    raise FileNotFoundError(f'--sweep={spec}: no config file {path}')
  module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'sweep'):
    raise ValueError(f'--sweep={spec}: {path} defines no sweep(grid) function')
  name = getattr(module, 'point_name', lambda arg: arg.replace('=', '').replace(',', '_'))
  points = [(name(arg), arg) for arg in module.sweep(grid)]
  if len({n for n, _ in points}) != len(points):
    raise ValueError(f'--sweep={spec}: two points share a workdir name: {[n for n, _ in points]}')
  return path, points


def main_args(config_path: str, arg: str, workdir: str, extra: list[str]) -> list[str]:
  return [f'--config={config_path}:{arg}', f'--workdir={workdir}', *extra]


def call_stoppable(cmd: list[str], **popen_args) -> int:
  """subprocess.call(cmd), but a SIGTERM or SIGINT to the sweep stops cmd too and then ends the sweep
  in one line: the point is not left training as an orphan that a rerun of the sweep would race in
  the same workdir."""
  stopped_by = []

  def stop(signum, frame):
    # Only terminate: the wait below is interrupted here holding Popen's wait lock, and resumes.
    stopped_by.append(signal.Signals(signum).name)
    child.terminate()

  with subprocess.Popen(cmd, **popen_args) as child:
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
      code = child.wait()
    finally:
      for sig, handler in previous.items():
        signal.signal(sig, handler)
  if stopped_by:
    raise SystemExit(f'llm.sweep: {stopped_by[0]}: stopped the running point and the sweep; rerun the same command '
                     'to resume')
  return code


def run_local(config_path, points, root: Path, extra) -> int:
  failed = []
  for i, (name, arg) in enumerate(points, 1):
    workdir = root / name
    prefix = f'[{i}/{len(points)}] {name}'
    if (workdir / 'summary.json').exists():
      print(f'{prefix}: finished, skipped', flush=True)
      continue
    resuming = (workdir / 'checkpoints').is_dir()
    print(f'{prefix}: {"resuming" if resuming else "starting"} ({arg})', flush=True)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(workdir / 'log.txt', 'a') as log:
      # The log is a file: no progress bar, unless extra asks for one (a key given twice is refused).
      quiet = [] if 'config.train.progress_bar' in cli.config_keys(extra) else ['--config.train.progress_bar=False']
      args = main_args(config_path, arg, str(workdir), [*quiet, *extra])
      code = call_stoppable([sys.executable, '-m', 'llm.main', *args], stdout=log, stderr=subprocess.STDOUT,
                            cwd=REPO)
    if code:
      failed.append(name)
      print(f'{prefix}: FAILED (exit {code}); see {workdir / "log.txt"}', flush=True)
      continue
    summary = files.read_json(workdir / 'summary.json')
    print(f'{prefix}: val_loss {summary["val_loss"]:.4f} in {time.time() - t0:.0f} s', flush=True)
  if failed:
    print(f'{len(failed)} point(s) failed: {", ".join(failed)}; rerun the same command to retry them')
  return 1 if failed else 0


def tpu_commands(config_path, points, root: str, extra) -> list[tuple[str, str, list[str], list[list[str]]]]:
  """Per point: its name, its VM's name, launch/tpu_vm.py describe (whether the VM exists), and
  create + run (the VM runs the point under nohup and keeps it)."""
  if not _ZONE.value:
    raise ValueError('--mode=tpu needs --zone (e.g. --zone=us-central2-b)')
  script = str(REPO / 'launch' / 'tpu_vm.py')
  dry = ['--dry_run'] if _DRY_RUN.value else []
  queued = ['--queued'] if _QUEUED.value else []
  per_point = []
  for i, (name, arg) in enumerate(points):
    vm_name = f'{_PREFIX.value}-{i}'
    vm = [f'--name={vm_name}', f'--zone={_ZONE.value}']
    per_point.append((name, vm_name, [sys.executable, script, 'describe', *vm, *queued], [
        [sys.executable, script, 'create', *vm, f'--accelerator={_ACCELERATOR.value}', *queued, *dry],
        [sys.executable, script, 'run', *vm, *dry, '--', *main_args(config_path, arg, f'{root}/{name}', extra)]]))
  return per_point


def main(argv):
  extra = argv[1:]
  repeated = cli.repeated_key(extra)
  if repeated:  # each point's llm.main would refuse it, one log at a time
    raise ValueError(f'among the flags after --: {repeated}')
  config_path, points = load_sweep(_SWEEP.value)
  if _MODE.value == 'local':
    # Each point's llm.main runs in the repository (its default data folders are relative to it): the
    # sweep's own paths, relative to where the sweep was started, are made absolute for it.
    root = files.check_writable(Path(_ROOT.value).absolute())  # a file, or a folder under one, is refused here
    sys.exit(run_local(str(Path(config_path).absolute()), points, root, extra))
  if _MODE.value == 'print':
    for name, arg in points:
      print(shlex.join(['python', '-m', 'llm.main',
                        *main_args(config_path, arg, f'{_ROOT.value}/{name}', extra)]))
    return
  ended = []
  for i, (name, vm, describe, launch) in enumerate(tpu_commands(config_path, points, _ROOT.value, extra), 1):
    prefix = f'[{i}/{len(points)}] {name}'
    delete = f'python launch/tpu_vm.py delete {shlex.join(describe[3:])}'
    # A VM of the point's name was made by an earlier run of the sweep, which launched the point there.
    found = None if _DRY_RUN.value else subprocess.run(describe, capture_output=True, text=True)
    if found and found.returncode == 0:
      state = found.stdout.splitlines()[-1].strip()  # after the gcloud command that tpu_vm.py prints
      if state in ENDED_STATES:
        ended.append(name)
        # One being deleted is on its way out: telling the user to delete it would send them to do it again.
        todo = 'wait until its deletion ends' if state == 'DELETING' else f'delete it ({delete})'
        print(f'{prefix}: VM {vm} is {state}, its point is not running: {todo}, then rerun the same command',
              flush=True)
      else:
        print(f'{prefix}: VM {vm} exists ({state}), skipped (to launch the point again, delete it: {delete})',
              flush=True)
      continue
    for cmd in launch:
      print(f'# {shlex.join(cmd[1:])}', flush=True)
      code = subprocess.call(cmd)
      if code == 0:
        continue
      then = ('rerun the same command to continue (points whose VM exists are skipped)' if cmd[2] == 'create' else
              f'VM {vm} exists but its point did not start: delete it ({delete}), then rerun the same command')
      sys.exit(f'llm.sweep: {prefix}: launch/tpu_vm.py {cmd[2]} failed (exit {code}; its error is above); {then}')
  if ended:
    sys.exit(f'llm.sweep: {len(ended)} point(s) not launched, their VM has ended: {", ".join(ended)}; once those VMs '
             'are deleted (see above), rerun the same command')

if __name__ == '__main__':
  cli.run(main, 'llm.sweep', positional=True)  # passed on to llm.main
