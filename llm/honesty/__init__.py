"""An honest assistant: it answers what it knows, says "I don't know" where it does not, or looks the
fact up with search. The pieces, in the order the experiment runs them:

- world.py: a fictional world whose every fact is seen a known number of times in pretraining;
- verify.py: whether a reply states a fact (normalised match) or abstains;
- interrogate.py: `python -m llm.honesty.interrogate`, what a run knows, labelled fact by fact;
- labels.py: the labelled set's format and where it lives (its world's folder);
- sft.py: SFT conversation sources from those labels (answers, refusals, search calls);
- llm/evals/honesty.py: the measurement on held-out people and question phrasings.

The experiment (results/factuality/run.sh runs it all and skips what exists):

    python -m llm.main --config=configs/pretrain_small.py --workdir=runs/pretrain_small
    python -m llm.honesty.world --out=runs/world
    python -m llm.main --config=configs/pretrain_world.py --workdir=runs/pretrain_world
    python -m llm.honesty.interrogate --workdir=runs/pretrain_world --world=runs/world
    python -m llm.main --config=configs/sft_honesty.py --workdir=runs/sft_answers \
        --config.sft.mixture.honesty_refusals=0 --config.sft.mixture.honesty_answers=1
    python -m llm.main --config=configs/sft_honesty.py --workdir=runs/sft_honesty
    python -m llm.main --config=configs/sft_honesty_search.py --workdir=runs/sft_honesty_search
    python -m llm.eval --workdir=runs/sft_honesty --suite=honesty      # and the other two SFT runs
    python results/factuality/collect.py runs
"""
