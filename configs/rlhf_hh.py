"""RLHF on real prompts: the sft_small chat model optimised with GRPO against the reward model
trained on Anthropic's harmlessness pairs (configs/reward_model_hh.py), beta x KL to the SFT
model. There is no gold here: held-out proxy reward and KL(pi || pi_init) are what is logged.

    python -m llm.main --config=configs/reward_model_hh.py --workdir=runs/rm_hh   # first
    python -m llm.main --config=configs/rlhf_hh.py --workdir=runs/rlhf_hh
"""
from configs import rlhf_gold, sft_small
from llm.config import parse_arg


def get_config(arg=None):
  """arg: beta=F, as for configs/rlhf_gold.py; the proxy is runs/rm_hh, so proxy= is refused."""
  parse_arg(arg, {'beta': 0.0}, 'beta=F')  # only checks the keys: rlhf_gold reads the value
  c = rlhf_gold.get_config(arg)
  c.model = sft_small.get_config().model  # the same model as the SFT run it starts from
  c.init_from = 'runs/sft_small'
  c.rlhf.prompts = 'hh_rlhf_harmless_base'
  c.rlhf.proxy = 'runs/rm_hh'
  c.grpo.max_new_tokens = 64
  c.train.seq_len = 256  # hh prompts are whole dialogues; those leaving < max_new_tokens are skipped
  return c
