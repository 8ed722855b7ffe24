#!/usr/bin/env bash
# Issue 20's ablations: why SFT's calculator calls miscopy operands on some bases, and what helps.
# Every run below is one command of the project; runs resume if stopped. On 2 idle cores a base
# takes ~8 min, an SFT run of 600 steps ~8 min and of 1200 ~15 min: ~2 h 20 for all of them.
#   bash results/sft_recipe/run.sh     # RUNS=runs/sft_recipe by default; then results/sft_recipe/collect.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-runs/sft_recipe}
base() {  # name seed extra...: configs/pretrain_small.py with model and data seed
  python -m llm.main --config=configs/pretrain_small.py --workdir="$runs/$1" --config.seed=$2 --config.data.seed=$2 "${@:3}"
}
sft() {  # name base seed extra...: configs/sft_small.py with model and data seed
  python -m llm.main --config=configs/sft_small.py --workdir="$runs/$1" --config.init_from="$runs/$2" \
    --config.seed=$3 --config.data.seed=$3 "${@:4}"
}
across=(--config.sft.isolate_conversations=False --config.train.steps=600 --config.train.eval_every=200)  # before
isolated=(--config.sft.isolate_conversations=True --config.train.steps=600 --config.train.eval_every=200)
for s in 0 1 2; do
  base base$s $s
  sft sft_across_s$s base$s $s "${across[@]}"
  sft sft_isolated_1200_steps_s$s base$s $s  # configs/sft_small.py as it is now: isolated, 1200 steps
done
sft sft_isolated_s1 base1 1 "${isolated[@]}"
sft sft_isolated_copy_numbers_s1 base1 1 "${isolated[@]}" --config.sft.mixture.copy_numbers=1
bash results/sft_recipe/collect.sh "$runs"
