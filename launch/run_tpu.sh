#!/usr/bin/env bash
# Runs on every worker of a Cloud TPU VM (launch/tpu_vm.py ssh's here with --worker=all):
# a venv with jax[tpu] and the pinned requirements, then the training command.
# JAX_COORDINATOR_ADDRESS-free: on TPU VMs jax.distributed.initialize() finds its peers.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d .venv ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt "jax[tpu]==$(grep '^jax==' requirements.txt | cut -d= -f3)" \
    -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
fi
exec .venv/bin/python -m llm.main "$@" --config.mesh.distributed=True
