"""An honest assistant: it answers what it knows, says "I don't know" where it does not, or looks the
fact up with search. The pieces, in the order the experiment runs them:

- world.py: a fictional world whose every fact is seen a known number of times in pretraining;
- verify.py: whether a reply states a fact (normalised match) or abstains;
- interrogate.py: `python -m llm.honesty.interrogate`, what a run knows, labelled fact by fact;
- sft.py: SFT conversation sources from those labels (answers, refusals, search calls);
- llm/evals/honesty.py: the measurement on held-out people and question phrasings.
"""
