#!/usr/bin/env bash
# The honesty experiment (llm/honesty): a base model continued on a fictional world whose facts it saw
# 0, 1, 4, 16 or 64 times, interrogated fact by fact; then SFT on the same questions three ways
# (every fact answered: the baseline; unknown facts refused; unknown facts searched) and the honesty
# evaluator on held-out people for each. Estimated at about an hour on 2 idle CPU cores (not yet run
# end to end): pretrain_small ~8 min (skipped if there), pretrain_world ~6, interrogation a few,
# each SFT a few, each evaluation a few. Every step is skipped when its output exists.
#   bash results/factuality/run.sh        # RUNS=runs by default; then results/factuality/{table.md,exposure.png}
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-runs}
[[ -f "$runs/pretrain_small/summary.json" ]] || python -m llm.main --config=configs/pretrain_small.py \
  --workdir="$runs/pretrain_small"
[[ -f "$runs/world/facts.json" ]] || python -m llm.honesty.world --out="$runs/world"
[[ -f "$runs/pretrain_world/summary.json" ]] || python -m llm.main --config=configs/pretrain_world.py \
  --workdir="$runs/pretrain_world" --config.init_from="$runs/pretrain_small" \
  --config.tokenizer.path="$runs/pretrain_small/tokenizer.model" --config.data.dir="$runs/world"
[[ -f "$runs/world/labels.jsonl" ]] || python -m llm.honesty.interrogate --workdir="$runs/pretrain_world" \
  --world="$runs/world"
sft() {  # name config extra...: SFT from pretrain_world on the labelled set, then the honesty evaluator
  [[ -f "$runs/$1/summary.json" ]] || python -m llm.main --config="$2" --workdir="$runs/$1" \
    --config.init_from="$runs/pretrain_world" --config.sft.honesty_labels="$runs/world/labels.jsonl" "${@:3}"
  python -m llm.eval --workdir="$runs/$1" --suite=honesty
}
sft sft_answers configs/sft_honesty.py --config.sft.mixture.honesty_refusals=0 --config.sft.mixture.honesty_answers=1
sft sft_honesty configs/sft_honesty.py
sft sft_honesty_search configs/sft_honesty_search.py
python results/factuality/collect.py "$runs"
