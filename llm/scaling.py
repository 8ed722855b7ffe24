"""Scaling laws from finished runs: Chinchilla's Approach 3 (a parametric L(N, D)) and Approach 2
(IsoFLOP parabolas), and the compute-optimal allocation they imply.

    python -m llm.scaling fit --runs=runs/scaling --out=runs/scaling/fit
    python -m llm.scaling fit --runs=runs/scaling --holdout=runs/scaling_holdout --out=runs/scaling/fit \
        --budget=1e15 --budget=1e16 --bootstrap=200 --params=non_embedding

--runs and --holdout take run directories, or folders searched for them; repeat either flag for more.
--runs_csv=FILE instead refits from a runs.csv an earlier fit wrote (its rows' role column says which
were held out), so a committed study refits without its run directories:

    python -m llm.scaling fit --runs_csv=results/scaling_cpu/runs.csv --out=results/scaling_cpu
Runs of one point (N, D) under several folders, e.g. the seeds of one sweep, are fitted as separate
runs, and the report sets their spread beside the fit's residuals (seed_spread); one run directory
reached through two roots (a folder and a run in it) is counted once.
Holdout runs are left out of every fit: the report sets the fit's prediction against their loss.

Approach 3 follows Hoffmann et al. 2022 as Besiroglu et al. 2024 ("Chinchilla Scaling: A replication
attempt") redid it: L(N, D) = E + A/N^alpha + B/D^beta, fitted by minimising the sum over runs of
Huber_1e-3(LSE(a - alpha log N, b - beta log D, e) - log L), A = exp(a), B = exp(b), E = exp(e), with
L-BFGS from their grid of initialisations, and 5-95% intervals from refits to bootstrap resamples.

Conventions: N counts non-embedding parameters, D the tokens trained on, L the final validation loss
in nats/token. C counts model FLOPs as the study's runs spend them (llm.model.flops_per_token: 6N plus
the lm-head and attention), the same amount in both approaches: the compute-optimal model is, of the
models configs/scaling.py's shape rules build, the one of least L(N, C / its FLOPs per token), and an
IsoFLOP slice (the runs sharing config scaling.c) has D_opt = C / FLOPs per token of the model nearest
N_opt. Bootstrap refits that fail (no convergence, or an exponent <= 0; for the IsoFLOP exponents,
whose resamples redraw the parabolas' residuals, a slice without a minimum inside its sizes) are
counted in the report and left out of the intervals.

Writes fit.json, runs.csv (each run's summary numbers), loss_vs_tokens.png and isoflop.png to --out
and prints a report.
"""
import collections
import dataclasses
import functools
import itertools
import json
import os
import sys
from pathlib import Path
from typing import NamedTuple

# Five parameters make L-BFGS-B's LAPACK calls tiny; OpenBLAS threads only slow them down, 11x on a
# busy 2-core machine (62 vs 5.6 ms per start, measured). Applies if scipy's OpenBLAS is not loaded yet.
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from scipy import optimize  # noqa: E402

from llm import files  # noqa: E402

SUMMARY_KEYS = ('val_loss', 'params', 'params_non_embedding', 'tokens_seen', 'flops', 'flops_per_token')
RUNS_CSV_KEYS = ('params', 'params_non_embedding', 'tokens_seen', 'flops', 'flops_per_token', 'val_loss', 'val_bpb',
                 'steps', 'wall_s')
HUBER_DELTA = 1e-3
# Besiroglu et al.'s initialisations; columns a, b, e, alpha, beta (4500 points).
INIT_GRID = np.array(list(itertools.product(np.arange(0, 26, 5.), np.arange(0, 26, 5.), np.arange(-1, 1.01, .5),
                                            np.arange(0, 2.01, .5), np.arange(0, 2.01, .5))))
# L-BFGS from all 4500 costs ~30 s on a busy 2-core machine. On five synthetic studies (0.1-2% noise) the
# grid point of lowest objective, or the next, already reached the best of the 4500 optima, so the 16
# lowest (~0.25 s) leave a wide margin. Resamples get as many (and the full fit's optimum besides).
GRID_STARTS = 16
INTERVAL = (5, 95)  # bootstrap percentiles


class StudyError(ValueError):
  """A problem with the runs given; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Run:
  name: str  # the run's path relative to the folder it was found in (of several: to their common folder)
  path: Path | None  # None: read from a runs.csv
  n: float  # parameters, as --params counts them
  d: float  # tokens trained on
  loss: float  # final validation loss, nats/token
  flops: float  # model FLOPs the run spent
  flops_per_token: float
  budget: float | None  # config scaling.c: its IsoFLOP slice (None outside a scaling study)
  # The numbers of its summary.json that runs.csv records (RUNS_CSV_KEYS), as read.
  summary: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)


class Law(NamedTuple):
  E: float
  A: float
  B: float
  alpha: float
  beta: float

  def loss(self, n, d):
    return self.E + self.A / np.power(n, self.alpha) + self.B / np.power(d, self.beta)

  @property
  def theta(self):
    # A fit whose log E (or log A, log B) ran below -745 has E = exp(e) = 0, and log(0) = -inf would
    # start a refit where the gradient is nan. Every log E that far down gives the same losses: floor it.
    a, b, e = np.log(np.maximum([self.A, self.B, self.E], np.finfo(float).tiny))
    return np.array([a, b, e, self.alpha, self.beta])

  @classmethod
  def from_theta(cls, theta):
    a, b, e, alpha, beta = (float(t) for t in theta)
    return cls(np.exp(e), np.exp(a), np.exp(b), alpha, beta)


# --- runs -----------------------------------------------------------------------------------------

def _run_dirs(root: Path) -> list[Path]:
  if (root / 'summary.json').exists() or (root / 'config.json').exists():
    return [root]
  return sorted({f.parent for name in ('summary.json', 'config.json') for f in root.rglob(name)})


def _not_a_pretraining_run(config: dict) -> str | None:
  """Why a run's (N, D, loss) is no point of L(N, D), a law of pretraining from scratch; None if it is one."""
  if config.get('task', 'pretrain') != 'pretrain':
    return f"task={config['task']}, not pretraining (L(N, D) fits pretraining runs only)"
  if config.get('init_from'):
    return (f"init_from={config['init_from']}: it started from that run's weights, so its tokens_seen leaves out "
            'what they were trained on (L(N, D) fits runs trained from scratch)')
  return None


def load_runs(roots, params: str = 'non_embedding', exclude=()) -> list[Run]:
  """Finished pretraining runs under each root (a run directory or a folder holding some); unfinished
  ones, and runs of other tasks or started from another run, are skipped with a warning line, and
  directories in `exclude` left out."""
  excluded = {Path(p).resolve() for p in exclude}
  roots = list(map(Path, roots))
  # Several roots (say the seeds of one sweep) may hold runs of the same name: name them from the
  # roots' common folder instead.
  common = Path(os.path.commonpath([r.resolve() for r in roots])) if len(roots) > 1 else None
  runs, seen, repeated = [], set(), 0
  for root in roots:
    if not root.is_dir():
      raise StudyError(f'{root}: not a directory; pass a run directory or a folder of runs')
    for path in _run_dirs(root):
      if path.resolve() in excluded:
        continue
      if path.resolve() in seen:  # fitted twice, a run would weigh double and pass for another seed of itself
        repeated += 1
        continue
      seen.add(path.resolve())
      config = files.read_json(path / 'config.json') if (path / 'config.json').exists() else {}
      reason = _not_a_pretraining_run(config)
      if reason:
        print(f'warning: skipping {path}: {reason}', file=sys.stderr)
        continue
      if not (path / 'summary.json').exists():
        print(f'warning: skipping {path}: no summary.json (unfinished run)', file=sys.stderr)
        continue
      summary = files.read_json(path / 'summary.json')
      missing = [k for k in SUMMARY_KEYS if k not in summary]
      if missing:
        raise StudyError(f'{path}/summary.json lacks {", ".join(missing)}: rerun its llm.main command (it resumes '
                         'and rewrites summary.json with the current training code), or move it out of --runs')
      budget = config.get('scaling', {}).get('c')
      if common is not None and path.resolve() != common:
        name = str(path.resolve().relative_to(common))
      else:
        name = str(path.relative_to(root)) if path != root else path.name
      runs.append(_run(name, path, summary, budget, params))
  if repeated:
    print(f'warning: {repeated} run director{"y" if repeated == 1 else "ies"} reached through two of the roots given '
          f'(a folder and a run in it, or one root twice): counted once, {len(runs)} runs', file=sys.stderr)
  return runs


def _run(name, path, summary: dict, budget, params: str) -> Run:
  return Run(name=name, path=path, n=float(summary['params_non_embedding' if params == 'non_embedding' else 'params']),
             d=float(summary['tokens_seen']), loss=float(summary['val_loss']), flops=float(summary['flops']),
             flops_per_token=float(summary['flops_per_token']), budget=None if budget is None else float(budget),
             summary={k: summary[k] for k in RUNS_CSV_KEYS if k in summary})


def load_runs_csv(path, params: str = 'non_embedding') -> tuple[list[Run], list[Run]]:
  """The fitted runs and the held-out ones of a runs.csv that write_runs_csv wrote, in its order."""
  path = Path(path)
  if not path.is_file():
    raise StudyError(f'{path}: no such file; --runs_csv takes the runs.csv an earlier fit wrote to its --out')
  lines = path.read_text().splitlines()
  header = lines[0].split(',') if lines else []
  missing = [k for k in ('run', 'role', 'budget_c', *SUMMARY_KEYS) if k not in header]
  if missing:
    raise StudyError(f'{path} lacks the column{"s" * (len(missing) > 1)} {", ".join(missing)}: --runs_csv takes the '
                     'runs.csv an earlier fit wrote to its --out')
  groups = {'fit': [], 'holdout': []}
  for line in lines[1:]:
    row = dict(zip(header, line.split(',')))
    if row['role'] not in groups:
      raise StudyError(f'{path}: run {row["run"]} has role {row["role"]!r}, not fit or holdout')
    # Cells are the JSON numbers of summary.json as str() wrote them; an empty one was missing there.
    summary = {k: json.loads(row[k]) for k in RUNS_CSV_KEYS if row.get(k, '') != ''}
    groups[row['role']].append(_run(row['run'], None, summary, row['budget_c'] or None, params))
  return groups['fit'], groups['holdout']


# --- Approach 3: L(N, D) = E + A/N^alpha + B/D^beta --------------------------------------------------

def _huber(r):
  return np.where(np.abs(r) <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (np.abs(r) - 0.5 * HUBER_DELTA))


def _objective(theta, log_n, log_d, log_loss, weights):
  """Weighted Huber loss of the log-space residuals, and its gradient in (a, b, e, alpha, beta)."""
  a, b, e, alpha, beta = theta
  t_n, t_d = a - alpha * log_n, b - beta * log_d
  top = np.maximum(np.maximum(t_n, t_d), e)  # log-sum-exp, stabilised
  p_n, p_d, p_e = np.exp(t_n - top), np.exp(t_d - top), np.exp(e - top)
  total = p_n + p_d + p_e
  r = top + np.log(total) - log_loss
  g = weights * np.clip(r, -HUBER_DELTA, HUBER_DELTA) / total  # Huber'(r) times d LSE / d term
  g_n, g_d = g * p_n, g * p_d
  grad = np.array([g_n.sum(), g_d.sum(), (g * p_e).sum(), -g_n @ log_n, -g_d @ log_d])
  return weights @ _huber(r), grad


def _grid_objective(grid, log_n, log_d, log_loss, weights):
  """The objective at every row of grid (K x 5), vectorised: picks the L-BFGS starts."""
  a, b, e, alpha, beta = (col[:, None] for col in grid.T)
  terms = np.stack(np.broadcast_arrays(a - alpha * log_n, b - beta * log_d, e))  # 3 x K x R
  top = terms.max(0)
  r = top + np.log(np.exp(terms - top).sum(0)) - log_loss
  return _huber(r) @ weights


def fit_law(n, d, loss, weights=None, init=None, grid_starts: int = GRID_STARTS) -> Law:
  """The law minimising the Huber objective: L-BFGS from the grid_starts best points of INIT_GRID
  (and from init, rows of theta, if given), keeping the best optimum. weights count each run."""
  return Law.from_theta(_best_optimum(n, d, loss, weights, init, grid_starts).x)


def _best_optimum(n, d, loss, weights, init, grid_starts) -> optimize.OptimizeResult:
  log_n, log_d, log_loss = np.log(n), np.log(d), np.log(loss)
  weights = np.ones_like(log_n) if weights is None else np.asarray(weights, float)
  args = (log_n, log_d, log_loss, weights)
  starts = INIT_GRID[np.argsort(_grid_objective(INIT_GRID, *args))[:grid_starts]]
  if init is not None:
    starts = np.vstack([init, starts])
  # Tight tolerances: the objective is ~1e-5, and the defaults stop L-BFGS early (Besiroglu et al.).
  options = dict(ftol=1e-14, gtol=1e-11, maxiter=2000)
  # A start L-BFGS cannot leave ends with fun nan, which min would keep if it came first: nan ranks last.
  return min((optimize.minimize(_objective, x0, args=args, jac=True, method='L-BFGS-B', options=options)
              for x0 in starts), key=lambda res: res.fun if np.isfinite(res.fun) else np.inf)


def resample_counts(num_runs: int, samples: int, seed: int = 0) -> np.ndarray:
  """samples x num_runs: how often each run is drawn in each bootstrap resample (with replacement)."""
  rng = np.random.default_rng(seed)
  return rng.multinomial(num_runs, np.full(num_runs, 1 / num_runs), size=samples)


def bootstrap(n, d, loss, law: Law, counts) -> tuple[list[Law], int]:
  """Refits to each resample (a row of counts, integer weights per run), from the full fit's optimum
  and GRID_STARTS grid points. Returns the refits that converged to exponents > 0, and how many did not."""
  laws = []
  for c in counts:
    best = _best_optimum(n, d, loss, c, law.theta[None], GRID_STARTS)
    refit = Law.from_theta(best.x)
    if best.success and np.isfinite(best.x).all() and refit.alpha > 0 and refit.beta > 0:
      laws.append(refit)
  return laws, len(counts) - len(laws)


def exponents(law: Law) -> dict:
  """N_opt ~ C^a and D_opt ~ C^b where FLOPs per token grow as N (large N: Hoffmann et al., eq. 4)."""
  return {'a': law.beta / (law.alpha + law.beta), 'b': law.alpha / (law.alpha + law.beta)}


@functools.cache
def study_models(params: str = 'non_embedding') -> tuple[np.ndarray, np.ndarray]:
  """(N, model FLOPs per token) of every model configs/scaling.py's shape rules build between 2e4 and
  1e11 non-embedding parameters, by N: the models a compute-optimal row can name. N counts the
  `params` ('non_embedding' or 'total') parameters, as the fit's runs do."""
  from configs import scaling as study
  count = study.non_embedding_params if params == 'non_embedding' else study.total_params
  shapes = {tuple(study.shape_for(n).items()) for n in np.geomspace(2e4, 1e11, 20_001)}
  rows = sorted((count(**dict(s)), study.flops_per_token(dict(s))) for s in shapes)
  return tuple(np.array(column, float) for column in zip(*rows))


def nearest_flops_per_token(models, n) -> np.ndarray:
  """FLOPs per token of the model of `models` nearest to each N (in log N)."""
  sizes, flops = models
  i = np.clip(np.searchsorted(sizes, n), 1, len(sizes) - 1)
  nearer_below = np.log(n) - np.log(sizes[i - 1]) < np.log(sizes[i]) - np.log(n)
  return flops[np.where(nearer_below, i - 1, i)]


def compute_optimal(law: Law, budgets, models) -> dict:
  """N_opt, D_opt, tokens per parameter and the loss at each budget C of model FLOPs: of the
  candidate models (N, FLOPs per token), the one the law gives the least loss with D = C / its
  FLOPs per token. Their FLOPs per token are not proportional to N (the lm-head and attention)."""
  c = np.asarray(budgets, float)
  sizes, flops = models
  with np.errstate(over='ignore'):  # a bootstrap law may overflow at the ends: loss inf, never the least
    k = np.argmin(law.loss(sizes[None], c[:, None] / flops[None]), axis=1)
  n_opt, d_opt = sizes[k], c / flops[k]
  return {'C': c, 'N_opt': n_opt, 'D_opt': d_opt, 'tokens_per_param': d_opt / n_opt, 'loss': law.loss(n_opt, d_opt)}


# --- Approach 2: IsoFLOP slices ---------------------------------------------------------------------

def _slices(runs: list[Run]) -> dict[float, list[Run]]:
  slices = collections.defaultdict(list)
  for run in runs:
    if run.budget is not None:
      slices[run.budget].append(run)
  return dict(sorted(slices.items()))


def isoflop_minima(runs: list[Run], models) -> list[dict]:
  """Per slice of >= 3 distinct runs sharing a budget: the minimum of a parabola of loss in log N
  (runs listed twice count twice), if convex. D_opt = C / FLOPs per token of the model of `models`
  (N, FLOPs per token) nearest N_opt."""
  minima = []
  for c, group in _slices(runs).items():
    if len({r.n for r in group}) < 3:
      continue
    x = np.log([r.n for r in group])
    k2, k1, k0 = np.polyfit(x, [r.loss for r in group], 2)
    if k2 <= 0:
      continue
    x_opt = -k1 / (2 * k2)
    minima.append({'C': c, 'runs': len(group), 'N_opt': float(np.exp(x_opt)),
                   'D_opt': float(c / nearest_flops_per_token(models, np.exp(x_opt))),
                   'loss': float(k0 - k1**2 / (4 * k2)),
                   'parabola': [float(k2), float(k1), float(k0)], 'inside': bool(x.min() <= x_opt <= x.max())})
  return minima


def isoflop_exponents(minima: list[dict]) -> dict | None:
  """N_opt ~ C^a and D_opt ~ C^b, least squares in log space over >= 2 slices."""
  if len(minima) < 2:
    return None
  log_c = np.log([m['C'] for m in minima])
  return {'a': float(np.polyfit(log_c, np.log([m['N_opt'] for m in minima]), 1)[0]),
          'b': float(np.polyfit(log_c, np.log([m['D_opt'] for m in minima]), 1)[0])}


def isoflop_caveats(runs: list[Run], minima: list[dict]) -> list[str]:
  """What makes the IsoFLOP exponents weaker than they look: slices with no minimum, minima outside
  their slices' sizes."""
  slices = len(_slices(runs))
  caveats = [f'{len(minima)} of {slices} slices have a minimum'] if len(minima) < slices else []
  if not all(m['inside'] for m in minima):
    caveats.append('a minimum lies outside its slice\'s sizes: the exponents extrapolate; add runs beyond it')
  return caveats


def isoflop_bootstrap(runs: list[Run], samples: int, models, seed: int = 0) -> tuple[list[dict], int]:
  """IsoFLOP exponents of `samples` residual-bootstrap resamples: every run keeps its N and budget, its
  loss becomes its slice parabola's value plus a residual drawn from all slices' (each scaled by
  sqrt(runs / (runs - 3)) for the parabola's 3 fitted coefficients). A resample fails when a slice's
  parabola is not convex or has its minimum beyond the slice's sizes: returns the exponents of the
  others, and how many failed."""
  minima = isoflop_minima(runs, models)
  slices = {c: group for c, group in _slices(runs).items() if c in {m['C'] for m in minima}}
  parabolas = {m['C']: m['parabola'] for m in minima}
  members = [r for group in slices.values() for r in group]
  fitted = np.array([np.polyval(parabolas[r.budget], np.log(r.n)) for r in members])
  scale = np.array([np.sqrt(len(slices[r.budget]) / max(len(slices[r.budget]) - 3, 1e-9)) for r in members])
  residuals = ((np.array([r.loss for r in members]) - fitted) * scale)[[len(slices[r.budget]) > 3 for r in members]]
  if len(minima) < 2 or not len(residuals):
    return [], samples
  rng = np.random.default_rng(seed)
  results = []
  for _ in range(samples):
    losses = fitted + rng.choice(residuals, len(members))
    drawn = [dataclasses.replace(r, loss=float(l)) for r, l in zip(members, losses)]
    found = [m for m in isoflop_minima(drawn, models)
             if min(r.n for r in slices[m['C']]) <= m['N_opt'] <= max(r.n for r in slices[m['C']])]
    if len(found) == len(slices):
      results.append(isoflop_exponents(found))
  return results, samples - len(results)


# --- plots ------------------------------------------------------------------------------------------

def _si(x: float) -> str:
  for scale, suffix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if abs(x) >= scale:
      return f'{x / scale:.3g}{suffix}'
  return f'{x:.3g}'


def _figure():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt, *plt.subplots(figsize=(7, 5))


def _label_log_axis(axis):
  """Ticks at 1, 2, 5 x 10^k labelled 200k, 500k, 1M: the studies span a decade or two."""
  from matplotlib import ticker
  axis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
  axis.set_major_formatter(ticker.FuncFormatter(lambda x, _: _si(x)))
  axis.set_minor_formatter(ticker.NullFormatter())


def plot_loss_vs_tokens(runs: list[Run], holdout: list[Run], law: Law, path: Path):
  """Measured loss against D, a colour per model size, with the fitted law's line for each size."""
  plt, fig, ax = _figure()
  sizes = sorted({r.n for r in runs + holdout})
  colours = dict(zip(sizes, plt.cm.viridis(np.linspace(0, 0.9, len(sizes)))))
  d_line = np.geomspace(min(r.d for r in runs + holdout) / 1.5, max(r.d for r in runs + holdout) * 1.5, 100)
  for n in sizes:
    fitted = [r for r in runs if r.n == n]
    ax.plot(d_line, law.loss(n, d_line), color=colours[n], ls='-' if fitted else '--', lw=1)
    if fitted:
      ax.scatter([r.d for r in fitted], [r.loss for r in fitted], color=colours[n], label=f'N={_si(n)}')
  for r in holdout:
    ax.scatter(r.d, r.loss, marker='*', s=220, color=colours[r.n], edgecolor='black', zorder=3,
               label=f'holdout N={_si(r.n)}')
  ax.set(xscale='log', xlabel='D, tokens', ylabel='validation loss, nats/token',
         title=f'L = {law.E:.3g} + {law.A:.3g}/N^{law.alpha:.3f} + {law.B:.3g}/D^{law.beta:.3f}')
  _label_log_axis(ax.xaxis)
  ax.legend(fontsize=8)
  fig.savefig(path, dpi=120, bbox_inches='tight')
  plt.close(fig)


def plot_isoflop(runs: list[Run], minima: list[dict], fitted_exponents: dict | None, caveats: list[str], path: Path):
  """Loss against N per compute budget, with each slice's parabola and its minimum."""
  plt, fig, ax = _figure()
  budgets = sorted({r.budget for r in runs if r.budget is not None})
  colours = dict(zip(budgets, plt.cm.plasma(np.linspace(0, 0.85, max(1, len(budgets))))))
  for c in budgets:
    group = [r for r in runs if r.budget == c]
    ax.scatter([r.n for r in group], [r.loss for r in group], color=colours[c], label=f'C={c:.3g}')
  for m in minima:
    x = np.log([r.n for r in runs if r.budget == m['C']])
    x_opt = np.log(m['N_opt'])
    x_line = np.linspace(min(x.min(), x_opt) - 0.2, max(x.max(), x_opt) + 0.2, 100)
    ax.plot(np.exp(x_line), np.polyval(m['parabola'], x_line), color=colours[m['C']], lw=1)
    ax.scatter(m['N_opt'], m['loss'], marker='X', s=120, color=colours[m['C']], edgecolor='black', zorder=3)
  title = 'IsoFLOP slices (X: parabola minimum)'
  if fitted_exponents:
    title += f'; N_opt ~ C^{fitted_exponents["a"]:.2f}, D_opt ~ C^{fitted_exponents["b"]:.2f}'
    if caveats:
      title += '\n(' + '; '.join(c.split(':')[0] for c in caveats) + ')'
  if not budgets:
    ax.text(0.5, 0.5, 'no runs with config scaling.c', ha='center', transform=ax.transAxes)
  ax.set(xscale='log', xlabel='N, parameters', ylabel='validation loss, nats/token', title=title)
  _label_log_axis(ax.xaxis)
  if budgets:
    ax.legend(fontsize=8)
  fig.savefig(path, dpi=120, bbox_inches='tight')
  plt.close(fig)


def write_runs_csv(runs: list[Run], holdout: list[Run], path: Path):
  """The numbers of every run's summary.json the study used, one row per run (a record to commit, and
  what --runs_csv refits from)."""
  rows = [['run', 'role', 'budget_c', *RUNS_CSV_KEYS]]
  for role, group in (('fit', runs), ('holdout', holdout)):
    for r in group:
      budget = '' if r.budget is None else f'{r.budget:g}'
      rows.append([r.name, role, budget, *(r.summary.get(k, '') for k in RUNS_CSV_KEYS)])
  path.write_text(''.join(','.join(map(str, row)) + '\n' for row in rows))


# --- seeds ------------------------------------------------------------------------------------------

def seed_spread(runs: list[Run], holdout: list[Run], law: Law) -> dict | None:
  """Where a point (N, D) was run more than once (other seeds): the runs' spread, pooled over points,
  beside the fit's residuals. The pooled spread is the noise no law can fit; residuals far above it
  mean the law's form misses something. None without repeated points."""
  def groups(rs):
    by_point = collections.defaultdict(list)
    for r in rs:
      by_point[r.n, r.d].append(r)
    return [g for g in by_point.values() if len(g) > 1]

  repeated = groups(runs)
  if not repeated:
    return None
  log_dev = [np.log(r.loss) - np.mean(np.log([x.loss for x in g])) for g in repeated for r in g]
  dof = sum(len(g) - 1 for g in repeated)
  residuals = [np.log(r.loss / law.loss(r.n, r.d)) for r in runs]
  point = lambda g: {'N': g[0].n, 'D': g[0].d, 'runs': [r.name for r in g], 'losses': [r.loss for r in g],
                     'mean': float(np.mean([r.loss for r in g])), 'sd': float(np.std([r.loss for r in g], ddof=1))}
  return {'points': [point(g) for g in repeated],
          'pooled_sd_log': float(np.sqrt(np.sum(np.square(log_dev)) / dof)),
          'residual_rms_log': float(np.sqrt(np.mean(np.square(residuals)))),
          'holdout': [{**point(g), 'predicted': float(law.loss(g[0].n, g[0].d))} for g in groups(holdout)]}


# --- the study --------------------------------------------------------------------------------------

def _interval(value, samples) -> dict:
  lo, hi = np.nanpercentile(np.asarray(samples, float), INTERVAL)
  return {'value': float(value), 'lo': float(lo), 'hi': float(hi)}


def fit_study(run_roots, out, holdout_roots=(), budgets=(), samples: int = 200, params: str = 'non_embedding',
              seed: int = 0, models=None) -> dict:
  """Fits, bootstraps and plots the runs under run_roots; writes fit.json and the plots to out.
  models: (N, model FLOPs per token) of the models a compute-optimal row may name; None: the
  study's (configs/scaling.py's shape rules, N counted as `params`)."""
  holdout = load_runs(holdout_roots, params)
  runs = load_runs(run_roots, params, exclude=[r.path for r in holdout])
  if not runs:
    raise StudyError(f'no finished runs under {", ".join(map(str, run_roots))}: --runs takes run directories '
                     'holding summary.json, or folders of them (e.g. the --root of llm.sweep)')
  return fit_runs(runs, holdout, out, budgets, samples, params, seed, models)


def fit_runs(runs: list[Run], holdout: list[Run], out, budgets=(), samples: int = 200, params: str = 'non_embedding',
             seed: int = 0, models=None) -> dict:
  """fit_study's fits, bootstrap and plots of runs already loaded (load_runs, load_runs_csv)."""
  if models is None:
    models = study_models(params)
  if len(runs) < 5:
    raise StudyError(f'{len(runs)} finished runs: L(N, D) has 5 free parameters (E, A, B, alpha, beta) and needs '
                     'at least 5 runs; finish more of the sweep or add --runs folders')
  runs = sorted(runs, key=lambda r: (r.n, r.d))
  n, d, loss = (np.array([getattr(r, k) for r in runs]) for k in ('n', 'd', 'loss'))
  law = fit_law(n, d, loss)
  laws, failed = bootstrap(n, d, loss, law, resample_counts(len(runs), samples, seed)) if samples else ([law], 0)
  if not laws:
    raise StudyError(f'all {samples} bootstrap refits failed (no convergence, or an exponent <= 0): the runs do not '
                     'pin the law down; add runs, or pass --bootstrap=0 for the fit alone')
  if not budgets:
    slices = sorted({r.budget for r in runs if r.budget is not None})
    top = max(slices) if slices else max(r.flops for r in runs)
    budgets = slices + [top * 10, top * 100]
  optimal = compute_optimal(law, budgets, models)
  optimal_samples = [compute_optimal(sample, budgets, models) for sample in laws]
  minima = isoflop_minima(runs, models)
  for c, group in _slices(runs).items():
    if len({r.n for r in group}) >= 3 and c not in {m['C'] for m in minima}:
      print(f'warning: IsoFLOP slice C={c:.3g}: loss is not convex in log N, no minimum; add runs on both '
            'sides of the best one', file=sys.stderr)
  iso_exponents = isoflop_exponents(minima)
  iso_samples, iso_failed = isoflop_bootstrap(runs, samples, models, seed) if samples else ([], 0)
  report = {
      'conventions': {'N': f'{params} parameters', 'D': 'tokens trained on', 'L': 'final val_loss, nats/token',
                      'compute_optimal': 'C = flops_per_token(N) D in model FLOPs, N one of the study\'s models',
                      'isoflop': 'slices share config scaling.c (model FLOPs); D_opt = C / flops_per_token(N_opt)',
                      'intervals': f'{INTERVAL[0]}-{INTERVAL[1]}% percentiles over {samples} bootstrap resamples'},
      'bootstrap': {'samples': samples, 'failed': failed, 'isoflop_failed': iso_failed},
      'law': {k: _interval(v, [getattr(s, k) for s in laws]) for k, v in law._asdict().items()},
      'exponents': {k: _interval(v, [exponents(s)[k] for s in laws]) for k, v in exponents(law).items()},
      'huber_objective': float(_objective(law.theta, np.log(n), np.log(d), np.log(loss), np.ones_like(n))[0]),
      'runs': [{'name': r.name, 'N': r.n, 'D': r.d, 'flops': r.flops, 'C': r.budget, 'loss': r.loss,
                'fitted': float(law.loss(r.n, r.d))} for r in runs],
      'holdout': [{'name': r.name, 'N': r.n, 'D': r.d, 'flops': r.flops, 'loss': r.loss,
                   'predicted': _interval(law.loss(r.n, r.d), [s.loss(r.n, r.d) for s in laws])} for r in holdout],
      'compute_optimal': [{k: (float(v[i]) if k == 'C' else _interval(v[i], [s[k][i] for s in optimal_samples]))
                           for k, v in optimal.items()} for i in range(len(budgets))],
      'isoflop': {'minima': minima, 'caveats': isoflop_caveats(runs, minima), 'exponents': iso_exponents and {
          k: _interval(v, [e[k] for e in iso_samples] or [v]) for k, v in iso_exponents.items()}},
      'seeds': seed_spread(runs, holdout, law),
  }
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / 'fit.json').write_text(json.dumps(report, indent=2) + '\n')
  write_runs_csv(runs, holdout, out / 'runs.csv')
  plot_loss_vs_tokens(runs, holdout, law, out / 'loss_vs_tokens.png')
  plot_isoflop(runs, minima, iso_exponents, report['isoflop']['caveats'], out / 'isoflop.png')
  return report


def format_report(report: dict) -> str:
  """The human-readable summary printed by the CLI."""
  def iv(x, fmt='.3g'):
    return f'{x["value"]:{fmt}} [{x["lo"]:{fmt}}, {x["hi"]:{fmt}}]'

  def iv_si(x):
    return f'{_si(x["value"])} [{_si(x["lo"])}, {_si(x["hi"])}]'

  conv = report['conventions']
  boot = report['bootstrap']
  lines = [f'L(N, D) = E + A/N^alpha + B/D^beta over {len(report["runs"])} runs; N = {conv["N"]}, D = tokens, '
           f'L = val_loss (nats/token); intervals: {conv["intervals"]} ({boot["failed"]} refits failed and are '
           f'left out; IsoFLOP: {boot["isoflop_failed"]})']
  lines += [f'  {k:<6}{iv(v, ".4g")}' for k, v in report['law'].items()]
  x = report['exponents']
  lines.append(f'  where FLOPs per token grow as N: N_opt ~ C^a, a = beta/(alpha+beta) = {iv(x["a"])};  '
               f'D_opt ~ C^b, b = {iv(x["b"])}')
  lines.append(f'\n{"run":<28}{"N":>8}{"D":>8}{"C":>9}{"loss":>8}{"fitted":>8}{"resid":>8}')
  for r in report['runs']:
    c = '-' if r['C'] is None else f'{r["C"]:.3g}'
    lines.append(f'{r["name"][-27:]:<28}{_si(r["N"]):>8}{_si(r["D"]):>8}{c:>9}{r["loss"]:>8.4f}{r["fitted"]:>8.4f}'
                 f'{r["loss"] / r["fitted"] - 1:>+8.2%}')
  if report['holdout']:
    lines.append(f'\n{"holdout":<28}{"N":>8}{"D":>8}{"loss":>8}  {"predicted [5-95%]":<26}{"error":>8}')
    for r in report['holdout']:
      p = r['predicted']
      lines.append(f'{r["name"][-27:]:<28}{_si(r["N"]):>8}{_si(r["D"]):>8}{r["loss"]:>8.4f}  {iv(p, ".4f"):<26}'
                   f'{p["value"] / r["loss"] - 1:>+8.2%}')
  if report['seeds']:
    seeds = report['seeds']
    lines.append(f'\n{len(seeds["points"])} points run more than once (other seeds): their spread in log-loss, '
                 f'pooled, sd {seeds["pooled_sd_log"]:.4f}; the fit\'s residuals over all runs, rms '
                 f'{seeds["residual_rms_log"]:.4f}')
    for p in seeds['holdout']:
      lines.append(f'  holdout N={_si(p["N"])} D={_si(p["D"])}: {len(p["losses"])} runs, mean {p["mean"]:.4f} '
                   f'(sd {p["sd"]:.4f}); predicted {p["predicted"]:.4f}: {p["predicted"] / p["mean"] - 1:+.2%}')
  lines.append(f'\ncompute-optimal, {conv["compute_optimal"]}\n{"C":>9}  {"N_opt [5-95%]":<24}{"D_opt [5-95%]":<24}'
               f'{"D/N [5-95%]":<28}loss')
  for row in report['compute_optimal']:
    lines.append(f'{row["C"]:>9.3g}  {iv_si(row["N_opt"]):<24}{iv_si(row["D_opt"]):<24}'
                 f'{iv(row["tokens_per_param"]):<28}{row["loss"]["value"]:.4f}')
  iso = report['isoflop']
  lines.append(f'\nIsoFLOP (Approach 2; {conv["isoflop"]})')
  if not iso['minima']:
    lines.append('  no slice with >= 3 runs sharing config scaling.c')
  for m in iso['minima']:
    where = '' if m['inside'] else '  (outside the sampled N: extrapolated)'
    lines.append(f'  C={m["C"]:<10.3g}{m["runs"]} runs  N_opt {_si(m["N_opt"])}  D_opt {_si(m["D_opt"])}  '
                 f'D/N {m["D_opt"] / m["N_opt"]:.3g}  loss {m["loss"]:.4f}{where}')
  def iv_iso(x):  # the resamples kept have every minimum inside its slice: an extrapolated fit may lie outside them
    if x['lo'] <= x['value'] <= x['hi']:
      return iv(x)
    return f'{x["value"]:.3g}, outside its resamples\' interval [{x["lo"]:.3g}, {x["hi"]:.3g}]'

  if iso['exponents']:
    a, b = (iv_iso(iso['exponents'][k]) for k in 'ab')
    lines.append(f'  N_opt ~ C^a, a = {a};  D_opt ~ C^b, b = {b}')
    kept = boot['samples'] - boot['isoflop_failed']
    if boot['isoflop_failed']:  # the interval is conditional on the resamples that kept every minimum inside
      lines.append(f'  (intervals over the {kept} of {boot["samples"]} resamples whose minima all stayed inside their '
                   'slices\' sizes)')
  lines += [f'  {caveat}' for caveat in iso['caveats']]  # also when too few minima are left for an exponent
  return '\n'.join(lines)


# --- CLI --------------------------------------------------------------------------------------------

_RUNS = flags.DEFINE_multi_string('runs', [], 'A run directory, or a folder searched for them (repeatable).')
_HOLDOUT = flags.DEFINE_multi_string('holdout', [], 'Runs to predict, left out of the fits (repeatable).')
_RUNS_CSV = flags.DEFINE_string('runs_csv', None, 'A runs.csv an earlier fit wrote: refit its rows (replaces '
                                 '--runs and --holdout).')
_OUT = flags.DEFINE_string('out', None, 'Folder for fit.json, loss_vs_tokens.png and isoflop.png.')
_BUDGET = flags.DEFINE_multi_float('budget', [], 'Compute budgets in FLOPs for the compute-optimal rows '
                                   '(default: the study\'s slices, and the largest x10 and x100).')
# A validator, not lower_bound (which admits its bound): a budget of 0 FLOPs trains on no tokens either.
flags.register_validator(_BUDGET, lambda budgets: all(c > 0 for c in budgets),
                         'a compute budget is a positive number of FLOPs, e.g. --budget=1e15')
_BOOTSTRAP = flags.DEFINE_integer('bootstrap', 200, 'Bootstrap resamples for the intervals (0: none).', lower_bound=0)
_PARAMS = flags.DEFINE_enum('params', 'non_embedding', ['non_embedding', 'total'], 'Which parameter count is N.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the bootstrap resamples.')


def main(argv):
  if argv[1:] != ['fit']:
    raise app.UsageError(f'expected the sub-command fit, got {argv[1:]}: '
                         'python -m llm.scaling fit --runs=DIR --out=DIR')
  if _RUNS_CSV.value and (_RUNS.value or _HOLDOUT.value):
    raise app.UsageError('--runs_csv replaces --runs and --holdout (its role column says which runs were held out)')
  if not (_RUNS.value or _RUNS_CSV.value) or not _OUT.value:
    raise app.UsageError('fit needs --runs=DIR (one or more) or --runs_csv=FILE, and --out=DIR')
  try:
    files.check_writable(_OUT.value)  # before the fits and their bootstrap
    fit_args = (_BUDGET.value, _BOOTSTRAP.value, _PARAMS.value, _SEED.value)
    if _RUNS_CSV.value:
      report = fit_runs(*load_runs_csv(_RUNS_CSV.value, _PARAMS.value), _OUT.value, *fit_args)
    else:
      report = fit_study(_RUNS.value, _OUT.value, _HOLDOUT.value, *fit_args)
  except (StudyError, PermissionError) as e:
    sys.exit(f'llm.scaling: {e}')
  print(format_report(report))
  print(f'\nwrote {Path(_OUT.value) / "fit.json"}, runs.csv, loss_vs_tokens.png, isoflop.png')


if __name__ == '__main__':
  app.run(main)
