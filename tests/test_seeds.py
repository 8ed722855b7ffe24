"""Results over seeds (llm/seeds.py): mean, sample spread, evals over summaries, missing keys refused."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from llm import seeds

ROOT = Path(__file__).resolve().parents[1]


def _run(path, summary, evals=None):
  path.mkdir()
  (path / 'summary.json').write_text(json.dumps(summary))
  if evals:
    (path / 'eval').mkdir()
    (path / 'eval' / 'chat.json').write_text(json.dumps(evals))
  return path


def test_mean_and_sample_std_over_seeds_with_evals_taking_precedence(tmp_path):
  runs = [_run(tmp_path / f's{i}', {'acc': 0.0, 'steps': 600}, {'acc': a}) for i, a in enumerate([0.9, 0.8, 1.0])]
  stats = seeds.aggregate({'r': runs}, ['acc', 'steps'])['r']
  assert stats['acc']['values'] == [0.9, 0.8, 1.0]
  assert stats['acc']['mean'] == pytest.approx(0.9)
  assert stats['acc']['std'] == pytest.approx(0.1)  # sqrt((0.01 + 0.01) / 2)
  assert (stats['acc']['min'], stats['acc']['max']) == (0.8, 1.0)
  assert stats['steps']['std'] == 0.0


def test_a_seed_where_a_rate_is_undefined_is_left_out_and_counted(tmp_path):
  nan = float('nan')
  runs = [_run(tmp_path / f's{i}', {'rate': r}) for i, r in enumerate([nan, 0.5, 0.7])]
  stats = seeds.aggregate({'r': runs}, ['rate'])
  s = stats['r']['rate']
  assert s['defined'] == 2 and s['mean'] == pytest.approx(0.6) and (s['min'], s['max']) == (0.5, 0.7)
  assert s['std'] == pytest.approx(0.1414, abs=1e-4)
  assert '| r | 3 | 60.0 ± 14.1 [50.0, 70.0] (2 of 3 defined) |' in seeds.table(stats, {'r': runs}, ['rate'])
  none = seeds.aggregate({'r': runs[:1]}, ['rate'])['r']['rate']
  assert none['defined'] == 0 and math.isnan(none['mean']) and math.isnan(none['min'])


def test_a_key_named_like_a_rate_with_values_past_one_is_not_shown_as_a_percentage(tmp_path):
  runs = [_run(tmp_path / f's{i}', {'accepted_tokens': v}) for i, v in enumerate([3, 5])]
  stats = seeds.aggregate({'r': runs}, ['accepted_tokens'])
  assert '| r | 2 | 4 ± 1.414 [3, 5] |' in seeds.table(stats, {'r': runs}, ['accepted_tokens'])


def test_cli_writes_the_table_and_refuses_a_missing_key_in_one_line(tmp_path):
  a = _run(tmp_path / 'a', {'acc': 0.5})
  b = _run(tmp_path / 'b', {'other': 1})
  out = tmp_path / 'out'
  ok = subprocess.run([sys.executable, '-m', 'llm.seeds', f'--group=g={a}', '--keys=acc', f'--out={out}'],
                      cwd=ROOT, capture_output=True, text=True)
  assert ok.returncode == 0, ok.stderr
  assert '| g | 1 | 50.0 ± 0.0 [50.0, 50.0] |' in (out / 'table.md').read_text()
  assert (out / 'acc.png').stat().st_size > 0
  bad = subprocess.run([sys.executable, '-m', 'llm.seeds', f'--group=g={a},{b}', '--keys=acc'],
                       cwd=ROOT, capture_output=True, text=True)
  assert bad.returncode != 0 and 'Traceback' not in bad.stderr
  assert f"'acc' is not a number in {b}" in bad.stderr.strip().splitlines()[-1]


def test_an_evaluation_of_an_earlier_checkpoint_is_refused_with_the_command_to_redo_it(tmp_path):
  """eval/chat.json of step 400 in a run trained to step 1200 would sit in the step-1200 column."""
  from llm import report
  run = _run(tmp_path / 's0', {'steps': 1200}, {'step': 400, 'acc': 0.6})
  (run / 'config.json').write_text('{}')
  for read in (seeds.run_numbers, report.read_run):
    with pytest.raises(ValueError, match=r'chat.json is of step 400, the run of step 1200.*--suite=chat'):
      read(run)
  (run / 'eval' / 'chat.json').write_text(json.dumps({'step': 1200, 'acc': 0.95}))
  assert seeds.run_numbers(run)['acc'] == 0.95 and report.read_run(run)['evals']['chat']['acc'] == 0.95


def test_a_rate_of_zero_in_one_seed_is_still_shown_as_a_percentage(tmp_path):
  runs = [_run(tmp_path / f's{i}', {'acc': v}) for i, v in enumerate([0.0, 0.5])]
  stats = seeds.aggregate({'r': runs}, ['acc'])
  assert '| r | 2 | 25.0 ± 35.4 [0.0, 50.0] |' in seeds.table(stats, {'r': runs}, ['acc'])


def test_an_evaluation_of_a_later_step_than_the_summary_is_refused_too(tmp_path):
  run = _run(tmp_path / 'run', {'steps': 600}, {'acc': 0.5, 'step': 700})
  with pytest.raises(ValueError, match='is of step 700, the run of step 600'):
    seeds.run_numbers(run)
