#!/usr/bin/env bash
# Runs on every worker of a Cloud TPU VM (launch/tpu_vm.py ssh's here with --worker=all):
# a venv with jax[tpu] and the pinned requirements, then the training command.
# JAX_COORDINATOR_ADDRESS-free: on TPU VMs jax.distributed.initialize() finds its peers.
# Output goes to ~/llm.log on each worker (tpu_vm.py starts this in the background).
set -euo pipefail
cd "$(dirname "$0")/.."

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
exec "$VENV/bin/python" -m llm.main "$@" --config.mesh.distributed=True
