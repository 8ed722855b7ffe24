"""GRPO on GSM8K for GPUs/TPUs: the grpo_arith recipe on grade-school math, from a larger SFT
model. The three runs, base to reasoning model (configs/sft_hf.py fine-tunes any run's model):

    python -m llm.main --config=configs/pretrain_gpt2_124m.py --workdir=runs/gpt2_124m
    python -m llm.main --config=configs/sft_hf.py:runs/gpt2_124m --workdir=runs/sft_gpt2_124m
    python -m llm.main --config=configs/grpo_gsm8k.py --workdir=runs/grpo_gsm8k
"""
from configs import pretrain_gpt2_124m
from configs.grpo_arith import grpo_defaults


def get_config(arg=None):
  c = pretrain_gpt2_124m.get_config(arg)
  c.task = 'grpo'
  c.init_from = 'runs/sft_gpt2_124m'  # the SFT run of the docstring's second command
  c.grpo = grpo_defaults()
  c.grpo.task = 'gsm8k'
  c.grpo.prompts_per_step = 32
  c.grpo.group_size = 16
  c.grpo.max_new_tokens = 384
  c.grpo.beta = 0.001
  c.grpo.mu = 2
  c.grpo.eval_problems = 500
  c.grpo.eval_samples = 8
  c.train.batch_size = c.grpo.prompts_per_step * c.grpo.group_size
  c.train.grad_accum = 4
  c.train.steps = 500
  c.train.lr = 1e-6
  c.train.warmup_steps = 10
  c.train.min_lr_ratio = 1.0
  c.train.weight_decay = 0.0
  c.train.log_every = 1
  c.train.eval_every = 50
  c.train.checkpoint_every = 50
  return c
