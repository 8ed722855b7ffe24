#!/usr/bin/env bash
# Runs on every worker of a Cloud TPU VM (launch/tpu_vm.py ssh's here with --worker=all):
# a venv with jax[tpu] and the pinned requirements, then the training command.
# JAX_COORDINATOR_ADDRESS-free: on TPU VMs jax.distributed.initialize() finds its peers.
# Output goes to ~/llm.log on each worker, appended (tpu_vm.py starts this in the background).
set -euo pipefail
cd "$(dirname "$0")/.."

# A slice of several workers needs its data and its token cache on storage all of them see: process 0
# builds the tokenizer and token caches there while the others wait, then each reads them (a
# worker's own ~/.cache/llm or ./data would be built, or missing, on each). The workers are counted
# as jax.distributed finds them: $TPU_WORKER_HOSTNAMES where set (GKE), else the VM's metadata.
# Only the flags are read: a config file that sets both itself needs them given again.
workers=${TPU_WORKER_HOSTNAMES:-$(curl -sf --max-time 10 -H 'Metadata-Flavor: Google' \
  http://metadata.google.internal/computeMetadata/v1/instance/attributes/worker-network-endpoints 2>/dev/null || true)}
IFS=, read -ra hosts <<< "$workers"
has_flag() {  # has_flag NAME ARGS...: ARGS give --NAME a value (--NAME=VALUE or --NAME VALUE)
  local name=$1 prev=''
  shift
  for arg in "$@"; do
    [[ $arg == "--$name="?* || ( $prev == "--$name" && -n $arg ) ]] && return 0
    prev=$arg
  done
  return 1
}
if [ "${#hosts[@]}" -gt 1 ] && ! { has_flag config.data.dir "$@" && has_flag config.data.cache_dir "$@"; }; then
  echo "run_tpu.sh: ${#hosts[@]} workers need --config.data.dir=DIR and --config.data.cache_dir=DIR on storage all of them see (a gcsfuse mount or NFS path; see the README's TPU command)" >&2
  exit 1
fi

# The pinned packages need Python >= 3.11; the default image (tpu-ubuntu2204-base) has 3.10 as python3.
PY=$(command -v python3.13 || command -v python3.12 || command -v python3.11 || true)
if [ -z "$PY" ]; then
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv
  PY=$(command -v python3.11 || true)
fi
if [ -z "$PY" ] || ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "run_tpu.sh: no Python >= 3.11 on $(hostname) (python3 is $(python3 -V 2>&1)); install one, or create the VM with a newer --runtime" >&2
  exit 1
fi

# Kept outside this folder, which tpu_vm.py replaces on every run; a new one when the requirements
# change, and one whose install was cut short (no .installed) is made again.
VENV="$HOME/.venv-llm-$(sha256sum requirements.txt | cut -c1-12)"
if [ ! -f "$VENV/.installed" ]; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r requirements.txt "jax[tpu]==$(grep '^jax==' requirements.txt | cut -d= -f3)" \
    -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  touch "$VENV/.installed"
fi
# A multi-host run on TPU VMs; not appended where given already (llm.main refuses a key given twice),
# with a value or, as a boolean may be, bare (--config.mesh.distributed) or off (--noconfig.mesh.distributed).
has_flag config.mesh.distributed "$@" || [[ " $* " =~ \ --(no)?config\.mesh\.distributed\  ]] ||
  set -- "$@" --config.mesh.distributed=True
exec "$VENV/bin/python" -m llm.main "$@"
