#!/usr/bin/env bash
# The reward hacking study (run_study.sh) redone on the copying base, whose 16k-pair proxy clears the
# issue's 90% (results/sft_recipe/copy_alphabet): proxies on 1k, 4k and 16k gold pairs from the same
# SFT policy, best-of-n and RL (beta 0.02, and 0.1 on the 4k proxy) against each, and the report.
# First results/sft_recipe/copy_base_chain.sh, which makes RUNS/sft_copy_sSEED and the 16k proxy
# RUNS/rm_copy_sSEED. Every run resumes if rerun.
#   RUNS=runs/copy_base SEED=0 bash results/reward_hacking/copy_base_study.sh   # OUT=results/reward_hacking/copy_base_s0
# MODEL_FLAGS as in copy_base_chain.sh (default: smeared keys). TAG names a redo's RL runs apart
# (TAG=_endfix: the RL runs and best-of-n again after the 2026-12-06 scoring fix, same policy and proxies).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-runs/copy_base}
s=${SEED:-0}
tag=${TAG:-}
out=${OUT:-results/reward_hacking/copy_base_s$s}
MODEL_FLAGS=${MODEL_FLAGS---config.model.smear_keys=True}
main() { python -m llm.main "$@" $MODEL_FLAGS; }
policy=$runs/sft_copy_s$s
declare -A proxy=([16k]=$runs/rm_copy_s$s [1k]=$runs/rm_copy_1k_s$s [4k]=$runs/rm_copy_4k_s$s)
main --config=configs/reward_model_gold.py:pairs=1000,seed=$s --config.init_from=$policy --workdir=${proxy[1k]}
main --config=configs/reward_model_gold.py:pairs=4000,seed=$s --config.init_from=$policy --workdir=${proxy[4k]}
mkdir -p "$out"
for rm in 1k 4k 16k; do
  python -m llm.rl.best_of_n --policy=$policy --proxy=${proxy[$rm]} --n=1,2,4,8,16,32,64 --prompts=32 --seed=$s \
      --out=$out/bon_$rm.json
  main --config=configs/rlhf_gold.py:beta=0.02 --config.rlhf.proxy=${proxy[$rm]} --config.init_from=$policy \
      --config.seed=$s --workdir=$runs/rlhf_copy_${rm}_b0.02_s$s$tag
done
main --config=configs/rlhf_gold.py:beta=0.1 --config.rlhf.proxy=${proxy[4k]} --config.init_from=$policy \
    --config.seed=$s --workdir=$runs/rlhf_copy_4k_b0.1_s$s$tag
python -m llm.rl.hacking_report --rm=${proxy[1k]},${proxy[4k]},${proxy[16k]} \
    --bon=$out/bon_1k.json,$out/bon_4k.json,$out/bon_16k.json \
    --rl=$runs/rlhf_copy_1k_b0.02_s$s$tag,$runs/rlhf_copy_4k_b0.02_s$s$tag,$runs/rlhf_copy_16k_b0.02_s$s$tag,$runs/rlhf_copy_4k_b0.1_s$s$tag \
    --out=$out
