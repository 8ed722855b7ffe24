#!/bin/bash
# The CPU scaling study over three seeds (parameter init and data order): the 15 IsoFLOP points, one
# size under each slice's smallest (isoflop_cpu_below) and the held-out larger point, per seed; then
# one fit per seed, one over all three, and one over all three with N counting every parameter. Rerunning continues where it stopped (llm.sweep skips
# finished points and resumes interrupted ones).
#   ROOT=runs/scaling_seeds bash results/scaling_cpu_seeds/run.sh      # ~2 hours on 2 CPU cores
set -euo pipefail
ROOT=${ROOT:-runs/scaling_seeds}
OUT=${OUT:-results/scaling_cpu_seeds}
SEEDS=${SEEDS:-0 1 2}
for s in $SEEDS; do
  for grid in isoflop_cpu isoflop_cpu_below; do
    python -m llm.sweep --sweep=configs/scaling.py:$grid --root=$ROOT/isoflop_s$s -- --config.seed=$s --config.data.seed=$s
  done
  python -m llm.sweep --sweep=configs/scaling.py:holdout_cpu --root=$ROOT/holdout_s$s -- --config.seed=$s --config.data.seed=$s
done
all_runs=() all_holdout=()
for s in $SEEDS; do
  mkdir -p $OUT/seed$s
  python -m llm.scaling fit --runs=$ROOT/isoflop_s$s --holdout=$ROOT/holdout_s$s --out=$OUT/seed$s | tee $OUT/seed$s/report.txt
  all_runs+=(--runs=$ROOT/isoflop_s$s) all_holdout+=(--holdout=$ROOT/holdout_s$s)
done
mkdir -p $OUT/all_seeds
python -m llm.scaling fit "${all_runs[@]}" "${all_holdout[@]}" --out=$OUT/all_seeds | tee $OUT/all_seeds/report.txt
mkdir -p $OUT/all_seeds_total
python -m llm.scaling fit "${all_runs[@]}" "${all_holdout[@]}" --params=total --out=$OUT/all_seeds_total \
  | tee $OUT/all_seeds_total/report.txt
