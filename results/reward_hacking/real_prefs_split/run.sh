#!/usr/bin/env bash
# Reward models on real preferences (configs/reward_model_hh.py, hh-rlhf and :alpaca) from the two
# copying-base SFT policies RUNS/sft_copy_s0 and _s1 (results/sft_recipe/copy_base_chain.sh), with
# the code in CODE (default: this checkout). Run it with the code of e14d9e8^ (pairs split by a
# hash of the whole pair) as SPLIT=old and with e14d9e8 or later (split by prompt) as SPLIT=new:
#   git worktree add ../old e14d9e8^
#   CODE=../old RUNS=$PWD/runs/copy_base SPLIT=old bash results/reward_hacking/real_prefs_split/run.sh
#   RUNS=runs/copy_base SPLIT=new bash results/reward_hacking/real_prefs_split/run.sh
# then python -m results.reward_hacking.real_prefs_split.collect RUNS/rm_real_* (the table and plot here).
set -euo pipefail
cd "${CODE:-$(dirname "$0")/../../..}"
runs=${RUNS:-runs/copy_base}
split=${SPLIT:?SPLIT=old or SPLIT=new: which split the checked-out code makes}
for s in 0 1; do
  for source in hh alpaca; do
    arg=$([[ $source == alpaca ]] && echo :alpaca || true)
    python -m llm.main --config=configs/reward_model_hh.py$arg --config.init_from=$runs/sft_copy_s$s \
        --config.model.smear_keys=True --workdir=$runs/rm_real_${source}_${split}_s$s
  done
done
