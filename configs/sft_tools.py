"""sft_small with every tool and the refusals in one mixture: search, the python tool, the
calculator, and red-team requests refused: the assistant results/security measures.

    python -m llm.main --config=configs/sft_tools.py --workdir=runs/sft_tools
    python -m llm.main --config=configs/sft_tools.py --workdir=runs/sft_tools_guarded \
        --config.sft.mixture.search_injected=1.0          # ... and taught to ignore injected results
    python -m llm.eval --workdir=runs/sft_tools --suite=security
"""
from configs import sft_python, sft_refusals, sft_search, sft_small


def get_config(arg=None):
  c = sft_python.get_config(arg)  # python_letters
  small = sft_small.get_config(arg).sft.mixture
  for source in (sft_search, sft_refusals):  # search_facts; refusals, hh_chosen off
    # Each config's changes to sft_small's weights (every config lists every source).
    c.sft.mixture.update({name: weight for name, weight in source.get_config(arg).sft.mixture.items()
                          if weight != small[name]})
  # sft_small's 1200 steps, not sft_python's 2400: results/security/tools.md measured these runs so.
  c.train.steps = 1200
  return c
