"""RLHF in the shared loop: the policy (from config.init_from, an SFT run) optimised against a
frozen proxy reward model with GRPO's machinery (llm/tasks/grpo.py's sampling and batches,
llm/rl/grpo.py's group advantages, clipped objective and beta x KL to the SFT reference).

The reward of a rollout is the proxy's score, one batched forward on the device
(llm/rl/reward_model.Scorer; an ensemble of proxies with rlhf.ensemble = 'mean' or 'min'),
minus rlhf.missing_end_penalty when the response never ends its turn. Every eval point samples
rlhf.eval_prompts held-out prompts (fewer where the source holds out fewer: a warning in the log,
and summary.json's rlhf_heldout_prompts says how many) and logs, to metrics.jsonl: rlhf_proxy,
rlhf_gold (where the prompts have a gold reward, llm/rl/gold.py), rlhf_kl = KL(pi || pi_init)
estimated from those samples and rlhf_d = sqrt(KL), and the hacking monitor's rlhf_hacking (1
when gold fell below its best while the proxy rose; also a warning in the log); DIR/rlhf_samples.jsonl keeps the samples
with their scores (what hacked responses look like). The final evaluate plots gold and proxy
against d into DIR/rlhf_curves.png.
"""
import dataclasses
import functools
import json
from pathlib import Path

from absl import logging
import jax
import numpy as np

from llm import chat_template, files, inference, init_from, metrics_log
from llm.data import preferences, sources
from llm.evals import heldout
from llm.rl import gold as gold_lib, grpo, hacking, reward_model
from llm.rl import tasks as rl_tasks
from llm.tasks import Task, TaskData, grpo as grpo_task

PROMPTS = ('gold_topics', 'hh_rlhf_harmless_base', 'alpaca_eval_ai_preferences')
# TaskData.record's share of a preference source's prompts held out: the checkpoint's data position
# is an index into the training prompts that split left, and the fraction is the proxies' (read from
# their runs), not the run's config, so train._check_same_data never sees it change.
_SPLIT = 'rlhf_proxies_val_fraction'


def _prompt_task(config, tok):
  """rlhf.prompts as an RL task: its prompts, and gold() where the truth is known (gold_topics)."""
  if config.rlhf.prompts == 'gold_topics':
    return gold_lib.GoldTopicsTask()
  data_dir = sources.find_data_dir(config.data.dir, holds=preferences.READS.get(config.rlhf.prompts, ''),
                                   holds_flag='--config.rlhf.prompts')
  return preferences.PromptTask(config.rlhf.prompts, data_dir, tok, config.train.seq_len, config.grpo.max_new_tokens,
                                _proxy_val_fraction(config), heldout.trained_requests(config, data_dir, tok))


def _record_before(workdir: Path) -> tuple[dict, str]:
  """Back-compat for runs started before llm/train.py kept the record: the split they kept in
  rlhf_split.json, or, started before that file too, preferences.VAL_FRACTION, where every run
  split then; and where it was read. (gold_topics records nothing, so nothing of this is compared.)"""
  from llm import train  # pylint: disable=import-outside-toplevel  (train imports the tasks)
  old = workdir / 'rlhf_split.json'
  if old.exists():
    return ({_SPLIT: files.read_json(old)['val_fraction']},
            f'{old.name}, kept by runs started before {train.DATA_RECORD}')
  return ({_SPLIT: preferences.VAL_FRACTION},
          f'the default every run used before {train.DATA_RECORD} or {old.name} was kept')


def started_split(workdir: Path) -> float:
  """The val_fraction of the split of its preference prompts that the RLHF run in workdir made when
  it started, its training prompts the rest: as its data record keeps it (llm/train.py), else as
  _record_before reads a run started before that record."""
  from llm import train  # pylint: disable=import-outside-toplevel  (train imports the tasks)
  record, _ = train.started_record(workdir, _record_before)
  return record.get(_SPLIT, _record_before(workdir)[0][_SPLIT])


def _proxy_val_fraction(config) -> float:
  """The share of rlhf.prompts' prompts to hold out: the smallest reward_model.val_fraction of the
  proxies trained on that source (preferences.VAL_FRACTION where none was), so that no held-out
  prompt is one a proxy trained on. The split holds out the prompts of lowest hash, so a smaller
  fraction holds out a subset of what a larger one does: the prompts every proxy held out."""
  fractions = [rm.val_fraction for rm in (inference.read_config(run).get('reward_model') for run in
                                          config.rlhf.proxy.split(','))
               if rm and rm.get('source') == config.rlhf.prompts]  # not a reward model: load_proxy refuses it
  return min(fractions, default=preferences.VAL_FRACTION)


@dataclasses.dataclass
class _State(grpo_task.Rollouts):
  proxy: object = None  # reward_model.Scorer or Ensemble, loaded on first use (it needs the mesh)
  monitor: hacking.HackingMonitor | None = None  # built at this process's first rollout or eval (_pick_up)
  # The loop's latest step (next_batch sees each one): the eval points' step. Not the latest
  # rollout's: with grpo.mu > 1, the steps between rollouts reuse it.
  step: int = 0


def _config_check(config):
  grpo_task.check_config(config)
  r = config.rlhf
  if not r.proxy:
    raise ValueError('rlhf.proxy is empty; give a task=reward_model run DIR (or DIR1,DIR2,... for an ensemble)')
  if r.eval_prompts < 1:  # no samples to score: a ZeroDivisionError traceback from the proxy
    raise ValueError(f'rlhf.eval_prompts={r.eval_prompts}: the held-out eval needs 1 or more; to evaluate less '
                     'often, raise train.eval_every')
  if r.prompts not in PROMPTS:
    raise ValueError(f'rlhf.prompts={r.prompts!r} is unknown; choose one of {PROMPTS}')
  # Checked with one proxy too, where it changes nothing: whether a misspelt rule is refused
  # must not depend on how many proxies are given.
  if r.ensemble not in reward_model.REDUCTIONS:
    raise ValueError(f'rlhf.ensemble={r.ensemble!r} is unknown; choose one of {reward_model.REDUCTIONS}')


def data(config, workdir, state: _State) -> TaskData:
  _config_check(config)
  tok, index_iter = grpo_task.policy_start(config)
  workdir = Path(workdir)
  state.task, state.tokenizer, state.workdir = _prompt_task(config, tok), tok, workdir
  # Preference prompts: how many held-out ones were left out as prompts the policy (its SFT, RLHF up
  # its init_from chain) trained on.
  left_out = {'rlhf_heldout_left_out_trained': state.task.left_out} if hasattr(state.task, 'left_out') else {}
  split = {_SPLIT: state.task.val_fraction} if hasattr(state.task, 'val_fraction') else {}
  # What every eval point samples: a preference source may hold out fewer than rlhf.eval_prompts.
  evaluated = len(state.task.heldout(config.rlhf.eval_prompts))
  if evaluated < config.rlhf.eval_prompts:
    logging.warning('rlhf: every eval point samples the %d held-out %s prompts there are, fewer than '
                    'rlhf.eval_prompts=%d (summary.json: rlhf_heldout_prompts; %d more were left out as prompts the '
                    'policy trained on, others as leaving under grpo.max_new_tokens of train.seq_len): a proxy of a '
                    'larger reward_model.val_fraction holds out more', evaluated, config.rlhf.prompts,
                    config.rlhf.eval_prompts, getattr(state.task, 'left_out', 0))
  return TaskData(tokenizer=tok, train_iter=index_iter, eval_sets={},
                  facts={'rlhf_prompts': config.rlhf.prompts, 'rlhf_proxy_runs': config.rlhf.proxy,
                         'rlhf_heldout_prompts': evaluated, **left_out},
                  record=split)


def rollout_len(config) -> int:
  """The most tokens, prompt included, an RLHF rollout may hold, and the window the proxy scores
  (_proxy): train.seq_len, one less than GRPO's training row (seq_len + 1 may pass the reward
  model's max_seq_len). A rollout longer than the window would be scored cut short, at its last
  token rather than the <|end|> the policy wrote, and escape the missing-end penalty."""
  return config.train.seq_len


def _proxy(config, setup, state: _State):
  if state.proxy is None:
    state.proxy = reward_model.load_proxy(config.rlhf.proxy.split(','), config.rlhf.ensemble,
                                          rollout_len(config), config.train.batch_size, setup.mesh,
                                          policy_tokenizer=state.tokenizer)
  return state.proxy


def _score(config, setup, state: _State, problems, prompts, completions):
  """(proxy reward, gold reward or None, finished) per completion."""
  tok = state.tokenizer
  end = tok.special_id('<|end|>')
  finished = np.array([c.finish_reason == 'stop' and bool(c.tokens) and c.tokens[-1] == end for c in completions])
  proxy = _proxy(config, setup, state).score([p + c.tokens for p, c in zip(prompts, completions)])
  gold = None
  if hasattr(state.task, 'gold'):
    gold = np.array([state.task.gold(rl_tasks.assistant_text(tok, c.tokens), problem)
                     for problem, c in zip(problems, completions)], np.float32)
  return proxy, gold, finished


def _rollout(config, setup, params, state: _State, start: int, step: int):
  problems, rows, completions = grpo_task.sample_groups(config, setup, params, state, start, step,
                                                       rollout_len(config))
  proxy, gold, finished = _score(config, setup, state, [problems[i] for i, _ in rows], [p for _, p in rows],
                                 completions)
  total = proxy - config.rlhf.missing_end_penalty * (~finished)
  batch = grpo_task.rollout_batch(config, setup, params, state, rows, completions, total, with_ref=True)
  kl = hacking.sequence_kl(batch['old_logp'], batch['ref_logp'], batch['loss_mask'])
  metrics = {'reward_mean': float(total.mean()), 'reward_std': float(total.std()),
             'proxy_mean': float(proxy.mean()), 'finished_rate': float(finished.mean()),
             'response_tokens': float(np.mean([grpo_task.sampled_tokens(c) for c in completions])),
             'rollout_kl': kl, 'rollout_d': hacking.distance(kl)}
  if gold is not None:
    metrics['gold_mean'] = float(gold.mean())
  return batch, metrics


def _pick_up(config, state: _State, start: int):
  """Once a process, before its first rollout or eval, on from the checkpoint of step `start` (0:
  none): the hacking monitor's history from metrics.jsonl as the loop's MetricsLog left it (data()
  reads it too early: the rows of the steps this run reruns, or a last line a kill cut short, still
  in), and rlhf_samples.jsonl trimmed as MetricsLog trims metrics.jsonl, lest the samples of those
  steps be there twice."""
  if state.monitor is not None:
    return
  state.monitor = hacking.HackingMonitor(config.rlhf.hacking_tolerance)
  state.monitor.load(state.workdir / 'metrics.jsonl')
  if jax.process_index() == 0:
    metrics_log.drop_lines_after(state.workdir / 'rlhf_samples.jsonl', start)


def heldout_eval(config, setup, params, data, state: _State) -> dict:
  """Proxy, gold and KL(pi || pi_init) on rlhf.eval_prompts held-out prompts x grpo.group_size
  samples (fixed seeds), the hacking monitor's verdict, and the samples into rlhf_samples.jsonl."""
  del data
  g, r, tok = config.grpo, config.rlhf, state.tokenizer
  _pick_up(config, state, start=0)  # only the eval at the start of a fresh run comes before next_batch
  problems = state.task.heldout(r.eval_prompts)
  prompts = [chat_template.render_prompt(tok, p.prompt_messages) for p in problems for _ in range(g.group_size)]
  problems = [p for p in problems for _ in range(g.group_size)]
  engine = grpo_task.rollout_engine(config, setup, params, state)
  max_new = grpo_task.new_token_budgets(config, engine, prompts, rollout_len(config))
  completions = engine.generate(prompts, max_new, g.temperature, seed=list(range(len(prompts))),
                                stop_ids=chat_template.turn_stop_ids(tok))
  proxy, gold, finished = _score(config, setup, state, problems, prompts, completions)
  batch = grpo_task.rollout_batch(config, setup, params, state, list(enumerate(prompts)), completions,
                                  np.zeros(len(prompts), np.float32), with_ref=True)
  kl = hacking.sequence_kl(batch['old_logp'], batch['ref_logp'], batch['loss_mask'])
  out = {'rlhf_proxy': float(proxy.mean()), 'rlhf_kl': kl, 'rlhf_d': hacking.distance(kl),
         'rlhf_finished_rate': float(finished.mean()),
         'rlhf_response_tokens': float(np.mean([grpo_task.sampled_tokens(c) for c in completions]))}
  if gold is not None:
    out['rlhf_gold'] = float(gold.mean())
    verdict = state.monitor.update(state.step, out['rlhf_gold'], out['rlhf_proxy'])
    out.update({f'rlhf_{k}': v for k, v in verdict.items()})
  if jax.process_index() == 0:
    with (state.workdir / 'rlhf_samples.jsonl').open('a') as f:
      for i, (p, c) in enumerate(zip(problems, completions)):
        f.write(json.dumps({'step': state.step, 'prompt': p.prompt_messages[-1]['content'],
                            'response': rl_tasks.assistant_text(tok, c.tokens), 'proxy': float(proxy[i]),
                            'gold': None if gold is None else float(gold[i])}) + '\n')
  return out


def plot(config, setup, params, data, state: _State) -> dict:
  """DIR/rlhf_curves.png: held-out gold and proxy against d = sqrt(KL)."""
  del config, setup, params, data
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  rows = [row for row in sources.read_jsonl(state.workdir / 'metrics.jsonl', last_line_may_be_cut=True)
          if 'rlhf_d' in row]
  fig, ax = plt.subplots(figsize=(6, 4))
  for key in ('rlhf_proxy', 'rlhf_gold'):
    points = sorted((row['rlhf_d'], row[key]) for row in rows if key in row)
    if points:
      ax.plot(*zip(*points), marker='.', label=key.removeprefix('rlhf_'))
  ax.set_xlabel('d = sqrt(KL(pi || pi_init))')
  ax.set_ylabel('reward (held-out prompts)')
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(state.workdir / 'rlhf_curves.png', dpi=120)
  plt.close(fig)
  return {}


def _next_batch(config, state: _State):
  """GRPO's next_batch (a fresh rollout every grpo.mu steps), noting each step the loop runs."""
  rollouts = grpo_task.make_next_batch(config, state, _rollout)

  def next_batch(data, setup, train_state, step):
    _pick_up(config, state, start=step - 1)
    state.step = step
    return rollouts(data, setup, train_state, step)

  return next_batch


def make_task(config) -> Task:
  state = _State()
  return Task(data=functools.partial(data, state=state), loss_fn=grpo.make_loss_fn(config.grpo),
              init_state=init_from.init_state, next_batch=_next_batch(config, state), record_before=_record_before,
              periodic_eval=functools.partial(heldout_eval, state=state),
              evaluate=functools.partial(plot, state=state),
              # A source's prompts are those leaving grpo.max_new_tokens of room: another keeps others.
              data_stream=() if config.rlhf.prompts == 'gold_topics' else ('grpo.max_new_tokens',))
