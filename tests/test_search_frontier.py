"""results/factuality/search_frontier.py: selective search's curve and its threshold set in advance,
on hand-made questions."""
import numpy as np
import pytest

from results.factuality import search_frontier


@pytest.fixture
def questions():
  # Six questions by the recollection's probability p. Unseen: 0.1 (search finds it), 0.2 (search
  # misses), 0.4 (search finds it); known, answered right from memory: 0.3, 0.8, 0.9. The first three
  # are the measured half.
  return {'threshold': 0.5, 'p': np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9]),
          'knows': np.array([False, False, True, False, True, True]),
          'unseen': np.array([True, True, False, True, False, False]),
          'memory': np.array([False, False, True, False, True, True]),
          'search': np.array([True, False, True, True, True, True]),
          'measured': np.array([True, True, True, False, False, False])}


def test_curve_searches_below_each_threshold(questions):
  needless, unseen, known = search_frontier.curve(questions, np.array([0.0, 0.2, 0.8, np.inf]))
  assert needless.tolist() == pytest.approx([0, 0, 1 / 3, 1])  # known 0.3 searched from 0.8 on
  assert unseen.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3])  # the 0.2 search misses
  assert known.tolist() == pytest.approx([1, 1, 1, 1])


def test_the_lowest_threshold_reaching_the_target_else_searching_everything(questions):
  assert search_frontier.reaching(questions, 0.3) == 0.2
  assert search_frontier.reaching(questions, 0.6) == 0.8
  assert search_frontier.reaching(questions, 0.9) == np.inf  # 2/3 at most: search everything


def test_halves_split_every_per_question_array(questions):
  measured, calibration = search_frontier.half(questions, True), search_frontier.half(questions, False)
  assert measured['p'].tolist() == [0.1, 0.2, 0.3] and calibration['p'].tolist() == [0.4, 0.8, 0.9]
  assert calibration['unseen'].tolist() == [True, False, False] and calibration['threshold'] == 0.5


def test_the_threshold_fixed_in_advance_aims_past_the_target_by_the_margin():
  # 100 unseen facts, p = 0.01 ... 1.00, each found by search and missed from memory: searching below
  # t finds the facts under t. 80% plus the margin, 1.645 * sqrt(2 * 0.8 * 0.2 / 100) = 9.3 points,
  # needs 90 searched: the threshold is the 91st score, where aiming at 80% itself takes the 81st.
  # One known fact, answered from memory, far above them all.
  unseen = np.arange(101) < 100
  calibration = {'p': np.append(np.arange(1, 101) / 100, 2.0), 'knows': ~unseen, 'unseen': unseen,
                 'memory': ~unseen, 'search': np.ones(101, bool)}
  assert search_frontier.reaching(calibration, 0.8) == pytest.approx(0.81)
  assert search_frontier.fixed_in_advance(calibration) == pytest.approx(0.91)
  # One unseen fact is no evidence: the margin passes 100%, and everything is searched.
  assert search_frontier.fixed_in_advance(search_frontier.half(questions_of_one_unseen(), False)) == np.inf


def questions_of_one_unseen():
  return {'threshold': 0.5, 'p': np.array([0.1, 0.4, 0.8]), 'knows': np.array([False, False, True]),
          'unseen': np.array([False, True, False]), 'memory': np.array([False, False, True]),
          'search': np.array([True, True, True]), 'measured': np.array([False, False, False])}
