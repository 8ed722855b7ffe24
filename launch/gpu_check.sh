#!/usr/bin/env bash
# The accelerator check issue 12 asks for, as one script for a GPU host (a session lent one runs
# it once and reports its output): the GPT-2 124M train step in bfloat16 with the XLA attention
# path and with cuDNN flash attention (tokens/s, MFU against the datasheet peak), and KV-cache
# decoding at batch 1 and 64. Each line printed is one benchmark's JSON, host included.
#   bash launch/gpu_check.sh            # from the repository root, on the GPU host
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
  python -m pip install -q -r requirements.txt "jax[cuda12]==$(grep '^jax==' requirements.txt | cut -d= -f3)"
fi
python -c 'import jax; print(jax.devices())'
shape=(--layers=12 --heads=12 --dim=768 --seq=1024 --vocab=50304 --dtype=bfloat16 --remat=dots)
for impl in xla cudnn; do
  python -m llm.bench "${shape[@]}" --batch="${GPU_BATCH:-32}" --steps=20 --warmup=3 --attention_impl=$impl
done
python -m llm.bench --decode --layers=12 --heads=12 --dim=768 --vocab=50304 --context=1024 --decode_batches=1,64
