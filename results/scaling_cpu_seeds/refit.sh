#!/bin/bash
# The five fits of run.sh again, from the runs.csv each one committed (no run directories needed):
#   bash results/scaling_cpu_seeds/refit.sh      # ~5.5 minutes on 2 CPU cores
set -euo pipefail
OUT=${OUT:-results/scaling_cpu_seeds}
for fit in seed0 seed1 seed2 all_seeds all_seeds_total; do
  params=non_embedding
  [[ $fit == *_total ]] && params=total
  python -m llm.scaling fit --runs_csv=$OUT/$fit/runs.csv --params=$params --out=$OUT/$fit | tee $OUT/$fit/report.txt.new
  mv $OUT/$fit/report.txt.new $OUT/$fit/report.txt  # the old report stays if the fit fails
done
