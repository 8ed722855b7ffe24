"""heldout_pass_at_1 and heldout_pass_at_<k>: the RL task's held-out problems (the run's
config.grpo, or arithmetic with the task's defaults), minus any question SFT trained on
(llm/evals/heldout.py), with fixed sampler settings: GRPO's eval_samples and eval_temperature
(4 and 1.0 by default). GRPO's periodic evaluation is this function on its current parameters."""
from llm.data import gsm8k as gsm8k_data
from llm.evals import heldout, pass_at_k
from llm.rl import tasks as rl_tasks

DEFAULTS = dict(task='arithmetic', task_options={}, eval_problems=128, eval_samples=4, eval_temperature=1.0,
                max_new_tokens=96)


def settings(config) -> dict:
  g = config.get('grpo') or {}
  return {k: (g.get(k, v).to_dict() if hasattr(g.get(k, v), 'to_dict') else g.get(k, v)) for k, v in DEFAULTS.items()}


def problems(ctx, task, count: int) -> list:
  return heldout.without(task.heldout(count), heldout.training_questions(ctx.config))


def measure(ctx, task, count: int) -> dict:
  s = settings(ctx.config)
  result = pass_at_k.pass_at_k(ctx, problems(ctx, task, count), task.verify, s['eval_samples'],
                               s['eval_temperature'], s['max_new_tokens'])
  return {f'heldout_{k}': v for k, v in result.items()}


def evaluate(ctx) -> dict:
  s = settings(ctx.config)
  data_dir = ctx.data_dir(gsm8k_data.FOLDER) if s['task'] == 'gsm8k' else None  # the one task that reads data
  task = rl_tasks.make_task(s['task'], data_dir, **s['task_options'])
  return measure(ctx, task, ctx.count(s['eval_problems']))
