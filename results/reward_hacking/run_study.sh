#!/bin/bash
# The reward hacking study (issue 16) on a 2-core CPU, in order; every stage ran on 2026-12-02
# (README.md here: the results and measured times; about 100 minutes from an existing base).
# The largest proxy (64k pairs, ~30 min) is run apart: see README.md.
#
#   bash results/reward_hacking/run_study.sh            # from the repository root
#
# Every step resumes if rerun (the same --workdir), so a killed study continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=results/reward_hacking
main() { python -m llm.main "$@"; }

# 1. The policy: the pretrain_small base (~10 min), then SFT on the gold setting's conversations (~3 min).
[ -f runs/pretrain_small/summary.json ] || main --config=configs/pretrain_small.py --workdir=runs/pretrain_small
main --config=configs/sft_gold.py --workdir=runs/sft_gold

# 2. Proxy reward models on 1k / 4k / 16k / 32k gold-labelled pairs, and 4k with 25% of labels
#    flipped (measured alone: ~3, 3, 8, 15, 3 min). Held-out accuracy against gold:
#    rm_val_seen_topics_accuracy (training topics) and rm_val_accuracy (held-out topics).
main --config=configs/reward_model_gold.py:pairs=1000 --workdir=runs/rm_gold_1k
main --config=configs/reward_model_gold.py:pairs=4000 --workdir=runs/rm_gold_4k
main --config=configs/reward_model_gold.py:pairs=16000 --workdir=runs/rm_gold_16k
main --config=configs/reward_model_gold.py:pairs=32000 --workdir=runs/rm_gold_32k
main --config=configs/reward_model_gold.py:pairs=4000,noise=0.25 --workdir=runs/rm_gold_4k_noisy
main --config=configs/reward_model_gold.py:pairs=4000,seed=1 --workdir=runs/rm_gold_4k_s1  # an ensemble's second member

# 3. Real preferences, reported beside the length-only baseline (~4 min each), from the sft_small
#    chat model where it exists, else from sft_gold (the same model; any run's trunk will do).
chat=runs/sft_small; [ -f $chat/summary.json ] || chat=runs/sft_gold
main --config=configs/reward_model_hh.py --config.init_from=$chat --workdir=runs/rm_hh
main --config=configs/reward_model_hh.py:alpaca --config.init_from=$chat --workdir=runs/rm_alpaca

# 4. Best-of-n against each proxy: 32 held-out prompts x 64 samples, proxy and gold of the
#    proxy-best at KL_bon = log n - (n-1)/n (~1 min each; the same samples for every proxy).
for rm in 1k 4k 16k 32k 4k_noisy; do
  python -m llm.rl.best_of_n --policy=runs/sft_gold --proxy=runs/rm_gold_$rm --n=1,2,4,8,16,32,64 --prompts=32 \
      --out=$OUT/bon_$rm.json
done
python -m llm.rl.best_of_n --policy=runs/sft_gold --proxy=runs/rm_gold_4k,runs/rm_gold_4k_s1 --ensemble=min \
    --n=1,2,4,8,16,32,64 --prompts=32 --out=$OUT/bon_4k_ensemble_min.json

# 5. RL against the proxies (GRPO + beta x KL to the SFT policy, 40 steps, ~4 min each): the
#    proxy budget at beta 0.02, the KL coefficient on the 4k proxy, and the worst-case ensemble.
for rm in 1k 4k 16k 32k; do
  main --config=configs/rlhf_gold.py:proxy=rm_gold_$rm,beta=0.02 --workdir=runs/rlhf_${rm}_b0.02
done
main --config=configs/rlhf_gold.py:proxy=rm_gold_4k,beta=0.0 --workdir=runs/rlhf_4k_b0
main --config=configs/rlhf_gold.py:proxy=rm_gold_4k,beta=0.1 --workdir=runs/rlhf_4k_b0.1
main --config=configs/rlhf_gold.py:proxy=rm_gold_4k,beta=0.02 --config.rlhf.proxy=runs/rm_gold_4k,runs/rm_gold_4k_s1 \
    --config.rlhf.ensemble=min --workdir=runs/rlhf_4k_ens_min

# 6. The report: accuracies, fitted coefficients, plots (and rlhf_samples.jsonl in each RL run
#    holds the hacked responses with their proxy and gold scores).
rms=runs/rm_gold_1k,runs/rm_gold_4k,runs/rm_gold_16k,runs/rm_gold_32k,runs/rm_gold_4k_noisy,runs/rm_gold_4k_s1
rms=$rms,runs/rm_hh,runs/rm_alpaca
bons=$OUT/bon_1k.json,$OUT/bon_4k.json,$OUT/bon_16k.json,$OUT/bon_32k.json,$OUT/bon_4k_noisy.json
bons=$bons,$OUT/bon_4k_ensemble_min.json
rls=runs/rlhf_1k_b0.02,runs/rlhf_4k_b0.02,runs/rlhf_16k_b0.02,runs/rlhf_32k_b0.02,runs/rlhf_4k_b0,runs/rlhf_4k_b0.1
rls=$rls,runs/rlhf_4k_ens_min
python -m llm.rl.hacking_report --rm=$rms --bon=$bons --rl=$rls --out=$OUT
# Where the largest proxies err, by the rubric part that decides each held-out pair:
python -m results.reward_hacking.errors_by_component runs/rm_gold_16k runs/rm_gold_32k > $OUT/errors_by_component.md
