"""results/factuality/operating_points.py: the selective-answering curve on hand-made scores."""
import numpy as np
import pytest

from results.factuality import operating_points


@pytest.fixture
def scores():
  # Known: 0.9, 0.5, 0.2 (exposure 64, 16, 4) and 0.3 (a lucky guess never seen); unknown: 0.7
  # (seen 4 times: not counted as hallucination), 0.6 and 0.1 (never seen: hallucinated if answered).
  return {'knows': np.array([True, True, True, True, False, False, False]),
          'exposure': np.array([64, 16, 4, 0, 4, 0, 0]),
          'value': np.array([0.9, 0.5, 0.2, 0.3, 0.7, 0.6, 0.1])}


def test_curve_answers_at_and_above_each_threshold(scores):
  oc, hallucination = operating_points.curve(scores, 'value')
  # thresholds 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.9, inf; three never-seen questions
  assert oc.tolist() == pytest.approx([0, 0, 1 / 4, 2 / 4, 3 / 4, 3 / 4, 3 / 4, 1])
  assert hallucination.tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 0, 0, 0])


def test_hallucination_at_an_over_conservativeness_budget(scores):
  # abstaining on a quarter of the known facts: below 0.3, so the unseen 0.6 is answered wrongly
  assert operating_points.at_budget(scores, 'value', 0.25) == pytest.approx(1 / 3)
  # abstaining on none: below 0.2, which still drops the unseen 0.1
  assert operating_points.at_budget(scores, 'value', 0.0) == pytest.approx(1 / 3)
  assert operating_points.at_budget(scores, 'value', 0.75) == 0  # below 0.9: every never-seen question abstained


def test_a_threshold_per_relation_and_held_out_people():
  # Two relations on different scales: years sure (known 0.9, 0.8, 0.7; D's guess 0.5), professions
  # unsure (known 0.4, 0.3, 0.35; D's guess 0.2). One threshold that keeps every known fact (0.3)
  # answers the year's guess; one per relation (0.7 and 0.3) abstains on both guesses.
  s = {'knows': np.array([True, True, True, False] * 2), 'exposure': np.array([64, 64, 64, 0] * 2),
       'relation': np.array(['birth_year'] * 4 + ['profession'] * 4), 'subject': np.array(list('ABCD') * 2),
       'value': np.array([0.9, 0.8, 0.7, 0.5, 0.4, 0.3, 0.35, 0.2])}
  assert operating_points.at_budget(s, 'value', 0.0) == 0.5
  assert operating_points.at_budget(s, 'value', 0.0, by_relation=True) == 0
  assert operating_points.rates(s, operating_points.answered(s, 'value', 0.0, True)) == (0, 0)
  # Held out: thresholds set on A and C (every other person by name), measured on B and D. Per
  # relation 0.7 and 0.35: B's profession (0.3) abstained, both guesses too; one threshold (0.35):
  # the same for B, but D's year guessed.
  assert operating_points.held_out(s, 'value', 0.0, True) == (0.5, 0.0)
  assert operating_points.held_out(s, 'value', 0.0, False) == (0.5, 0.5)
