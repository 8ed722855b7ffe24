"""Selective answering (llm/honesty/selective.py): AUROC and the threshold at an abstention budget,
against values counted by hand."""
import math

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
  assert selective.threshold(known, 1.0) == math.inf
  assert selective.threshold([], 0.1) == -math.inf

