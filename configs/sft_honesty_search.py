"""sft_honesty with search: unknown facts looked up with the search tool over the world's search
folder and answered from its result, known ones answered from memory (llm/honesty/sft.py).

    python -m llm.main --config=configs/sft_honesty_search.py --workdir=runs/sft_honesty_search
    python -m llm.eval --workdir=runs/sft_honesty_search --suite=honesty
"""
from configs import sft_honesty


def get_config(arg=None):
  c = sft_honesty.get_config(arg)
  c.sft.mixture.honesty_refusals = 0.0  # no refusals: what it does not know, it looks up
  c.sft.mixture.honesty_search = 1.0  # known facts answered, unknown ones searched
  return c
