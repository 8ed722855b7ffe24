"""Cloud TPU VM launcher, big_vision style: create, copy the code, run on every worker.

    python launch/tpu_vm.py create --name=llm-v4 --zone=us-central2-b --accelerator=v4-32 [--queued]
    python launch/tpu_vm.py run --name=llm-v4 --zone=us-central2-b -- \\
        --config=configs/pretrain_gpt2_124m.py --workdir=/gcs/runs/gpt2_124m \\
        --config.data.dir=/gcs/data --config.data.cache_dir=/gcs/cache
    python launch/tpu_vm.py describe --name=llm-v4 --zone=us-central2-b   (its state; exit 1: no such VM)
    python launch/tpu_vm.py delete --name=llm-v4 --zone=us-central2-b

`create --queued` asks for the slice as a queued resource (it waits in the queue until capacity
frees up, which is how large and spot slices are had) and polls until it is ACTIVE; `delete
--queued` removes the request with its VM. `run` copies this checkout's code (CODE) into ~/llm on
every worker, replacing only those folders, and starts launch/run_tpu.sh there under nohup,
appending to ~/llm.log after a line that dates the start. A preempted (--spot) or failed job is
not restarted: `delete`, `create` and `run` again, and the run resumes from its last checkpoint. --dry_run
prints the gcloud commands instead of running them.
A multi-host run's --workdir, --config.data.dir and --config.data.cache_dir must be storage every
worker sees (a GCS bucket mounted with gcsfuse, or a shared disk): checkpoints are written by all
hosts together, and process 0 builds the tokenizer and token caches that the others then read.
"""
import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE = ('llm', 'configs', 'launch', 'requirements.txt')  # what `run` copies to every worker
# Google's TPU software version for JAX by accelerator type, the part before '-' of v5litepod-16
# (cloud.google.com/tpu/docs/runtimes): v5e, v5p and v6e have their own; v4 and older the base image.
RUNTIMES = {'v6e': 'v2-alpha-tpuv6e', 'v5p': 'v2-alpha-tpuv5', 'v5litepod': 'v2-alpha-tpuv5-lite',
            'v5e': 'v2-alpha-tpuv5-lite', 'v4': 'tpu-ubuntu2204-base', 'v3': 'tpu-ubuntu2204-base',
            'v2': 'tpu-ubuntu2204-base'}


def queued_state_command(args) -> list[str]:
  return (['gcloud', 'compute', 'tpus', 'queued-resources', 'describe', args.name, f'--zone={args.zone}',
           '--format=value(state.state)'] + ([f'--project={args.project}'] if args.project else []))


def commands(args, train_args: list[str]) -> list[list[str]]:
  tpu = ['gcloud', 'compute', 'tpus', 'tpu-vm']
  queued = ['gcloud', 'compute', 'tpus', 'queued-resources']
  where = [args.name, f'--zone={args.zone}'] + ([f'--project={args.project}'] if args.project else [])
  spot = ['--spot'] if args.spot else []
  if args.action == 'create' and args.queued:
    return [queued + ['create'] + where + [f'--node-id={args.name}', f'--accelerator-type={args.accelerator}',
                                           f'--runtime-version={args.runtime}'] + spot]
  if args.action == 'create':
    return [tpu + ['create'] + where + [f'--accelerator-type={args.accelerator}', f'--version={args.runtime}'] + spot]
  if args.action == 'describe' and args.queued:
    return [queued_state_command(args)]
  if args.action == 'describe':
    return [tpu + ['describe'] + where + ['--format=value(state)']]
  if args.action == 'delete' and args.queued:
    return [queued + ['delete'] + where + ['--force', '--quiet']]
  if args.action == 'delete':
    return [tpu + ['delete'] + where + ['--quiet']]
  remote = f'~/{args.remote_dir}'
  # Appended, after a line naming the start: a rerun to resume keeps the log of the job it resumes.
  job = f'launch/run_tpu.sh {shlex.join(train_args)}'
  run = (f'cd {remote} && echo "==== $(date -u +%Y-%m-%dT%H:%M:%SZ) start:" {shlex.quote(job)} >> ~/llm.log && '
         f'nohup bash {job} >> ~/llm.log 2>&1 &')
  # Only the code is replaced (a file deleted here goes there too): data, caches or anything else
  # put in the folder stay.
  clear = f'mkdir -p {remote} && cd {remote} && rm -rf {" ".join(CODE)}'
  return [
      tpu + ['ssh'] + where + ['--worker=all', f'--command={clear}'],
      tpu + ['scp', '--recurse'] + [f'{REPO}/{p}' for p in CODE]
      + [f'{args.name}:{remote}', f'--zone={args.zone}', '--worker=all']
      + ([f'--project={args.project}'] if args.project else []),
      tpu + ['ssh'] + where + ['--worker=all', f'--command={run}'],
  ]


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('action', choices=['create', 'run', 'describe', 'delete'])
  p.add_argument('--name', required=True, help='TPU VM name')
  p.add_argument('--zone', required=True)
  p.add_argument('--project', default='')
  p.add_argument('--accelerator', default='v4-8', help='e.g. v4-32, v5litepod-16, v6e-8')
  p.add_argument('--runtime', default='', help="TPU VM software version (default: Google's for the accelerator: "
                 'v2-alpha-tpuv6e for v6e, v2-alpha-tpuv5 for v5p, v2-alpha-tpuv5-lite for v5e, '
                 'tpu-ubuntu2204-base for v4 and older)')
  p.add_argument('--spot', action='store_true', help='preemptible capacity: nothing restarts a preempted job; '
                 'delete, create and run again (the run resumes from its last checkpoint)')
  p.add_argument('--queued', action='store_true', help='create/describe/delete as a queued resource')
  p.add_argument('--poll_s', type=float, default=60, help='create --queued: seconds between state checks')
  p.add_argument('--remote_dir', default='llm')
  p.add_argument('--dry_run', action='store_true', help='print the commands, run nothing')
  i = argv.index('--') if '--' in argv else len(argv)
  args = p.parse_args(argv[:i])
  if args.action == 'create' and not args.runtime:
    kind = args.accelerator.split('-')[0]
    if kind not in RUNTIMES:
      p.error(f'--accelerator={args.accelerator}: no default software version for {kind!r} (known: '
              f'{", ".join(RUNTIMES)}); pass --runtime=VERSION')
    args.runtime = RUNTIMES[kind]
  return args, argv[i + 1:]


def main(argv):
  args, train_args = parse(argv)
  if args.action == 'run' and not train_args:
    sys.exit('tpu_vm.py run: give the training flags after --, e.g. -- --config=configs/X.py --workdir=DIR')
  for cmd in commands(args, train_args):
    print(shlex.join(cmd), flush=True)
    if not args.dry_run:
      call(cmd)
  if args.action == 'create' and args.queued:
    wait_until_active(args)


def call(cmd: list[str], capture: bool = False) -> str:
  """Runs cmd, its stderr shown line by line as it comes, and its stdout too unless captured (then
  returned). A failure ends tpu_vm.py in one line: the command, and its stderr's last line (gcloud's error)."""
  try:
    with subprocess.Popen(cmd, stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE, text=True) as proc:
      last = ''
      for line in proc.stderr:
        sys.stderr.write(line)
        last = line.strip() or last
      out = proc.stdout.read() if capture else ''
  except FileNotFoundError:
    sys.exit(f'tpu_vm.py: {cmd[0]} not found: install the Google Cloud CLI and put gcloud on PATH')
  if proc.returncode:
    sys.exit(f'tpu_vm.py: {shlex.join(cmd)} failed (exit {proc.returncode}): {last or "it printed no error"}')
  return out


def wait_until_active(args):
  """A queued resource is created at once but gets its VM only when capacity frees up."""
  cmd = queued_state_command(args)
  print(f'until ACTIVE, every {args.poll_s:g} s: {shlex.join(cmd)}', flush=True)
  while not args.dry_run:
    state = call(cmd, capture=True).strip()
    if state == 'ACTIVE':
      return
    if state in ('FAILED', 'SUSPENDING', 'SUSPENDED'):  # it will never become ACTIVE
      sys.exit(f'tpu_vm.py: queued resource {args.name} is {state}; see {shlex.join(cmd[:-1])}')
    print(f'{args.name}: {state}', flush=True)
    time.sleep(args.poll_s)


if __name__ == '__main__':
  main(sys.argv[1:])
