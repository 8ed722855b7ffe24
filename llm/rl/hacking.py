"""Measuring reward hacking (Gao et al., arXiv 2210.10760): how far the policy moved, as
d = sqrt(KL(pi || pi_init)), against gold and proxy reward; their functional forms fitted to the
gold curve; and a monitor that warns when gold falls while the proxy rises.

    best-of-n   KL_bon = log n - (n - 1) / n          R_bon(d) = d (alpha - beta d)
    RL          KL estimated from samples            R_rl(d)  = d (alpha - beta log d)

R is gold reward relative to the initial policy's (R(0) = 0).
"""
import dataclasses
import math
from pathlib import Path

from absl import logging
import numpy as np

from llm.data import sources


def kl_bon(n: int) -> float:
  """KL(best-of-n || pi) for a continuous reward with no ties (Stiennon et al.; Gao et al.)."""
  if n < 1:
    raise ValueError(f'best-of-n needs n >= 1, got {n}')
  return math.log(n) - (n - 1) / n


def sequence_kl(logp_BxT: np.ndarray, ref_logp_BxT: np.ndarray, mask_BxT: np.ndarray) -> float:
  """KL(pi || pi_ref) from completions sampled from pi: the mean over sequences of
  sum_t (log pi - log pi_ref) on the sampled tokens (unbiased; one sample can be negative)."""
  mask = np.asarray(mask_BxT, np.float64)
  return float(((np.asarray(logp_BxT, np.float64) - ref_logp_BxT) * mask).sum(1).mean())


def distance(kl: float) -> float:
  """d = sqrt(KL), KL clipped at 0 (a sample estimate near 0 may come out slightly negative)."""
  return math.sqrt(max(kl, 0.0))


def r_bon(d, alpha, beta):
  return d * (alpha - beta * d)


def r_rl(d, alpha, beta):
  return d * (alpha - beta * np.log(np.maximum(d, 1e-12)))


@dataclasses.dataclass(frozen=True)
class Fit:
  alpha: float
  beta: float
  peak_d: float  # where the fitted gold curve is highest (inf when it never turns down)
  rmse: float


def fit(form: str, d, gold) -> Fit:
  """Least-squares fit of R_bon ('bon') or R_rl ('rl') to points (d, gold - gold at d = 0)."""
  from scipy import optimize
  f = {'bon': r_bon, 'rl': r_rl}[form]
  d, gold = np.asarray(d, np.float64), np.asarray(gold, np.float64)
  (alpha, beta), _ = optimize.curve_fit(f, d, gold, p0=(1.0, 0.1), maxfev=20_000)
  if beta <= 0:
    peak = math.inf
  else:  # bon: d (a - b d)' = a - 2 b d = 0;  rl: (a - b log d) - b = 0
    peak = alpha / (2 * beta) if form == 'bon' else math.exp(alpha / beta - 1)
  rmse = float(np.sqrt(np.mean((f(d, alpha, beta) - gold) ** 2)))
  return Fit(float(alpha), float(beta), float(peak), rmse)


class HackingMonitor:
  """Fed gold and proxy at every evaluation; flags hacking when gold has fallen more than
  `tolerance` below its best so far while the proxy has risen more than `tolerance` above its
  value at that best point. Its history can be rebuilt from metrics.jsonl (a resumed run)."""

  def __init__(self, tolerance: float = 0.0, gold_key: str = 'rlhf_gold', proxy_key: str = 'rlhf_proxy'):
    self.tolerance, self.gold_key, self.proxy_key = tolerance, gold_key, proxy_key
    self.history: list[tuple[int, float, float]] = []

  def load(self, metrics_path: Path):
    """The evaluations a run already logged (before a resume), in step order."""
    self.history = []
    if Path(metrics_path).exists():
      for row in sources.read_jsonl(metrics_path, last_line_may_be_cut=True):
        if self.gold_key in row and self.proxy_key in row:
          self.history = [h for h in self.history if h[0] < row['step']]  # a step logged again after a resume
          self.history.append((row['step'], row[self.gold_key], row[self.proxy_key]))

  def update(self, step: int, gold: float, proxy: float) -> dict:
    self.history = [h for h in self.history if h[0] < step] + [(step, gold, proxy)]
    best_step, best_gold, proxy_at_best = max(self.history, key=lambda h: h[1])
    hacking = gold < best_gold - self.tolerance and proxy > proxy_at_best + self.tolerance
    if hacking:
      logging.warning('reward hacking at step %d: gold %.4f fell from its best %.4f (step %d) while the proxy '
                      'rose from %.4f to %.4f', step, gold, best_gold, best_step, proxy_at_best, proxy)
    return {'hacking': float(hacking), 'gold_below_best': best_gold - gold}
