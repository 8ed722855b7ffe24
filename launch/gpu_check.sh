#!/usr/bin/env bash
# The accelerator check issue 12 asks for, as one script for a GPU host (a session lent one runs
# it once and reports its output): the GPT-2 124M train step in bfloat16 with the XLA attention
# path and with cuDNN flash attention (tokens/s, MFU against the datasheet peak), and KV-cache
# decoding at batch 1 and 64, each beside the PyTorch yardstick on the same GPU in bf16 autocast
# (llm/torch_yardstick.py; skipped where torch has no CUDA). Each line printed is one benchmark's
# JSON, host included; a benchmark that fails is reported and the others still run.
#   bash launch/gpu_check.sh            # from the repository root, on the GPU host
set -uo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
  python3 -m pip install -q -r requirements.txt "jax[cuda12]==$(grep '^jax==' requirements.txt | cut -d= -f3)"
fi
python3 -c 'import jax; print(jax.__version__, jax.devices())'
shape=(--layers=12 --heads=12 --dim=768 --vocab=50304 --dtype=bfloat16)
failed=0
for impl in xla cudnn; do
  python3 -m llm.bench "${shape[@]}" --seq=1024 --remat=dots --batch="${GPU_BATCH:-32}" --steps=20 --warmup=3 \
    --attention_impl=$impl --reference || { echo "FAILED: train step, attention $impl"; failed=1; }
done
python3 -m llm.bench --decode "${shape[@]}" --context=1024 --decode_batches=1,64 \
  || { echo "FAILED: decode"; failed=1; }
exit $failed
