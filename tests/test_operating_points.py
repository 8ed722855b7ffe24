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
