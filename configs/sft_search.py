"""sft_small plus the search tool: questions about made-up people answered from a search result,
and (search_injected > 0) results that carry instructions the assistant must ignore.

    python -m llm.main --config=configs/sft_search.py --workdir=runs/sft_search            # knows search
    python -m llm.main --config=configs/sft_search.py --workdir=runs/sft_search_guarded \
        --config.sft.mixture.search_injected=1.0                                           # ... and ignores injections
    python -m llm.eval --workdir=runs/sft_search --suite=injection
"""
from configs import sft_small


def get_config(arg=None):
  c = sft_small.get_config(arg)
  # Search conversations on clean passages (llm/security/injection.py): the model learns to search
  # for a person and answer from the result.
  c.sft.mixture.search_facts = 1.0
  # Conversations whose every result carries an injected instruction, answered as if it were not
  # there: 0 measures a model that was never shown an injection.
  c.sft.mixture.search_injected = 0.0
  return c
