#!/usr/bin/env bash
# report.md with its over-seeds section: the speedrun's runs (seed 0), results/sft_recipe's SFT runs
# of base seeds 1 and 2, GRPO from each of those (100 steps, as the speedrun's), and their evaluations.
#   RUNS=runs GRPO_STEPS=100 bash launch/speedrun_cpu.sh ... then: bash results/report_cpu/make_report.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
for s in 1 2; do
  sft=runs/sft_recipe/sft_isolated_1200_steps_s$s grpo=runs/grpo_seeds/grpo_s$s
  [[ -f $grpo/summary.json ]] || python -m llm.main --config=configs/grpo_arith.py --workdir=$grpo \
    --config.init_from=$sft --config.train.steps=100 --config.seed=$s --config.data.seed=$s
  python -m llm.eval --workdir=$grpo --suite=rl
  python -m llm.eval --workdir=$grpo --suite=chat --limit=200
  python -m llm.eval --workdir=$sft --suite=rl
done
python -m llm.report --runs=runs/speedrun_cpu/base,runs/speedrun_cpu/sft,runs/speedrun_cpu/rl --out=results/report_cpu \
  --seeds="SFT=runs/speedrun_cpu/sft,runs/sft_recipe/sft_isolated_1200_steps_s1,runs/sft_recipe/sft_isolated_1200_steps_s2" \
  --seeds="GRPO=runs/speedrun_cpu/rl,runs/grpo_seeds/grpo_s1,runs/grpo_seeds/grpo_s2" \
  --seed_keys=arith_acc_tool,arith_copy_acc,heldout_pass_at_1,heldout_pass_at_4
