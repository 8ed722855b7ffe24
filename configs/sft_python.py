"""sft_small plus the python tool: letter counting and spelling answered with sandboxed code.

    python -m llm.main --config=configs/pretrain_small.py --workdir=runs/pretrain_small   # first
    python -m llm.main --config=configs/sft_python.py --workdir=runs/sft_python   # ~30 min
    # from a base that copies in context (results/sft_recipe/copy_base_chain.sh), which the held-out
    # words need (letter counting with python 92.8% against 85.5%; results/security/README.md):
    python -m llm.main --config=configs/sft_python.py --workdir=runs/sft_python_cm \
        --config.init_from=runs/copy_base/base_copy_s0 --config.model.smear_keys=True
    python -m llm.eval --workdir=runs/sft_python --suite=chat    # probe_count_letter(_python), probe_spell(_python)
    python -m llm.chat --workdir=runs/sft_python --python_tool
"""
import ml_collections

from configs import sft_small


def get_config(arg=None):
  c = sft_small.get_config(arg)
  # Conversations that call `python: print(" word".count("r"))` (llm/data/letters.py), weighted as
  # the calculator's arithmetic is; the probes' words are held out of them.
  c.sft.mixture.python_letters = 2.0
  # Distinct python_letters conversations drawn (the default for a generated source is 5000).
  c.sft.generated = ml_collections.ConfigDict(dict(python_letters=5000))
  # Book passages repeated exactly (llm/data/copy_text.py): with python_letters alone the model
  # miswrote held-out words in its code (" necessary" -> " fort"; results/security/tools.md).
  c.sft.mixture.copy_text = 1.0
  # Twice sft_small's steps (~30 min on 2 cores): copying held-out words into the code kept
  # improving (letter counting with python 77.1% at 1200 steps, 84.3% at 2400; README).
  c.train.steps = 2400
  return c
