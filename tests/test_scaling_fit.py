"""llm.scaling: the L(N, D) fit, IsoFLOP minima, compute-optimal allocation and the fit CLI, on
synthetic losses from a known law in the regime of this project's tiny models (losses 3.6-6.7)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llm import scaling  # before anything imports scipy: it limits OpenBLAS threads (see llm/scaling.py)

ROOT = Path(__file__).resolve().parents[1]
TRUE = scaling.Law(E=1.7, A=150., B=80., alpha=0.34, beta=0.28)
# 5 sizes x 4 token counts, N 1e5-4e6 and D 5e5-5e6 as in the CPU study.
N_GRID, D_GRID = (x.ravel() for x in np.meshgrid(np.geomspace(1e5, 4e6, 5), np.geomspace(5e5, 5e6, 4)))
# Larger than every fitted point: 2x past the largest N and D.
N_HELD, D_HELD = np.array([8e6, 4e6, 8e6]), np.array([1e7, 1e7, 5e6])


def noisy_losses(noise, seed=0):
  rng = np.random.default_rng(seed)
  return TRUE.loss(N_GRID, D_GRID) * np.exp(noise * rng.standard_normal(N_GRID.size))


def test_objective_gradient_matches_finite_differences():
  args = (np.log(N_GRID), np.log(D_GRID), np.log(noisy_losses(0.005)), np.arange(1., 21.))
  for theta in (TRUE.theta, np.array([3., 4., 0.5, 0.3, 0.2])):
    step = 1e-7 * np.eye(5)
    fd = [(scaling._objective(theta + h, *args)[0] - scaling._objective(theta - h, *args)[0]) / 2e-7 for h in step]
    np.testing.assert_allclose(scaling._objective(theta, *args)[1], fd, rtol=1e-4, atol=1e-6 * np.abs(fd).max())


def test_fit_recovers_known_law():
  # At 0.1% noise the Cramer-Rao bound on log E over this design is ~3% (at 0.5% it is ~14%: E trades
  # off against A and alpha over a 40x range of N), so E gets a 3-sigma tolerance; over 30 seeds the
  # largest errors were 11% (E), 0.004 (alpha), 0.032 (beta), 0.8% (predictions).
  law = scaling.fit_law(N_GRID, D_GRID, noisy_losses(0.001))
  assert abs(law.alpha - TRUE.alpha) < 0.02
  assert abs(law.beta - TRUE.beta) < 0.05
  assert abs(law.E / TRUE.E - 1) < 0.15
  np.testing.assert_allclose(law.loss(N_HELD, D_HELD), TRUE.loss(N_HELD, D_HELD), rtol=0.01)


def test_fit_predicts_held_out_points_at_realistic_noise():
  # 0.5% noise, about the run-to-run spread of a final loss on 262k validation tokens. Over 30 seeds
  # the worst prediction error at these points was 1.7%.
  losses = noisy_losses(0.005)
  law = scaling.fit_law(N_GRID, D_GRID, losses)
  np.testing.assert_allclose(law.loss(N_HELD, D_HELD), TRUE.loss(N_HELD, D_HELD), rtol=0.02)
  assert abs(law.alpha - TRUE.alpha) < 0.05
  laws, failed = scaling.bootstrap(N_GRID, D_GRID, losses, law, scaling.resample_counts(N_GRID.size, 30))
  assert failed == 0 and len(laws) == 30
  for name in ('E', 'alpha', 'beta'):
    lo, hi = np.percentile([getattr(s, name) for s in laws], scaling.INTERVAL)
    assert lo < getattr(TRUE, name) < hi and lo < getattr(law, name) < hi, name


def test_bootstrap_weights_equal_duplicated_runs():
  losses = noisy_losses(0.005)
  counts = np.array([2, 0, 1, 3] * 5)
  weighted = scaling.fit_law(N_GRID, D_GRID, losses, weights=counts)
  repeated = scaling.fit_law(*(np.repeat(x, counts) for x in (N_GRID, D_GRID, losses)))
  np.testing.assert_allclose(weighted, repeated, rtol=1e-4)


@pytest.mark.parametrize('exponent', [3, 4])  # theta = (a, b, e, alpha, beta)
def test_bootstrap_counts_and_leaves_out_failed_refits(monkeypatch, exponent):
  """A refit that does not converge, or fits an exponent (alpha or beta) <= 0, is counted and kept
  out of the intervals."""
  losses = noisy_losses(0.005)
  law = scaling.fit_law(N_GRID, D_GRID, losses)
  real = scaling._best_optimum
  calls = []

  def sometimes_failing(*args):
    best = real(*args)
    calls.append(len(calls))
    if len(calls) == 2:
      best.success = False
    if len(calls) == 3:
      best.x = np.array([-0.1 if i == exponent else x for i, x in enumerate(best.x)])
    return best

  monkeypatch.setattr(scaling, '_best_optimum', sometimes_failing)
  laws, failed = scaling.bootstrap(N_GRID, D_GRID, losses, law, scaling.resample_counts(N_GRID.size, 5))
  assert failed == 2 and len(laws) == 3 and all(s.alpha > 0 and s.beta > 0 for s in laws)


def test_bootstrap_from_a_fit_whose_e_underflowed_to_zero():
  """The committed CPU study's full fit ends at log E = -856: E = exp(e) is 0.0. Refits start from that
  fit; from log(0) = -inf L-BFGS returned fun nan, which min kept over every finite optimum, and all
  refits failed."""
  losses = noisy_losses(0.005)
  law = scaling.fit_law(N_GRID, D_GRID, losses)._replace(E=0.0)
  laws, failed = scaling.bootstrap(N_GRID, D_GRID, losses, law, scaling.resample_counts(N_GRID.size, 5))
  assert failed == 0 and len(laws) == 5
  assert np.isfinite(law.theta).all() and law.theta[2] < -700


def test_a_start_that_ends_in_nan_does_not_win():
  losses = noisy_losses(0.005)
  best = scaling._best_optimum(N_GRID, D_GRID, losses, None, np.full((1, 5), np.nan), scaling.GRID_STARTS)
  assert np.isfinite(best.fun)
  np.testing.assert_allclose(scaling.Law.from_theta(best.x), scaling.fit_law(N_GRID, D_GRID, losses), rtol=1e-6)


# Candidate models every 0.1% in N, FLOPs per token 6N (Hoffmann et al.'s C = 6 N D).
SIZES = np.geomspace(1e2, 1e14, 27_632)
SIX_N = (SIZES, 6 * SIZES)


def test_compute_optimal_matches_brute_force():
  budgets = np.array([1e13, 1e16, 1e21])
  opt = scaling.compute_optimal(TRUE, budgets, SIX_N)
  for i, c in enumerate(budgets):
    n = np.geomspace(1e2, 1e14, 400_001)
    brute = n[np.argmin(TRUE.loss(n, c / (6 * n)))]
    assert opt['N_opt'][i] == pytest.approx(brute, rel=1e-3)
    assert opt['D_opt'][i] == pytest.approx(c / (6 * opt['N_opt'][i]), rel=1e-12)
    assert opt['loss'][i] == pytest.approx(TRUE.loss(brute, c / (6 * brute)), rel=1e-6)
  # N_opt ~ C^(beta/(alpha+beta)).
  slope = np.polyfit(np.log(budgets), np.log(opt['N_opt']), 1)[0]
  assert slope == pytest.approx(TRUE.beta / (TRUE.alpha + TRUE.beta), rel=1e-4)


def test_chinchilla_exponents_of_a_law():
  """N_opt ~ C^(beta/(alpha+beta)), D_opt ~ C^(alpha/(alpha+beta)) (Hoffmann et al., eq. 4): with
  alpha = 0.34, beta = 0.28, a = 0.28/0.62 and b = 0.34/0.62; compute-optimal rows follow them."""
  x = scaling.exponents(TRUE)
  assert x['a'] == pytest.approx(0.451613, abs=1e-6) and x['b'] == pytest.approx(0.548387, abs=1e-6)
  budgets = np.array([1e13, 1e16, 1e21])
  opt = scaling.compute_optimal(TRUE, budgets, SIX_N)
  assert np.polyfit(np.log(budgets), np.log(opt['N_opt']), 1)[0] == pytest.approx(0.451613, rel=1e-4)
  assert np.polyfit(np.log(budgets), np.log(opt['D_opt']), 1)[0] == pytest.approx(0.548387, rel=1e-4)


def embedding_heavy_flops_per_token(n):
  """6N plus a fixed lm-head cost, as in the CPU study's small models (there 6 V d ~ 1.5-4M FLOPs)."""
  return 6 * np.asarray(n) + 3e6


EMBEDDING_HEAVY = (SIZES, embedding_heavy_flops_per_token(SIZES))


def test_compute_optimal_spends_the_budget_as_the_runs_count_it():
  """C counts model FLOPs per token (lm-head included), as the IsoFLOP slices do: N_opt minimises
  L(N, C / flops_per_token(N)) and D_opt = C / flops_per_token(N_opt), by brute force."""
  budgets = np.array([2e12, 2e13, 2e15])
  opt = scaling.compute_optimal(TRUE, budgets, EMBEDDING_HEAVY)
  for i, c in enumerate(budgets):
    n = np.geomspace(2e4, 1e11, 400_001)
    brute = n[np.argmin(TRUE.loss(n, c / embedding_heavy_flops_per_token(n)))]
    assert opt['N_opt'][i] == pytest.approx(brute, rel=1e-3)
    assert opt['D_opt'][i] == pytest.approx(c / embedding_heavy_flops_per_token(brute), rel=1e-3)


@pytest.mark.parametrize('params', ['non_embedding', 'total'])
def test_the_study_models_are_those_its_rules_build(params):
  sizes, flops = scaling.study_models(params)
  from configs import scaling as study
  count = study.non_embedding_params if params == 'non_embedding' else study.total_params
  for n in (5e4, 8e5, 3.2e6):
    shape = study.shape_for(n)
    i = np.flatnonzero(sizes == count(**shape))
    assert len(i) == 1 and flops[i[0]] == study.flops_per_token(shape)
  assert (np.diff(sizes) > 0).all()


def test_both_approaches_give_one_answer_for_one_budget():
  """IsoFLOP slices of runs generated by a known law at C = flops_per_token(N) D: their parabola
  minima and the law's compute-optimal rows must agree on N_opt and D_opt."""
  runs = []
  budgets = (2e12, 6e12, 2e13)
  exact = scaling.compute_optimal(TRUE, budgets, EMBEDDING_HEAVY)
  for c, n_opt in zip(budgets, exact['N_opt']):
    for n in n_opt * np.geomspace(0.8, 1.25, 5):
      fpt = embedding_heavy_flops_per_token(n)
      runs.append(scaling.Run(name=f'{n:g}', path=Path('.'), n=n, d=c / fpt, loss=TRUE.loss(n, c / fpt), flops=c,
                              flops_per_token=fpt, budget=c))
  minima = scaling.isoflop_minima(runs, EMBEDDING_HEAVY)
  np.testing.assert_allclose([m['N_opt'] for m in minima], exact['N_opt'], rtol=0.01)
  np.testing.assert_allclose([m['D_opt'] for m in minima], exact['D_opt'], rtol=0.01)


def slice_run(n, loss, budget, fpt_per_param=8.0):
  return scaling.Run(name=f'n{n:g}_c{budget:g}', path=Path('.'), n=n, d=budget / (fpt_per_param * n), loss=loss,
                     flops=budget, flops_per_token=fpt_per_param * n, budget=budget)


def test_isoflop_minima_of_parabolic_slices():
  runs = []
  for c in (1e13, 1e14, 1e15):
    n_opt = 0.1 * c**0.5  # so N_opt ~ C^0.5, and D_opt = C / (8 N_opt) ~ C^0.5
    for n in n_opt * np.array([0.3, 0.7, 1.5, 4.0]):  # asymmetric around the minimum
      runs.append(slice_run(n, 3.0 + 0.2 * np.log(n / n_opt)**2, c))
  runs += [slice_run(n, 5.0, 1e16) for n in (1e6, 2e6)]  # 2 runs: no parabola
  runs += [slice_run(n, 5.0 - 0.1 * np.log(n)**2, 1e17) for n in (1e6, 2e6, 4e6)]  # concave: no minimum
  minima = scaling.isoflop_minima(runs, (SIZES, 8 * SIZES))
  assert [m['C'] for m in minima] == [1e13, 1e14, 1e15]
  for m in minima:
    assert m['N_opt'] == pytest.approx(0.1 * m['C']**0.5, rel=1e-6)
    assert m['D_opt'] == pytest.approx(m['C'] / (8 * m['N_opt']), rel=1e-3)
    assert m['loss'] == pytest.approx(3.0, abs=1e-9) and m['inside']
  exps = scaling.isoflop_exponents(minima)
  assert exps['a'] == pytest.approx(0.5) and exps['b'] == pytest.approx(0.5, rel=1e-3)
  assert scaling.isoflop_exponents(minima[:1]) is None


def test_d_opt_takes_the_flops_per_token_of_the_model_nearest_n_opt_in_log_n():
  """Models of 1e5 and 1e6 parameters, 1e6 and 1e7 FLOPs per token: 2e5 lies nearer 1e5 in log N
  (a factor 2 against 5), 5e5 nearer 1e6 (5 against 2)."""
  models = (np.array([1e5, 1e6]), np.array([1e6, 1e7]))
  np.testing.assert_array_equal(scaling.nearest_flops_per_token(models, np.array([2e5, 5e5])), [1e6, 1e7])
  # A slice whose parabola in log N has its vertex at 2e5: D_opt = C / 1e6.
  runs = [slice_run(n, 3.0 + 0.2 * np.log(n / 2e5)**2, 1e13) for n in (5e4, 1e5, 4e5, 8e5)]
  [m] = scaling.isoflop_minima(runs, models)
  assert m['N_opt'] == pytest.approx(2e5, rel=1e-9) and m['D_opt'] == pytest.approx(1e13 / 1e6, rel=1e-12)


def test_isoflop_bootstrap_inflates_residuals_for_the_parabolas_three_coefficients(monkeypatch):
  """Four runs at log N = centre + (-3, -1, 1, 3) s: the least-squares parabola leaves exactly the
  cubic part of their losses, eps (-1, 3, -3, 1) (orthogonal to 1, x, x^2 at these points), and the
  resamples draw it times sqrt(4 / (4 - 3)) = 2."""
  eps, pattern = 0.001, np.array([-1., 3., -3., 1.])
  runs = []
  for c, vertex in ((1e13, 3e5), (1e14, 1e6)):
    for k, e in zip((-3, -1, 1, 3), pattern):
      n = vertex * np.exp(0.4 * k)
      runs.append(slice_run(n, 3.0 + 0.2 * np.log(n / vertex)**2 + eps * e, c))
  drawn_from = []

  class Recorder:  # the resamples' residuals: record what they are drawn from, draw zeros
    def choice(self, residuals, size):
      drawn_from.append(np.asarray(residuals))
      return np.zeros(size)

  monkeypatch.setattr(scaling.np.random, 'default_rng', lambda seed: Recorder())
  exps, failed = scaling.isoflop_bootstrap(runs, 1, (SIZES, 8 * SIZES))
  assert failed == 0 and len(exps) == 1
  [residuals] = drawn_from
  np.testing.assert_allclose(residuals, np.tile(2 * eps * pattern, 2), atol=1e-9)


def test_isoflop_exponents_get_a_bootstrap_interval_and_a_failure_count():
  """Residual bootstrap of three noisy slices whose minima follow N_opt = 0.1 C^0.5: the interval of
  a holds 0.5. With a slice almost flat in log N, resamples lose its minimum and are counted."""
  rng = np.random.default_rng(1)

  def study(curvature):
    runs = []
    for c in (1e13, 1e14, 1e15):
      n_opt = 0.1 * c**0.5
      runs += [slice_run(n, 3.0 + curvature * np.log(n / n_opt)**2 + 0.003 * rng.normal(), c)
               for n in n_opt * np.geomspace(0.25, 4.0, 6)]
    return runs

  exps, failed = scaling.isoflop_bootstrap(study(0.2), 100, (SIZES, 8 * SIZES), seed=0)
  assert failed == 0 and len(exps) == 100
  lo, hi = np.percentile([e['a'] for e in exps], scaling.INTERVAL)
  assert lo < 0.5 < hi and hi - lo < 0.1
  exps, failed = scaling.isoflop_bootstrap(study(0.002), 100, (SIZES, 8 * SIZES), seed=0)
  assert failed > 10 and len(exps) + failed == 100

def write_run(path: Path, n: float, budget: float, loss: float | None):
  """A run directory as llm.main leaves it; loss None: unfinished (no summary.json)."""
  path.mkdir(parents=True)
  (path / 'config.json').write_text(json.dumps({'scaling': {'n': n, 'c': budget, 'arg': f'n={n:g},c={budget:g}'}}))
  if loss is not None:
    fpt = 8 * n  # 6N plus lm-head and attention, roughly
    summary = {'val_loss': loss, 'params': n + 5e5, 'params_non_embedding': n, 'tokens_seen': budget / fpt,
               'flops': budget, 'flops_per_token': fpt}
    (path / 'summary.json').write_text(json.dumps(summary))


def run_cli(*args):
  env = {**os.environ, 'PYTHONPATH': str(ROOT)}
  return subprocess.run([sys.executable, '-m', 'llm.scaling', 'fit', *args], capture_output=True, text=True, env=env,
                        cwd=ROOT, timeout=120)


def test_cli_end_to_end(tmp_path):
  rng = np.random.default_rng(0)
  sizes = np.geomspace(1e5, 4e6, 7)
  for i, c in enumerate((4e12, 1e13, 2.5e13)):  # the CPU study's slices, 4 sizes around each optimum
    for n in sizes[i:i + 4]:
      write_run(tmp_path / 'runs' / f'n{n:.3g}_c{c:g}', n, c, TRUE.loss(n, c / (8 * n)) * np.exp(0.002 * rng.normal()))
  write_run(tmp_path / 'runs' / 'unfinished', 1e6, 1e13, None)
  held_n, held_c = 6.4e6, 6e13
  held_loss = TRUE.loss(held_n, held_c / (8 * held_n))
  write_run(tmp_path / 'runs' / 'xxl', held_n, held_c, held_loss)  # inside --runs: --holdout keeps it out of the fit

  proc = run_cli(f'--runs={tmp_path / "runs"}', f'--holdout={tmp_path / "runs" / "xxl"}', f'--out={tmp_path / "out"}',
                 '--bootstrap=10')
  assert proc.returncode == 0, proc.stderr
  assert 'skipping' in proc.stderr and 'unfinished' in proc.stderr
  report = json.loads((tmp_path / 'out' / 'fit.json').read_text())
  assert len(report['runs']) == 12
  (held,) = report['holdout']
  assert held['name'] == 'xxl' and held['predicted']['value'] == pytest.approx(held_loss, rel=0.03)
  assert 'xxl' in proc.stdout and 'holdout' in proc.stdout
  assert report['law']['alpha']['lo'] <= report['law']['alpha']['value'] <= report['law']['alpha']['hi']
  # Default budgets: the three slices, then the largest x10 and x100.
  assert [row['C'] for row in report['compute_optimal']] == [4e12, 1e13, 2.5e13, 2.5e14, 2.5e15]
  assert [m['C'] for m in report['isoflop']['minima']] == [4e12, 1e13, 2.5e13]
  iso_a = report['isoflop']['exponents']['a']
  assert 0.2 < iso_a['value'] < 0.8 and iso_a['lo'] <= iso_a['hi']
  assert report['bootstrap']['samples'] == 10 and report['bootstrap']['failed'] >= 0
  assert 'refits failed' in proc.stdout
  csv = (tmp_path / 'out' / 'runs.csv').read_text().splitlines()
  assert csv[0].startswith('run,role,budget_c,params,params_non_embedding,tokens_seen,flops')
  assert len(csv) == 1 + 12 + 1 and csv[-1].startswith('xxl,holdout,6e+13,')
  for name in ('loss_vs_tokens.png', 'isoflop.png'):
    data = (tmp_path / 'out' / name).read_bytes()
    assert data.startswith(b'\x89PNG') and len(data) > 10_000, name


def test_cli_too_few_runs_is_one_line(tmp_path):
  for i, n in enumerate((1e5, 3e5, 1e6)):
    write_run(tmp_path / f'r{i}', n, 1e13, 4.0 + i * 0.1)
  proc = run_cli(f'--runs={tmp_path}', f'--out={tmp_path / "out"}')
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      'llm.scaling: 3 finished runs: L(N, D) has 5 free parameters (E, A, B, alpha, beta) and needs at least 5 '
      'runs; finish more of the sweep or add --runs folders']


def test_errors_name_the_fix(tmp_path):
  with pytest.raises(scaling.StudyError, match='no finished runs.*summary.json'):
    scaling.fit_study([tmp_path], tmp_path / 'out')
  write_run(tmp_path / 'old', 1e6, 1e13, 4.0)
  summary = json.loads((tmp_path / 'old' / 'summary.json').read_text())
  del summary['flops']
  (tmp_path / 'old' / 'summary.json').write_text(json.dumps(summary))
  with pytest.raises(scaling.StudyError, match='lacks flops: rerun its llm.main command'):
    scaling.load_runs([tmp_path])


def test_only_pretraining_runs_from_scratch_are_points_of_the_law(tmp_path, capsys):
  """A folder of runs may hold the later stages too: SFT's val_loss is on conversations, GRPO's
  summary has none, and a run continued from another trained on more tokens than its tokens_seen."""
  write_run(tmp_path / 'base', 1e6, 1e13, 4.0)
  for name, config in (('sft', {'task': 'sft', 'init_from': 'runs/base'}),
                       ('grpo', {'task': 'grpo', 'init_from': 'runs/sft'}),
                       ('continued', {'task': 'pretrain', 'init_from': 'runs/base'})):
    write_run(tmp_path / name, 1e6, 1e13, 2.0)
    (tmp_path / name / 'config.json').write_text(json.dumps(config))
  summary = json.loads((tmp_path / 'grpo' / 'summary.json').read_text())
  del summary['val_loss']  # GRPO reports rewards, not a validation loss
  (tmp_path / 'grpo' / 'summary.json').write_text(json.dumps(summary))
  assert [r.name for r in scaling.load_runs([tmp_path])] == ['base']
  assert sorted(capsys.readouterr().err.splitlines()) == [
      f'warning: skipping {tmp_path / "continued"}: init_from=runs/base: it started from that run\'s weights, so its '
      'tokens_seen leaves out what they were trained on (L(N, D) fits runs trained from scratch)',
      f'warning: skipping {tmp_path / "grpo"}: task=grpo, not pretraining (L(N, D) fits pretraining runs only)',
      f'warning: skipping {tmp_path / "sft"}: task=sft, not pretraining (L(N, D) fits pretraining runs only)']


def test_seed_spread_sets_seed_noise_beside_the_residuals(tmp_path):
  # Two seeds of each point, their losses exp(+-0.01) around the true law: each pair's log-losses
  # lie 0.01 either side of their mean, two squared deviations over one degree of freedom, so the
  # pooled sd is sqrt(2) x 0.01. No law comes closer to a pair than its middle, so the residuals' rms
  # is at least 0.01 (Huber, nearly L1 at these residuals, may settle anywhere between a pair's runs).
  sizes = np.geomspace(1e5, 4e6, 7)
  for seed, sign in ((0, 1), (1, -1)):
    for i, c in enumerate((4e12, 1e13, 2.5e13)):
      for n in sizes[i:i + 4]:
        write_run(tmp_path / f'seed{seed}' / f'n{n:.3g}_c{c:g}', n, c, TRUE.loss(n, c / (8 * n)) * np.exp(sign * 0.01))
    held_loss = TRUE.loss(6.4e6, 6e13 / (8 * 6.4e6))
    write_run(tmp_path / f'held{seed}' / 'xxl', 6.4e6, 6e13, held_loss * np.exp(sign * 0.02))
  report = scaling.fit_study([tmp_path / 'seed0', tmp_path / 'seed1'], tmp_path / 'out',
                             holdout_roots=[tmp_path / 'held0', tmp_path / 'held1'], samples=0)
  names = [r['name'] for r in report['runs']]
  assert len(set(names)) == 24 and sum(name.startswith('seed1/n') for name in names) == 12
  seeds = report['seeds']
  assert len(seeds['points']) == 12 and all(len(p['losses']) == 2 for p in seeds['points'])
  assert sorted(seeds['points'][0]['runs'])[0].startswith('seed0/')
  assert seeds['pooled_sd_log'] == pytest.approx(np.sqrt(2) * 0.01, rel=1e-9)
  by_hand = np.sqrt(np.mean([np.log(r['loss'] / r['fitted']) ** 2 for r in report['runs']]))
  assert seeds['residual_rms_log'] == pytest.approx(by_hand, rel=1e-9) and 0.01 <= by_hand < 0.02
  (held,) = seeds['holdout']
  assert held['mean'] == pytest.approx(held_loss * np.cosh(0.02), rel=1e-9)
  assert held['sd'] == pytest.approx(held_loss * np.sinh(0.02) * np.sqrt(2), rel=1e-9)
  assert held['predicted'] == report['holdout'][0]['predicted']['value'] == report['holdout'][1]['predicted']['value']
  text = scaling.format_report(report)
  assert '12 points run more than once' in text
  assert f'holdout N=6.4M D=1.17M: 2 runs, mean {held["mean"]:.4f}' in text
  assert f'{held["predicted"] / held["mean"] - 1:+.2%}' in text.split('holdout N=6.4M')[1].splitlines()[0]
  # One seed alone repeats no point: no seed section.
  assert scaling.fit_study([tmp_path / 'seed0'], tmp_path / 'out0', samples=0)['seeds'] is None


def test_runs_of_several_roots_are_named_from_their_common_folder(tmp_path):
  for seed in (0, 1):
    write_run(tmp_path / 'sweep' / f'seed{seed}' / 'n1e+06_c1e+13', 1e6, 1e13, 4.0)
    write_run(tmp_path / 'held' / f'seed{seed}' / 'xxl', 6.4e6, 6e13, 3.5)
  runs = scaling.load_runs([tmp_path / 'sweep' / 'seed0', tmp_path / 'sweep' / 'seed1'])
  assert [r.name for r in runs] == ['seed0/n1e+06_c1e+13', 'seed1/n1e+06_c1e+13']
  held = scaling.load_runs([tmp_path / 'held' / 'seed0' / 'xxl', tmp_path / 'held' / 'seed1' / 'xxl'])
  assert [r.name for r in held] == ['seed0/xxl', 'seed1/xxl']
  assert [r.name for r in scaling.load_runs([tmp_path / 'sweep' / 'seed1'])] == ['n1e+06_c1e+13']


def test_a_run_reached_through_two_roots_is_fitted_once(tmp_path, capsys):
  sizes = np.geomspace(1e5, 4e6, 7)
  for n in sizes:
    write_run(tmp_path / 'sweep' / f'n{n:.3g}', n, 1e13, TRUE.loss(n, 1e13 / (8 * n)))
  one = tmp_path / 'sweep' / f'n{sizes[0]:.3g}'
  assert len(scaling.load_runs([tmp_path / 'sweep'])) == 7
  capsys.readouterr()
  for roots, repeated in ((['sweep', one], '1 run directory'), (['sweep', 'sweep'], '7 run directories'),
                          ([one, 'sweep'], '1 run directory')):
    runs = scaling.load_runs([tmp_path / root for root in roots])
    assert sorted(r.n for r in runs) == sorted(sizes)
    assert capsys.readouterr().err == (f'warning: {repeated} reached through two of the roots given (a folder and a '
                                       'run in it, or one root twice): counted once, 7 runs\n')
  # Not a point run twice, so no seed spread (it read sd 0 when the run was counted twice).
  report = scaling.fit_study([tmp_path / 'sweep', one], tmp_path / 'out', samples=0)
  assert len(report['runs']) == 7 and report['seeds'] is None


@pytest.mark.parametrize('vertex_of_first_slice', [2e5, 3e4])
def test_report_says_when_an_isoflop_minimum_is_extrapolated(tmp_path, vertex_of_first_slice):
  # Each slice's loss is a parabola in log N around a chosen vertex, plus a little noise; the first
  # slice's vertex is inside its sizes (1e5-8e5) or below them.
  rng = np.random.default_rng(0)
  for c, vertex, sizes in ((4e12, vertex_of_first_slice, (1e5, 2e5, 4e5, 8e5)), (1e13, 4e5, (1e5, 3e5, 9e5, 2.7e6)),
                           (2.5e13, 8e5, (2e5, 6e5, 1.8e6, 5.4e6))):
    for n in sizes:
      write_run(tmp_path / f'n{n:g}_c{c:g}', n, c, 4 + 0.1 * np.log(n / vertex) ** 2 + 0.003 * rng.normal())
  report = scaling.fit_study([tmp_path], tmp_path / 'out', samples=20)
  text = scaling.format_report(report)
  inside = [m['inside'] for m in report['isoflop']['minima']]
  failed = report['bootstrap']['isoflop_failed']
  if vertex_of_first_slice < 1e5:
    assert inside == [False, True, True] and failed > 0
    assert 'the exponents extrapolate' in text
  else:
    assert inside == [True, True, True] and 'extrapolate' not in text
  kept_line = f'(intervals over the {20 - failed} of 20 resamples whose minima all stayed inside'
  assert (kept_line in text) == (failed > 0)


def test_an_isoflop_exponent_outside_its_interval_is_not_printed_as_its_estimate_and_interval(tmp_path):
  """results/scaling_cpu_seeds/all_seeds: an extrapolated minimum gave a = 4.1, and the 13 resamples whose
  minima all stayed inside gave [0.987, 1.47]; printed as "a = 4.1 [0.987, 1.47]" it read as an interval."""
  for c, losses in ((4e12, (4.0, 4.5, 4.9, 5.2)), (1e13, (4.2, 4.0, 4.1, 4.4)), (2.5e13, (3.9, 3.7, 3.75, 4.0))):
    for n, loss in zip((1e5, 3e5, 9e5, 2.7e6), losses):
      write_run(tmp_path / f'n{n:g}_c{c:g}', n, c, loss)
  report = scaling.fit_study([tmp_path], tmp_path / 'out', samples=0)
  report['isoflop']['exponents'] = {'a': {'value': 4.1, 'lo': 0.987, 'hi': 1.47},
                                    'b': {'value': 0.5, 'lo': 0.166, 'hi': 0.704}}
  assert ("  N_opt ~ C^a, a = 4.1, outside its resamples' interval [0.987, 1.47];  D_opt ~ C^b, b = 0.5 [0.166, 0.704]"
          in scaling.format_report(report).splitlines())


def test_the_holdout_error_is_the_prediction_relative_to_the_measured_loss(tmp_path):
  """A held-out run of loss 4.0 predicted at 4.2: the prediction is 5% too high, +5.00%."""
  for c, losses in ((4e12, (4.0, 4.5, 4.9, 5.2)), (1e13, (4.2, 4.0, 4.1, 4.4)), (2.5e13, (3.9, 3.7, 3.75, 4.0))):
    for n, loss in zip((1e5, 3e5, 9e5, 2.7e6), losses):
      write_run(tmp_path / f'n{n:g}_c{c:g}', n, c, loss)
  report = scaling.fit_study([tmp_path], tmp_path / 'out', samples=0)
  report['holdout'] = [{'name': 'xxl', 'N': 6.4e6, 'D': 1e6, 'flops': 6e13, 'loss': 4.0,
                        'predicted': {'value': 4.2, 'lo': 4.1, 'hi': 4.3}}]
  [row] = [line for line in scaling.format_report(report).splitlines() if line.startswith('xxl')]
  assert row.split()[-1] == '+5.00%'


def test_report_says_when_a_slice_has_no_minimum(tmp_path):
  # Two slices with a convex minimum inside, and a third whose loss falls all the way to its smallest size.
  for c, losses in ((4e12, (4.0, 4.5, 4.9, 5.2)), (1e13, (4.2, 4.0, 4.1, 4.4)), (2.5e13, (3.9, 3.7, 3.75, 4.0))):
    for n, loss in zip((1e5, 3e5, 9e5, 2.7e6), losses):
      write_run(tmp_path / f'n{n:g}_c{c:g}', n, c, loss)
  report = scaling.fit_study([tmp_path], tmp_path / 'out', samples=0)
  assert [m['C'] for m in report['isoflop']['minima']] == [1e13, 2.5e13]
  assert report['isoflop']['caveats'] == ['2 of 3 slices have a minimum']
  assert '  2 of 3 slices have a minimum' in scaling.format_report(report).splitlines()


def test_report_says_when_one_slice_alone_has_a_minimum(tmp_path):
  # No exponent can be fitted from one minimum; the report must still say why.
  for c, losses in ((4e12, (4.0, 4.5, 4.9, 5.2)), (1e13, (3.6, 4.2, 4.6, 4.8)), (2.5e13, (3.9, 3.7, 3.75, 4.0))):
    for n, loss in zip((1e5, 3e5, 9e5, 2.7e6), losses):
      write_run(tmp_path / f'n{n:g}_c{c:g}', n, c, loss)
  report = scaling.fit_study([tmp_path], tmp_path / 'out', samples=0)
  assert [m['C'] for m in report['isoflop']['minima']] == [2.5e13] and report['isoflop']['exponents'] is None
  assert '  1 of 3 slices have a minimum' in scaling.format_report(report).splitlines()


def test_cli_out_that_cannot_be_written_is_one_line_before_fitting(tmp_path):
  (tmp_path / 'a_file').write_text('')
  proc = run_cli(f'--runs={tmp_path}', f'--out={tmp_path / "a_file" / "out"}')
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(f'llm.scaling: {tmp_path / "a_file" / "out"} cannot be written')


@pytest.mark.parametrize('budgets', [['--budget=-1'], ['--budget=1e15', '--budget=0']])
def test_cli_budget_that_is_not_positive_is_refused_while_the_flags_are_read(tmp_path, budgets):
  """A study that fits: a budget of -1 or 0 FLOPs gave a compute-optimal row of nan or inf, exit 0."""
  for n in (1e5, 3e5, 1e6):
    for c in (4e12, 1e13):
      write_run(tmp_path / 'runs' / f'n{n:g}_c{c:g}', n, c, TRUE.loss(n, c / (8 * n)))
  proc = run_cli(f'--runs={tmp_path / "runs"}', f'--out={tmp_path / "out"}', '--bootstrap=0', *budgets)
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr
  assert 'Flags parsing error: flag --budget=' in proc.stderr and 'a compute budget is a positive number' in proc.stderr
  assert not (tmp_path / 'out').exists()  # refused before the fit


def test_a_fit_refits_from_the_runs_csv_it_wrote(tmp_path):
  """--runs_csv: a committed runs.csv refits to the same study as the run directories it records."""
  rng = np.random.default_rng(1)
  sizes = np.geomspace(1e5, 4e6, 7)
  for seed in (0, 1):
    for i, c in enumerate((4e12, 1e13, 2.5e13)):
      for n in sizes[i:i + 4]:
        path = tmp_path / f'seed{seed}' / f'n{n:.3g}_c{c:g}'
        write_run(path, n, c, TRUE.loss(n, c / (8 * n)) * np.exp(0.002 * rng.normal()))
        summary = json.loads((path / 'summary.json').read_text())
        (path / 'summary.json').write_text(json.dumps({**summary, 'val_bpb': 2.1 + 1e-13, 'steps': 990}))
    write_run(tmp_path / f'held{seed}' / 'xxl', 6.4e6, 6e13, 3.2 + 0.01 * seed)
  roots = [f'--runs={tmp_path / "seed0"}', f'--runs={tmp_path / "seed1"}', f'--holdout={tmp_path / "held0"}',
           f'--holdout={tmp_path / "held1"}', '--bootstrap=5', '--params=total']
  proc = run_cli(*roots, f'--out={tmp_path / "from_dirs"}')
  assert proc.returncode == 0, proc.stderr
  proc = run_cli(f'--runs_csv={tmp_path / "from_dirs" / "runs.csv"}', '--bootstrap=5', '--params=total',
                 f'--out={tmp_path / "from_csv"}')
  assert proc.returncode == 0, proc.stderr
  for name in ('runs.csv', 'fit.json'):
    assert (tmp_path / 'from_csv' / name).read_text() == (tmp_path / 'from_dirs' / name).read_text(), name
  runs, holdout = scaling.load_runs_csv(tmp_path / 'from_dirs' / 'runs.csv')
  assert len(runs) == 24 and [r.name for r in holdout] == ['held0/xxl', 'held1/xxl']
  assert runs[0].n == sizes[0] and runs[0].budget == 4e12 and runs[0].summary['steps'] == 990
  assert {r.summary['val_bpb'] for r in runs} == {2.1 + 1e-13}  # every digit of a float back


def test_runs_csv_errors_are_one_line(tmp_path):
  proc = run_cli(f'--runs_csv={tmp_path / "runs.csv"}', f'--out={tmp_path / "out"}')
  assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
      f'llm.scaling: {tmp_path / "runs.csv"}: no such file; --runs_csv takes the runs.csv an earlier fit wrote to its '
      '--out']
  (tmp_path / 'runs.csv').write_text('run,role,val_loss\nxxl,fit,3.2\n')
  with pytest.raises(scaling.StudyError, match='lacks the columns budget_c, params, params_non_embedding, tokens_seen, '
                     'flops, flops_per_token: --runs_csv takes'):
    scaling.load_runs_csv(tmp_path / 'runs.csv')
  proc = run_cli(f'--runs_csv={tmp_path / "runs.csv"}', f'--runs={tmp_path}', f'--out={tmp_path / "out"}')
  assert proc.returncode != 0 and '--runs_csv replaces --runs and --holdout' in proc.stderr


def test_a_slice_of_two_sizes_has_no_minimum_even_when_one_is_run_twice():
  """Sizes 1e6 (twice) and 4e6: three runs, but two points in N do not make a parabola."""
  runs = [slice_run(1e6, 4.0, 1e15), slice_run(1e6, 4.2, 1e15), slice_run(4e6, 5.0, 1e15)]
  assert scaling.isoflop_minima(runs, (SIZES, 8 * SIZES)) == []


def test_slices_of_three_runs_leave_no_residual_to_bootstrap_and_no_caveat_when_all_have_minima():
  """A parabola through three runs fits them exactly: no residual is left to resample, so the
  bootstrap has nothing to draw from; every slice has its minimum inside, so no caveat is due."""
  runs = [slice_run(n, 3.0 + 0.2 * np.log(n / (0.1 * c**0.5))**2, c)
          for c in (1e13, 1e14) for n in 0.1 * c**0.5 * np.array([0.5, 1.2, 3.0])]
  minima = scaling.isoflop_minima(runs, (SIZES, 8 * SIZES))
  assert len(minima) == 2 and scaling.isoflop_caveats(runs, minima) == []
  assert scaling.isoflop_bootstrap(runs, 5, (SIZES, 8 * SIZES)) == ([], 5)


def test_tokens_per_parameter_of_the_compute_optimal_model():
  """With 6N FLOPs per token, D_opt = C / (6 N_opt), so D_opt / N_opt = C / (6 N_opt^2)."""
  opt = scaling.compute_optimal(TRUE, [1e18], SIX_N)
  assert opt['tokens_per_param'][0] == pytest.approx(1e18 / (6 * opt['N_opt'][0] ** 2), rel=1e-9)
  assert opt['tokens_per_param'][0] > 1  # Chinchilla-like laws put tens of tokens on each parameter
