#!/usr/bin/env bash
# The tables of results/sft_recipe from the runs of run.sh: each base's in-context copying
# (python -m llm.eval --suite=copying), each SFT group over its seeds (python -m llm.seeds), and a
# copy of every run's config, summary, metrics and evaluations under results/sft_recipe/runs/.
#   bash results/sft_recipe/collect.sh [RUNS]      # RUNS: run.sh's folder, default runs/sft_recipe
#   bash results/sft_recipe/collect.sh results/sft_recipe/runs      # the tables from the committed runs
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-runs/sft_recipe}
out=results/sft_recipe
bases=(base0 base1 base2)
sfts=(sft_across_s0 sft_across_s1 sft_across_s2 sft_isolated_s1 sft_isolated_copy_numbers_s1
      sft_isolated_1200_steps_s0 sft_isolated_1200_steps_s1 sft_isolated_1200_steps_s2)
for b in "${bases[@]}"; do
  [[ -f $runs/$b/eval/copying.json ]] || python -m llm.eval --workdir="$runs/$b" --suite=copying
done
for r in "${bases[@]}" "${sfts[@]}"; do
  # RUNS=results/sft_recipe/runs: the tables again from the committed copies, nothing to copy.
  [[ $(realpath "$runs/$r") == $(realpath -m "$out/runs/$r") ]] && continue
  mkdir -p "$out/runs/$r/eval"
  cp "$runs/$r"/{config.json,summary.json,metrics.jsonl} "$out/runs/$r/"
  cp "$runs/$r"/eval/*.json "$out/runs/$r/eval/" 2>/dev/null || true
done
g() { local IFS=,; echo "$1=${*:2}"; }
python -m llm.seeds --out="$out/bases" --keys=copy_digits_prob,copy_digits_first_prob,copy_tokens_prob,val_bpb \
  --group="$(g 'configs/pretrain_small.py, seeds 0-2' $out/runs/base0 $out/runs/base1 $out/runs/base2)"
python -m llm.seeds --out="$out" \
  --keys=arith_acc_tool,arith_copy_acc,phrasing_acc_tool,phrasing_copy_acc,arith_acc_no_tool,val_arithmetic_loss,val_gsm8k_loss \
  --group="$(g 'isolated, 1200 steps (now)' $out/runs/sft_isolated_1200_steps_s{0,1,2})" \
  --group="$(g 'across, 600 steps (before)' $out/runs/sft_across_s{0,1,2})" \
  --group="$(g 'isolated, 600 steps' $out/runs/sft_isolated_s1)" \
  --group="$(g 'isolated + copy_numbers, 600 steps' $out/runs/sft_isolated_copy_numbers_s1)"
