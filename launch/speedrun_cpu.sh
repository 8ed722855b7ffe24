#!/usr/bin/env bash
# The whole pipeline on a CPU host, ending in its report card (nanochat's speedrun):
# tokenizer + pretraining, SFT, GRPO, the base / chat / rl evaluation suites, the report.
#   bash launch/speedrun_cpu.sh                    # runs/speedrun_cpu/{base,sft,rl}, results/report_cpu/report.md
#   SPEEDRUN_TINY=1 bash launch/speedrun_cpu.sh    # a few steps of a tiny model: checks the script (~4 min)
# Every stage resumes where it stopped when the script runs again (a finished one only re-evaluates).
# Env: RUNS (run folder), REPORT (report folder), LLM_DATA_DIR (the data sets, default ../shared/data),
# GRPO_STEPS (200), CHAT_LIMIT (items per chat evaluator, 200), SPEEDRUN_TINY.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${LLM_DATA_DIR:-../shared/data}
start=$(date +%s)
if [[ -n "${SPEEDRUN_TINY:-}" ]]; then
  runs=${RUNS:-runs/speedrun_tiny}; report=${REPORT:-$runs/report}
  seq=(--config.model.max_seq_len=128 --config.train.seq_len=128)
  base=(--config=tests/tiny_config.py "${seq[@]}" --config.train.steps=4 --config.data.max_docs=200)
  sft=(--config=tests/tiny_config.py:sft --config.train.steps=4)
  rl=(--config=tests/tiny_config.py:grpo --config.train.steps=2)
  limit=(--limit=4); chat_limit=(--limit=2)
else
  runs=${RUNS:-runs/speedrun_cpu}; report=${REPORT:-results/report_cpu}
  base=(--config=configs/pretrain_small.py)
  sft=(--config=configs/sft_small.py)
  rl=(--config=configs/grpo_arith.py --config.train.steps=${GRPO_STEPS:-200})
  limit=(); chat_limit=(--limit=${CHAT_LIMIT:-200})
fi
stage() { echo "=== $1 ($(( $(date +%s) - start ))s in)" >&2; }

stage pretrain
python -m llm.main "${base[@]}" --workdir="$runs/base"
stage sft
python -m llm.main "${sft[@]}" --workdir="$runs/sft" --config.init_from="$runs/base"
stage grpo
python -m llm.main "${rl[@]}" --workdir="$runs/rl" --config.init_from="$runs/sft"

corpora=(--corpus="$data/tinystories_val_sample" --corpus="$data/tinyshakespeare")
for run in base sft rl; do
  stage "eval $run"
  python -m llm.eval --workdir="$runs/$run" --suite=base "${corpora[@]}" "${limit[@]}"
  [[ $run == base ]] || python -m llm.eval --workdir="$runs/$run" --suite=chat "${chat_limit[@]}"
  [[ $run == base ]] || python -m llm.eval --workdir="$runs/$run" --suite=rl "${limit[@]}"
done
stage report
python -m llm.report --runs="$runs/base,$runs/sft,$runs/rl" --out="$report"
echo "speedrun: $(( $(date +%s) - start ))s wall time; report in $report/report.md" >&2
