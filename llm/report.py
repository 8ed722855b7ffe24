"""The report card of a pipeline: one page for every stage's run and a table across stages.

    python -m llm.report --runs=runs/pretrain_small,runs/sft_small,runs/grpo_arith --out=results/report_cpu

writes OUT/report.md and one OUT/<stage>_curves.png per stage: for each run its config, parameters,
tokens, wall time, loss (and reward) curves from metrics.jsonl and its evaluations from
eval/*.json (python -m llm.eval); then a `| metric | BASE | SFT | RL |` summary, the host (CPU,
devices), the git commit and the date. Runs may also follow --runs as separate arguments.
With --seeds=NAME=RUN,RUN,... (repeatable) and --seed_keys, a section "Over seeds" gives each
group's mean ± std [min, max] (llm/seeds.py): a headline number is a mean over seeds, not one run.
"""
import datetime
import math
import re
import subprocess
from pathlib import Path

from absl import flags

from llm import cli, files, seeds
from llm.data import sources

STAGES = {'pretrain': 'BASE', 'sft': 'SFT', 'grpo': 'RL'}
# From summary.json, shown first in the summary table.
SUMMARY_KEYS = ('params', 'tokens_seen', 'steps', 'wall_s', 'val_loss', 'val_bpb')
# Curves: (metrics.jsonl key, label); a stage plots those its metrics hold.
CURVES = (('loss', 'training loss'), ('val_loss', 'validation loss'), ('reward_mean', 'reward (mean)'),
          ('heldout_pass_at_1', 'held-out pass@1'))
# An eval json's facts about the evaluation, not numbers of the model.
NOT_METRICS = ('step', 'eval_wall_s', 'limit')


class RunMissing(ValueError):
  pass


def read_run(workdir: Path) -> dict:
  """config, summary, metrics rows and evals (suite -> results) of one run directory."""
  if not (workdir / 'config.json').exists():
    raise RunMissing(f'{workdir} holds no config.json: is it a run (python -m llm.main --workdir=...)?')
  read = lambda p: files.read_json(p) if p.exists() else {}
  metrics = workdir / 'metrics.jsonl'
  rows = list(sources.read_jsonl(metrics, last_line_may_be_cut=True)) if metrics.exists() else []
  summary = read(workdir / 'summary.json')
  return {'dir': workdir, 'config': read(workdir / 'config.json'), 'summary': summary,
          'metrics': rows, 'evals': seeds.read_evals(workdir, summary.get('steps'))}


def stage_names(runs: list[dict]) -> list[str]:
  """BASE, SFT, RL from each run's task; a repeated one gets its directory's name."""
  names = [STAGES.get(r['config'].get('task'), r['config'].get('task', '?').upper()) for r in runs]
  return [f'{n} ({r["dir"].name})' if names.count(n) > 1 else n for n, r in zip(names, runs)]


def fmt(value) -> str:
  if value is None:
    return '-'
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value)
  if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
    return f'{int(value):,}'
  return f'{value:.4g}'


def suite_mark(results: dict) -> str:
  """' (limit N)' for a suite llm.eval ran with --limit=N: fewer items than the evaluation, not its number."""
  return f' (limit {results["limit"]})' if results.get('limit') else ''


def metric_rows(run: dict) -> dict:
  """The run's numbers for the summary table, formatted: summary keys, then every eval key (suite
  order), marked where its suite was limited. A key two suites give (bpb_val: base's and bpb's) is
  taken from the one that scored the most: a whole evaluation, else the largest --limit; the first
  of equals. Each suite's own numbers are on the run's page."""
  out = {k: fmt(run['summary'].get(k)) for k in SUMMARY_KEYS}
  scored = {}  # key -> how much of its evaluation the suite it was taken from scored
  for results in run['evals'].values():
    items = results.get('limit') or math.inf
    for k, v in results.items():
      if k not in NOT_METRICS and items > scored.get(k, 0):
        out[k], scored[k] = fmt(v) + suite_mark(results), items
  return out


def plot_curves(run: dict, path: Path) -> bool:
  """PNG of the run's curves against step; False when its metrics hold none."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  series = [(label, [(r['step'], r[key]) for r in run['metrics'] if key in r]) for key, label in CURVES]
  series = [(label, points) for label, points in series if points]
  if not series:
    return False
  losses = [(l, p) for l, p in series if 'loss' in l]
  rewards = [(l, p) for l, p in series if 'loss' not in l]
  fig, axes = plt.subplots(1, 1 + bool(rewards and losses), figsize=(11 if rewards and losses else 7, 4),
                           squeeze=False)
  for ax, group in zip(axes[0], [g for g in (losses, rewards) if g]):
    for label, points in group:
      ax.plot(*zip(*points), marker='.' if len(points) < 30 else None, label=label)
    ax.set_xlabel('step')
    ax.legend()
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def git_commit() -> str:
  root = Path(__file__).resolve().parents[1]
  run = lambda *args: subprocess.run(['git', *args], cwd=root, capture_output=True, text=True).stdout.strip()
  commit = run('rev-parse', '--short', 'HEAD') or 'unknown'
  return commit + (' (uncommitted changes)' if run('status', '--porcelain', '--untracked-files=no') else '')


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  return ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)] + ['| ' + ' | '.join(r) + ' |' for r in rows]


def write(runs: list[Path], out: Path, host: dict, seed_groups: dict | None = None, seed_keys=()) -> Path:
  """OUT/report.md (and PNGs) for the runs, and the seed groups' table; returns the report's path."""
  data = [read_run(Path(r)) for r in runs]
  over_seeds = ''
  if seed_groups:  # before any file is written: a seed run that cannot be read leaves no half a report
    over_seeds = seeds.table(seeds.aggregate(seed_groups, list(seed_keys)), seed_groups, list(seed_keys))
  names = stage_names(data)
  files.check_writable(out)
  per_stage = [metric_rows(r) for r in data]
  keys = list(dict.fromkeys(k for rows in per_stage for k in rows))
  total_wall = sum((r['summary'].get('wall_s') or 0) + sum(e.get('eval_wall_s', 0) for e in r['evals'].values())
                   for r in data)
  lines = ['# Report card', '',
           f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, git {git_commit()}; host: '
           f'{host.get("cpu")} ({host.get("cores")} cores, {host.get("isa")}), {host.get("devices")} x '
           f'{host.get("device_kind")} ({host.get("platform")}), jax {host.get("jax")}. '
           f'Wall time of the stages and their evaluations: {total_wall / 60:.1f} min.', '',
           '## Summary', '']
  lines += _table(['metric', *names], [[k, *(rows.get(k, '-') for rows in per_stage)] for k in keys])
  for name, run in zip(names, data):
    c, s = run['config'], run['summary']
    lines += ['', f'## {name}: `{run["dir"]}`', '',
              f'task `{c.get("task")}`' + (f', from `{c["init_from"]}`' if c.get('init_from') else '') +
              f'; {fmt(s.get("params"))} parameters; {fmt(s.get("tokens_seen"))} tokens in {fmt(s.get("steps"))} '
              f'steps; wall time {fmt(s.get("wall_s"))} s' + ('' if s else ' (no summary.json: unfinished?)'), '']
    model, train = c.get('model', {}), c.get('train', {})
    lines += _table(['config', 'value'], [[f'model.{k}', fmt(v)] for k, v in model.items()] +
                    [[f'train.{k}', fmt(train.get(k))] for k in ('steps', 'batch_size', 'seq_len', 'lr', 'schedule')
                     if k in train] + [['data.source', fmt(c.get('data', {}).get('source'))]])
    png = re.sub(r'\W+', '_', name.lower()).strip('_') + '_curves.png'
    if plot_curves(run, out / png):
      lines += ['', f'![{name} curves]({png})']
    for suite, results in run['evals'].items():
      lines += ['', f'Evaluation `{suite}`{suite_mark(results)} (checkpoint step {fmt(results.get("step"))}):', '']
      lines += _table(['metric', 'value'], [[k, fmt(v)] for k, v in results.items() if k not in ('step', 'limit')])
  if over_seeds:
    lines += ['', '## Over seeds', '', over_seeds]
  path = out / 'report.md'
  path.write_text('\n'.join(lines) + '\n')
  return path


def main(argv):
  runs = list(_RUNS.value) + argv[1:]
  if not runs:
    raise ValueError('no runs given; pass --runs=DIR[,DIR...] (pretraining, SFT, RL in order)')
  from llm import hostinfo
  groups = dict(seeds.parse_group(g, '--seeds') for g in _SEEDS.value)
  if groups and not _SEED_KEYS.value:
    raise ValueError('--seeds needs --seed_keys=KEY,... (the numbers to average over seeds)')
  path = write([Path(r) for r in runs], Path(_OUT.value), hostinfo.describe(), groups, _SEED_KEYS.value)
  print(f'wrote {path}')


if __name__ == '__main__':
  # Defined only when run as a program: imported (tests, notebooks) beside llm.scaling, whose
  # --runs and --out mean something else, the flags would collide.
  _RUNS = flags.DEFINE_list('runs', [], 'Run directories, in pipeline order (comma-separated).')
  _OUT = flags.DEFINE_string('out', None, 'Folder for report.md and its PNGs.', required=True)
  _SEEDS = flags.DEFINE_multi_string('seeds', [], 'NAME=RUN[,RUN...]: one run per seed, for the "Over seeds" table.')
  _SEED_KEYS = flags.DEFINE_list('seed_keys', [], 'Numbers averaged over seeds (summary.json / eval keys).')
  cli.run(main, 'llm.report', positional=True)  # more runs
