"""Cloud TPU VM launcher, big_vision style: create, copy the code, run on every worker.

    python launch/tpu_vm.py create --name=llm-v4 --zone=us-central2-b --accelerator=v4-32
    python launch/tpu_vm.py run --name=llm-v4 --zone=us-central2-b -- \\
        --config=configs/pretrain_gpt2_124m.py --workdir=/gcs/runs/gpt2_124m
    python launch/tpu_vm.py delete --name=llm-v4 --zone=us-central2-b

`run` copies this checkout to every worker and starts launch/run_tpu.sh there under nohup,
logging to ~/llm.log. --dry_run prints the gcloud commands instead of running them.
A multi-host run's --workdir must be storage every worker sees (a GCS bucket mounted with
gcsfuse, or a shared disk): checkpoints are written by all hosts together.
"""
import argparse
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def commands(args, train_args: list[str]) -> list[list[str]]:
  tpu = ['gcloud', 'compute', 'tpus', 'tpu-vm']
  where = [args.name, f'--zone={args.zone}'] + ([f'--project={args.project}'] if args.project else [])
  if args.action == 'create':
    extra = ['--spot'] if args.spot else []
    return [tpu + ['create'] + where + [f'--accelerator-type={args.accelerator}',
                                        f'--version={args.runtime}'] + extra]
  if args.action == 'delete':
    return [tpu + ['delete'] + where + ['--quiet']]
  remote = f'~/{args.remote_dir}'
  run = (f'cd {remote} && nohup bash launch/run_tpu.sh {shlex.join(train_args)} '
         f'> ~/llm.log 2>&1 &')
  return [
      tpu + ['ssh'] + where + ['--worker=all', f'--command=rm -rf {remote} && mkdir -p {remote}'],
      tpu + ['scp', '--recurse'] + [f'{REPO}/{p}' for p in ('llm', 'configs', 'launch', 'requirements.txt')]
      + [f'{args.name}:{remote}', f'--zone={args.zone}', '--worker=all']
      + ([f'--project={args.project}'] if args.project else []),
      tpu + ['ssh'] + where + ['--worker=all', f'--command={run}'],
  ]


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('action', choices=['create', 'run', 'delete'])
  p.add_argument('--name', required=True, help='TPU VM name')
  p.add_argument('--zone', required=True)
  p.add_argument('--project', default='')
  p.add_argument('--accelerator', default='v4-8', help='e.g. v4-32, v5litepod-16, v6e-8')
  p.add_argument('--runtime', default='tpu-ubuntu2204-base', help='TPU VM software version')
  p.add_argument('--spot', action='store_true', help='preemptible capacity (resume is automatic)')
  p.add_argument('--remote_dir', default='llm')
  p.add_argument('--dry_run', action='store_true', help='print the commands, run nothing')
  if '--' in argv:
    i = argv.index('--')
    return p.parse_args(argv[:i]), argv[i + 1:]
  return p.parse_args(argv), []


def main(argv):
  args, train_args = parse(argv)
  if args.action == 'run' and not train_args:
    sys.exit('tpu_vm.py run: give the training flags after --, e.g. -- --config=configs/X.py --workdir=DIR')
  for cmd in commands(args, train_args):
    print(shlex.join(cmd), flush=True)
    if not args.dry_run:
      subprocess.run(cmd, check=True)


if __name__ == '__main__':
  main(sys.argv[1:])
