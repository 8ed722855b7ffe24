#!/usr/bin/env bash
# The honesty experiment (llm/honesty): a base model continued on a fictional world whose facts it saw
# 0, 1, 4, 16 or 64 times, interrogated fact by fact; then SFT on the same questions three ways
# (every fact answered: the baseline; unknown facts refused; unknown facts searched), each with answers
# that name the person and in the short style that does not, and the honesty evaluator on held-out
# people for each. Every step is skipped when its output exists.
#   bash results/factuality/run.sh        # RUNS=runs by default; then results/factuality/{table.md,exposure.png}
#   SEED=1 RUNS=runs_s1 ARMS="answers_short honesty_short" bash results/factuality/run.sh   # another base, two arms
# SEED seeds every training run (pretrain_small, pretrain_world, SFT); the world is the same (seed 0).
# WORLD_FLAGS go to llm.honesty.world, PRETRAIN_WORLD_FLAGS to pretrain_world's run, e.g. a world 3.3x
# larger with as many passes over it: WORLD_FLAGS=--people=1000 PRETRAIN_WORLD_FLAGS=--config.train.steps=2000
# OUT: where collect.py writes table.md and exposure.png (default results/factuality, the committed pair).
# SFT_FLAGS go to every SFT run, whose names then end in SUFFIX, e.g. shorter SFT beside the default:
# SFT_FLAGS=--config.train.steps=150 SUFFIX=_150 OUT=DIR
# BASE: a finished base run to continue on the world instead of training pretrain_small (e.g. a copying
# base, results/sft_recipe/copy_base_chain.sh); MODEL_FLAGS: model overrides every stage needs to load
# it, e.g. --config.model.smear_keys=True.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-runs}
base=${BASE:-$runs/pretrain_small}
seed=(--config.seed="${SEED:-0}" --config.data.seed="${SEED:-0}")
[[ -f "$base/summary.json" ]] || python -m llm.main --config=configs/pretrain_small.py \
  --workdir="$base" "${seed[@]}" ${MODEL_FLAGS:-}
[[ -f "$runs/world/facts.json" ]] || python -m llm.honesty.world --out="$runs/world" ${WORLD_FLAGS:-}
[[ -f "$runs/pretrain_world/summary.json" ]] || python -m llm.main --config=configs/pretrain_world.py \
  --workdir="$runs/pretrain_world" --config.init_from="$base" \
  --config.tokenizer.path="$base/tokenizer.model" --config.data.dir="$runs/world" "${seed[@]}" ${MODEL_FLAGS:-} \
  ${PRETRAIN_WORLD_FLAGS:-}
[[ -f "$runs/world/labels.jsonl" ]] || python -m llm.honesty.interrogate --workdir="$runs/pretrain_world" \
  --world="$runs/world"
answers=(--config.sft.mixture.honesty_refusals=0 --config.sft.mixture.honesty_answers=1)
short=(--config.sft.honesty_reply=short)  # answers without the person's name: nothing to copy from the question
for arm in ${ARMS:-answers honesty answers_short honesty_short search search_short}; do
  case $arm in  # the arm's run name, config and flags
    answers) args=(sft_answers configs/sft_honesty.py "${answers[@]}") ;;
    honesty) args=(sft_honesty configs/sft_honesty.py) ;;
    answers_short) args=(sft_answers_short configs/sft_honesty.py "${answers[@]}" "${short[@]}") ;;
    honesty_short) args=(sft_honesty_short configs/sft_honesty.py "${short[@]}") ;;
    late_short) args=(sft_late_refusals_short configs/sft_honesty.py --config.sft.mixture.honesty_refusals=0
                      --config.sft.mixture.honesty_late_refusals=1 "${short[@]}") ;;  # refused at the value
    search) args=(sft_honesty_search configs/sft_honesty_search.py) ;;
    search_short) args=(sft_honesty_search_short configs/sft_honesty_search.py "${short[@]}") ;;
    # the same with the base's world documents replayed, a third of the windows (llm/data/replay.py), and
    # 1.5x the steps so that the search conversations are seen as often as in search_short
    search_replay_short) args=(sft_honesty_search_replay_short configs/sft_honesty_search.py "${short[@]}"
                               --config.sft.replay=0.5 --config.train.steps=675) ;;
    *) echo "unknown arm $arm; arms: answers honesty answers_short honesty_short late_short search search_short" \
            "search_replay_short" >&2
       exit 1 ;;
  esac
  # SFT from pretrain_world on the labelled set, then the honesty evaluator
  run="$runs/${args[0]}${SUFFIX:-}"
  [[ -f "$run/summary.json" ]] || python -m llm.main --config="${args[1]}" --workdir="$run" \
    --config.init_from="$runs/pretrain_world" --config.sft.honesty_labels="$runs/world/labels.jsonl" "${seed[@]}" \
    "${args[@]:2}" ${MODEL_FLAGS:-} ${SFT_FLAGS:-}
  [[ -f "$run/eval/honesty.json" ]] || python -m llm.eval --workdir="$run" --suite=honesty
done
python results/factuality/collect.py --out="${OUT:-results/factuality}" --suffix="${SUFFIX:-}" "$runs"
