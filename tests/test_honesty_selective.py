"""Selective answering (llm/honesty/selective.py): AUROC and the threshold at an abstention budget,
against values counted by hand, and the margin a threshold set on other people needs, by simulation."""
import math

import numpy as np
import pytest

from llm.honesty import selective


def test_auroc_counts_pairs_and_ties_half():
  assert selective.auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
  assert selective.auroc([0.1, 0.2], [0.9, 0.8]) == 0.0
  assert selective.auroc([0.5, 0.5], [0.5]) == 0.5
  # pairs (known, unknown): 0.9 beats 0.3 and 0.7; 0.4 beats 0.3, loses to 0.7; 0.3 ties 0.3, loses to 0.7
  assert selective.auroc([0.9, 0.4, 0.3], [0.3, 0.7]) == pytest.approx((2 + 1 + 0.5) / 6)
  assert math.isnan(selective.auroc([], [0.1]))


def test_the_threshold_abstains_on_at_most_the_budget_of_known_questions():
  known = [0.05, 0.9, 0.2, 0.6, 0.3, 0.8, 0.4, 0.7, 0.1, 0.5]
  assert selective.threshold(known, 0.1) == 0.1  # abstaining below 0.1: 0.05 only, 1 of 10
  assert selective.threshold(known, 0.25) == 0.2  # below 0.2: 0.05 and 0.1, 2 of 10 (a third would be 30%)
  assert selective.threshold(known, 0.0) == 0.05  # abstains on none
  assert selective.threshold(known, -0.05) == 0.05  # a budget under 0 too
  assert selective.threshold(known, 1.0) == math.inf
  assert selective.threshold([], 0.1) == -math.inf



def test_the_margin_by_hand():
  assert selective.margin(0.1, 450) == pytest.approx(1.645 * math.sqrt(2 * 0.1 * 0.9 / 450))  # 3.3 points
  assert selective.margin(0.8, 140, z=2.0) == pytest.approx(2.0 * math.sqrt(2 * 0.8 * 0.2 / 140))
  assert selective.margin(0.1, 0) == math.inf


def over_budget(rng, aim_at, n=450, budget=0.1, draws=2000) -> float:
  """How often a threshold set on n known questions' scores, abstaining on aim_at(n) of them, abstains
  on more than the budget of n other known questions' scores from the same distribution."""
  over = 0
  for _ in range(draws):
    calibration, measured = rng.beta(2, 1, n), rng.beta(2, 1, n)
    over += np.mean(measured < selective.threshold(calibration, aim_at(n))) > budget
  return over / draws


def test_aimed_inside_the_budget_by_the_margin_other_people_keep_to_it_19_times_in_20():
  rng = np.random.default_rng(0)
  assert over_budget(rng, lambda n: 0.1 - selective.margin(0.1, n)) < 0.07
  assert over_budget(rng, lambda n: 0.1) > 0.3  # aimed at the budget itself: about half the time
