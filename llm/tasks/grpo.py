"""GRPO on problems with checkable answers, in the shared training loop.

Every `grpo.mu` optimizer steps, next_batch samples `grpo.group_size` completions for each of
`grpo.prompts_per_step` prompts with the engine (tools on: the model may call the calculator,
and the force-fed tool results get no loss), scores them with the task's verifier, and turns
them into one training batch: prompt + completion rows, the loss mask on the tokens the policy
sampled, group-relative advantages, and the sampling policy's log-probabilities (and the frozen
reference's, when beta > 0). The loss is llm/rl/grpo.py's clipped objective.
"""
import dataclasses
import functools
import itertools
from pathlib import Path

import grain
import jax
import numpy as np

from llm import chat_template, evals, inference, init_from, tokenizer as tokenizer_lib, tools
from llm.data import sources
from llm.evals import rl_pass_at_k
from llm.rl import grpo, rewards as rewards_lib, tasks as rl_tasks
from llm.tasks import Task, TaskData


@dataclasses.dataclass
class Rollouts:
  """What the task keeps between calls (host side, rebuilt on resume): make_task makes one per
  run, data() fills in the task and tokenizer, next_batch and the evals share it."""
  task: object = None
  tokenizer: object = None
  engine: inference.Engine | None = None
  ref_params: object = None
  problems: object = None  # iterator over the training problems
  position: int = 0  # index of the next problem that iterator yields
  batch: dict | None = None  # the current rollout batch, reused for mu steps
  metrics: dict | None = None
  logp_fn: object = None
  workdir: Path | None = None


def check_config(config):
  g = config.grpo
  if jax.process_count() > 1:
    raise ValueError(f'GRPO runs in one process ({jax.process_count()} here): each process would sample the '
                     'whole rollout batch and feed it as its own rows; run it without jax.distributed')
  if g.temperature <= 0 or g.top_k or g.top_p < 1.0:
    raise ValueError(f'grpo.temperature={g.temperature}, top_k={g.top_k}, top_p={g.top_p}: the objective '
                     'needs the log-probs of the distribution the rollouts sample, softmax(logits / temperature); '
                     'use temperature > 0, top_k=0 and top_p=1.0')
  if g.group_size < 2:  # a group of one is its own mean: every advantage would be 0, and nothing learnt
    raise ValueError(f'grpo.group_size={g.group_size}: GRPO scores each completion against the others of its '
                     'group, so it needs 2 or more')
  if config.train.batch_size != g.prompts_per_step * g.group_size:
    # A config file computes the batch size when it is built, so an override of either grpo field
    # leaves it behind: name the setting that follows.
    raise ValueError(f'train.batch_size={config.train.batch_size} must equal grpo.prompts_per_step x '
                     f'grpo.group_size = {g.prompts_per_step * g.group_size}: set '
                     f'--config.train.batch_size={g.prompts_per_step * g.group_size}')
  if g.max_new_tokens < 1:
    raise ValueError(f'grpo.max_new_tokens={g.max_new_tokens}: a rollout needs room for 1 or more new tokens')
  # Checked here, before the step-0 held-out eval, not first at the step that uses them.
  if g.aggregation not in grpo.AGGREGATIONS:
    raise ValueError(f'grpo.aggregation={g.aggregation!r} is unknown; choose one of {grpo.AGGREGATIONS}')
  unknown = sorted(set(g.rewards) - set(rewards_lib.COMPONENTS))
  if unknown:
    raise ValueError(f'grpo.rewards holds unknown components {unknown}; known: {list(rewards_lib.COMPONENTS)}')
  if g.epsilon_high < g.epsilon:  # clip-higher widens the trust region above 1; narrower is no variant
    raise ValueError(f'grpo.epsilon_high={g.epsilon_high} < grpo.epsilon={g.epsilon}: the clip above 1 must be '
                     'at least as wide as below (equal for PPO, higher for DAPO)')
  if g.length_scale <= 0:
    raise ValueError(f'grpo.length_scale={g.length_scale}: must be > 0 (the tokens past length_target that cost 1)')
  for field in ('eval_problems', 'eval_samples'):  # none would log a pass@1 of NaN, or a pass@0
    if g[field] < 1:
      raise ValueError(f'grpo.{field}={g[field]}: the held-out pass@k needs 1 or more; to evaluate less often, '
                       'raise train.eval_every')
  if g.mu < 1:
    raise ValueError(f'grpo.mu={g.mu}: the optimizer steps on each batch of rollouts must be 1 or more')
  if config.train.checkpoint_every % g.mu:
    raise ValueError(f'train.checkpoint_every={config.train.checkpoint_every} must be a multiple of '
                     f'grpo.mu={g.mu}, so a resumed run starts at a fresh batch of rollouts')


def policy_start(config):
  """(tokenizer, index iterator) of an RL run on init_from's model (GRPO here, RLHF too): the base
  run's tokenizer, and an iterator of each step's first prompt index, checkpointed like any data
  iterator, so a resumed run takes up the very next prompts."""
  base = init_from.base_run(config)
  init_from.check_same_model(config, base)
  n = config.grpo.prompts_per_step
  return (tokenizer_lib.load_any(tokenizer_lib.run_file(base)),
          iter(grain.MapDataset.range(10**9).map(lambda i: i * n).to_iter_dataset()))


def data(config, workdir, rollouts: Rollouts) -> TaskData:
  check_config(config)
  tok, index_iter = policy_start(config)
  data_dir = sources.find_data_dir(config.data.dir, holds=rl_tasks.READS.get(config.grpo.task, ''),
                                   holds_flag='--config.grpo.task')
  task = rl_tasks.make_task(config.grpo.task, data_dir, **config.grpo.task_options.to_dict())
  rollouts.task, rollouts.tokenizer, rollouts.workdir = task, tok, Path(workdir)
  return TaskData(tokenizer=tok, train_iter=index_iter, eval_sets={}, facts={'grpo_task': config.grpo.task})


def _problems(state: Rollouts, start: int, count: int, seed: int) -> list:
  if state.problems is None or start < state.position:
    state.problems, state.position = state.task.train_problems(seed), 0
  batch = list(itertools.islice(state.problems, start - state.position, start - state.position + count))
  state.position = start + count
  return batch


def rollout_engine(config, setup, params, state: Rollouts):
  if state.engine is None:  # one engine: its compiled decode loop is reused every step
    state.engine = inference.Engine(setup.model_cfg, params, state.tokenizer, setup.mesh, rules=setup.rules,
                                    tools=tools.make_registry())
  state.engine.params = params
  return state.engine


def make_next_batch(config, state: Rollouts, rollout=None):
  """next_batch for the loop: a fresh batch of rollout(config, setup, params, state, start, step)
  -> (batch, metrics) every grpo.mu steps (default: this task's, scored by the verifier)."""
  g, rollout = config.grpo, rollout or _rollout

  def next_batch(data, setup, train_state, step):
    if (step - 1) % g.mu == 0 or state.batch is None:
      start = next(data.train_iter)
      state.batch, state.metrics = rollout(config, setup, train_state.params, state, start, step)
    return state.batch, state.metrics

  return next_batch


def _rollout(config, setup, params, state: Rollouts, start: int, step: int):
  g, tok = config.grpo, state.tokenizer
  problems, rows, completions = sample_groups(config, setup, params, state, start, step, rollout_len(config))
  # A 'stop' is one of sample_groups' stop ids, every id a turn ends at, as in the held-out eval.
  scored = [(rl_tasks.assistant_text(tok, c.tokens), sampled_tokens(c), c.finish_reason == 'stop')
            for c in completions]
  total, components = rewards_lib.compute_rewards(
      scored, [problems[i] for i, _ in rows], state.task, dict(g.rewards), g.length_target, g.length_scale)
  batch = rollout_batch(config, setup, params, state, rows, completions, total)
  groups = total.reshape(-1, g.group_size)
  metrics = {'reward_mean': float(total.mean()), 'reward_std': float(total.std()),
             'zero_variance_groups': float(grpo.uniform_groups(groups).mean()),
             'response_tokens': float(np.mean([sampled_tokens(c) for c in completions])),
             'tool_call_rate': float(np.mean([c.tool_calls > 0 for c in completions])),
             **{f'reward_{k}': float(v.mean()) for k, v in components.items()}}
  return batch, metrics


def sampled_tokens(completion: inference.Completion) -> int:
  """The tokens of a completion the policy sampled, those its loss trains: the tool results the
  engine force-fed are not the policy's length."""
  return completion.forced.count(False)


def sample_groups(config, setup, params, state: Rollouts, start: int, step: int, max_len: int):
  """(problems, rows, completions): grpo.group_size completions of each of the step's problems,
  each within max_len tokens, prompt included (new_token_budgets), ending at any id a turn ends
  at (chat_template.turn_stop_ids, as the held-out eval's); rows[j] = (index of its problem,
  prompt ids) for completions[j]."""
  g, tok = config.grpo, state.tokenizer
  problems = _problems(state, start, g.prompts_per_step, config.seed)
  prompts = [chat_template.render_prompt(tok, p.prompt_messages) for p in problems]
  rows = [(i, prompt) for i, prompt in enumerate(prompts) for _ in range(g.group_size)]
  engine = rollout_engine(config, setup, params, state)
  max_new = new_token_budgets(config, engine, [p for _, p in rows], max_len)
  completions = engine.generate([p for _, p in rows], max_new, g.temperature, g.top_k, g.top_p,
                                seed=inference.row_seeds(config.seed, step * 10_007, len(rows)),
                                stop_ids=chat_template.turn_stop_ids(tok))
  return problems, rows, completions


def rollout_len(config) -> int:
  """The most tokens, prompt included, a GRPO rollout may hold: the training row, seq_len + 1
  (inputs and targets are the row shifted by one)."""
  return config.train.seq_len + 1


def new_token_budgets(config, engine, prompts: list[list[int]], max_len: int) -> list[int]:
  """Per prompt, the tokens its rollout may sample: grpo.max_new_tokens, within the cache and
  within max_len tokens, prompt included (the task's rollout_len: all that reads a rollout whole).
  A tail past the training row would be rewarded but get no loss and no KL; past the proxy's
  window, RLHF would score a row cut short."""
  room = min(engine.cache_len, max_len)
  longest = max(map(len, prompts), default=0)
  if room - longest < 1:
    fix = ('raise train.seq_len (up to model.max_seq_len)' if room < config.model.max_seq_len else
           "it fills the model's whole context: give the task shorter prompts or start from a model with a longer one")
    raise ValueError(f'a prompt of {longest} tokens leaves no room for its completion within {room} tokens '
                     f'(train.seq_len={config.train.seq_len}, model.max_seq_len={config.model.max_seq_len}); {fix}')
  return [min(config.grpo.max_new_tokens, room - len(p)) for p in prompts]


def rollout_batch(config, setup, params, state: Rollouts, rows, completions, total: np.ndarray,
                  with_ref: bool = False) -> dict:
  """The training batch of scored rollouts: prompt + completion rows cut to seq_len + 1, the
  loss on sampled completion tokens only, group-relative advantages of `total`, the sampling
  policy's log-probs and (beta > 0 or with_ref) the frozen reference's."""
  g, tok, T = config.grpo, state.tokenizer, config.train.seq_len
  advantages = grpo.group_advantages(total.reshape(-1, g.group_size), g.normalize_std).reshape(-1)
  tokens = np.full((len(rows), T + 1), tok.pad_id, np.int32)
  mask = np.zeros((len(rows), T + 1), np.int32)
  for r, ((_, prompt), c) in enumerate(zip(rows, completions)):
    seq = (prompt + c.tokens)[:T + 1]
    tokens[r, :len(seq)] = seq
    sampled = [0] * len(prompt) + [int(not f) for f in c.forced]
    mask[r, :len(seq)] = sampled[:T + 1]
  batch = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:], 'loss_mask': mask[:, 1:],
           'advantages': advantages.astype(np.float32)}
  if state.logp_fn is None:
    state.logp_fn = jax.jit(lambda p, b: grpo.policy_logprobs(setup.model, p, b, g.temperature)[0])
  with setup.context():
    batch['old_logp'] = np.asarray(state.logp_fn(params, batch))
    if g.beta > 0 or with_ref:
      if state.ref_params is None:
        state.ref_params = init_from.base_params(config, setup.abstract_state.params)
      batch['ref_logp'] = np.asarray(state.logp_fn(state.ref_params, batch))
  return batch


def pass_at_k(config, setup, params, data, state: Rollouts) -> dict:
  """Held-out pass@1 (mean over k samples) and pass@k, fixed sampler settings and seeds: the rl
  suite's evaluator (llm/evals/rl_pass_at_k.py) on the current parameters and this task's engine."""
  del data
  ctx = evals.Context.from_setup(config, setup, params, state.tokenizer,
                                 engines={True: rollout_engine(config, setup, params, state)})
  return rl_pass_at_k.measure(ctx, state.task, config.grpo.eval_problems)


def plot(config, setup, params, data, state: Rollouts) -> dict:
  """DIR/grpo_curves.png: training reward and held-out pass@1 against step."""
  del config, setup, params, data
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  workdir = state.workdir
  rows = list(sources.read_jsonl(workdir / 'metrics.jsonl', last_line_may_be_cut=True))
  reward = [(r['step'], r['reward_mean']) for r in rows if 'reward_mean' in r]
  heldout = [(r['step'], r['heldout_pass_at_1']) for r in rows if 'heldout_pass_at_1' in r]
  fig, ax = plt.subplots(figsize=(7, 4))
  for points, label in ((reward, 'training reward (mean)'), (heldout, 'held-out pass@1')):
    if points:
      ax.plot(*zip(*points), marker='.' if len(points) < 30 else None, label=label)
  ax.set_xlabel('step')
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(workdir / 'grpo_curves.png', dpi=120)
  plt.close(fig)
  return {}


def make_task(config) -> Task:
  """The loss and the rollouts depend on config.grpo, so the task is built per config; the
  rollout state it keeps lives here, with the task, not in its data."""
  rollouts = Rollouts()
  return Task(data=functools.partial(data, rollouts=rollouts), loss_fn=grpo.make_loss_fn(config.grpo),
              init_state=init_from.init_state, next_batch=make_next_batch(config, rollouts),
              periodic_eval=functools.partial(pass_at_k, state=rollouts),
              evaluate=functools.partial(plot, state=rollouts))
