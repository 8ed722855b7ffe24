"""GRPO on arithmetic word problems, on the CPU, from the sft_small chat model.

    python -m llm.main --config=configs/sft_small.py --workdir=runs/sft_small    # first
    python -m llm.main --config=configs/grpo_arith.py --workdir=runs/grpo_arith
"""
import ml_collections

from configs import sft_small


def get_config(arg=None):
  c = sft_small.get_config(arg)  # the same model as the SFT run it starts from
  del c['sft']
  c.task = 'grpo'
  c.init_from = 'runs/sft_small'
  c.grpo = grpo_defaults()
  c.grpo.task = 'arithmetic'
  c.train.batch_size = c.grpo.prompts_per_step * c.grpo.group_size
  c.train.steps = 100
  c.train.lr = 5e-5
  c.train.warmup_steps = 5
  c.train.min_lr_ratio = 1.0  # constant after warmup: RL has no natural end to decay towards
  c.train.weight_decay = 0.0
  c.train.log_every = 1
  c.train.eval_every = 20
  c.train.checkpoint_every = 20
  return c


def grpo_defaults() -> ml_collections.ConfigDict:
  g = ml_collections.ConfigDict()
  g.task = 'arithmetic'  # a name llm.rl.tasks.make_task knows (arithmetic, gsm8k)
  g.task_options = ml_collections.ConfigDict()  # the task's knobs, e.g. digits=(2, 3), ops=(1, 2)
  g.prompts_per_step = 8  # distinct problems per batch of rollouts
  g.group_size = 8  # completions sampled per problem (the group of GRPO)
  g.mu = 1  # optimizer steps on each batch of rollouts
  g.max_new_tokens = 96  # completion length cap
  g.temperature = 1.0  # rollout sampling; the objective's log-probs are of softmax(logits / temperature) too
  g.top_k = 0  # rollout top-k: must stay 0 (off), the objective's log-probs are of the untruncated distribution
  g.top_p = 1.0  # rollout nucleus mass: must stay 1.0 (off), as top_k
  g.epsilon = 0.2  # clip ratio below 1 - epsilon ...
  g.epsilon_high = 0.28  # ... and above 1 + epsilon_high (DAPO clip-higher; = epsilon for PPO)
  g.beta = 0.0  # KL penalty to the reference (the init_from model); 0 skips its forward pass
  g.normalize_std = True  # divide advantages by the group std (False: mean only, as Dr. GRPO)
  g.aggregation = 'token'  # 'token' mean, 'sequence' mean of means, 'dr_grpo' sum / (batch x max_new_tokens): Dr. GRPO with normalize_std=False
  # Weights of the reward terms (llm/rl/rewards.py): a right answer, a well-formed one, length over target.
  g.rewards = ml_collections.ConfigDict(dict(correctness=1.0, format=0.1, length_penalty=0.0))
  g.length_target = 64  # length_penalty starts beyond this many sampled tokens (tool results not counted) ...
  g.length_scale = 64.0  # ... and costs 1 per this many tokens more
  g.eval_problems = 128  # held-out problems for pass@k
  g.eval_samples = 4  # samples per held-out problem (pass@1 is their mean, pass@k any)
  g.eval_temperature = 1.0  # fixed sampler settings for pass@k, the same before and after
  return g
