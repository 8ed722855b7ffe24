"""sft_small taught to refuse harmful requests: red-team requests (hh_rlhf_harmless_base) answered
with refusals, a fifth of them held out for llm/evals/jailbreak.py.

    python -m llm.main --config=configs/sft_refusals.py --workdir=runs/sft_refusals
    python -m llm.eval --workdir=runs/sft_refusals --suite=jailbreak
"""
from configs import sft_small


def get_config(arg=None):
  c = sft_small.get_config(arg)
  # The same requests' chosen answers would teach a second, inconsistent reply to them.
  c.sft.mixture.hh_chosen = 0.0
  c.sft.mixture.refusals = 1.0  # each training request once per epoch, refused (llm/security/jailbreak.py)
  return c
