#!/usr/bin/env bash
# Does a base that copies in context lift the gold reward model past its repetition pairs? Per seed,
# two bases on the same tokenizer, then the same SFT and reward model on each:
#   copy:    the copy-task stage (every window the induction task, COPY_STEPS steps), then BOOK_STEPS
#            of books with a quarter of the windows still copy-task;
#   control: BOOK_STEPS of books from scratch (configs/pretrain_small.py as it is);
# then configs/sft_gold.py and configs/reward_model_gold.py:pairs=RM_PAIRS on each, the copying
# suite on each base, and the table (copy_base_table.py). Both arms use smeared keys and the copy
# windows draw from the whole vocabulary, each from its own alphabet: the recipe whose base copies
# ordinary tokens after the books (README, "The SFT recipe across bases"; 1,500 copy steps ~27 min
# on 2 CPU cores).
#   bash results/sft_recipe/copy_base_chain.sh                       # RUNS=runs/copy_base, SEEDS="0 1"
#   COPY_STEPS=4 BOOK_STEPS=4 SFT_STEPS=4 RM_STEPS=4 bash results/sft_recipe/copy_base_chain.sh   # a smoke run
# MODEL_FLAGS: model overrides for every stage (default: smeared keys; "" for plain keys, whose copy stage
# needs ~15k steps). COPY_FLAGS: the copy windows' tokens (default: the 4,096 most frequent, i.e. the
# whole vocabulary, alphabets from 4 tokens up; the earlier recipe's pool: repeat_vocab 255).
# ARMS: which bases to train and carry through SFT and the reward model (default "copy control"; "copy" alone
# makes what results/reward_hacking/copy_base_study.sh and results/factuality/run.sh's BASE need).
# DATA_DIR: a data root holding gutenberg_pd_books/ (default: ../shared/data); every run resumes. The copy stage
# checkpoints every 250 steps and keeps them all, so a stop loses little and copy_task_loss.py can draw its curve.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-runs/copy_base}
COPY_STEPS=${COPY_STEPS:-1500}
MODEL_FLAGS=${MODEL_FLAGS---config.model.smear_keys=True}
COPY_FLAGS=${COPY_FLAGS:---config.data.repeat_vocab=4096 --config.data.copy_alphabet_min=4}
BOOK_STEPS=${BOOK_STEPS:-700}
SFT_STEPS=${SFT_STEPS:-150}
RM_PAIRS=${RM_PAIRS:-16000}
ARMS=${ARMS:-copy control}
for b in $ARMS; do [[ $b == copy || $b == control ]] || { echo "ARMS: unknown base '$b'; use copy and/or control" >&2; exit 1; }; done
main() { python -m llm.main "$@" --config.data.dir="${DATA_DIR:-}" $MODEL_FLAGS; }
for s in ${SEEDS:-0 1}; do
  tok=(--config.tokenizer.path="$runs/copy_s$s/tokenizer.model")
  main --config=configs/pretrain_small.py --workdir="$runs/copy_s$s" --config.seed=$s --config.data.seed=$s \
    --config.data.copy_task=1.0 $COPY_FLAGS --config.train.seq_len=128 --config.train.batch_size=32 \
    --config.train.lr=1e-3 --config.train.weight_decay=0.0 --config.train.schedule=wsd --config.train.decay_fraction=0.1 \
    --config.train.steps=$COPY_STEPS --config.train.eval_every=$COPY_STEPS --config.train.checkpoint_every=250 \
    --config.train.keep_checkpoints=60
  main --config=configs/pretrain_small.py --workdir="$runs/base_copy_s$s" --config.init_from="$runs/copy_s$s" "${tok[@]}" \
    --config.seed=$s --config.data.seed=$s --config.data.copy_task=0.25 $COPY_FLAGS \
    --config.train.lr=1e-3 --config.train.steps=$BOOK_STEPS
  [[ " $ARMS " != *" control "* ]] || main --config=configs/pretrain_small.py --workdir="$runs/base_control_s$s" \
    "${tok[@]}" --config.seed=$s --config.data.seed=$s --config.train.steps=$BOOK_STEPS
  for b in $ARMS; do
    python -m llm.eval --workdir="$runs/base_${b}_s$s" --suite=copying
    main --config=configs/sft_gold.py --workdir="$runs/sft_${b}_s$s" --config.init_from="$runs/base_${b}_s$s" \
      --config.seed=$s --config.data.seed=$s --config.train.steps=$SFT_STEPS --config.train.eval_every=$SFT_STEPS
    main --config=configs/reward_model_gold.py:pairs=$RM_PAIRS,seed=$s --workdir="$runs/rm_${b}_s$s" \
      --config.init_from="$runs/sft_${b}_s$s" ${RM_STEPS:+--config.train.steps=$RM_STEPS}
  done
done
[[ " $ARMS " != *" control "* ]] || python results/sft_recipe/copy_base_table.py "$runs"
