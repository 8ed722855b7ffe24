"""The results' tables over seeds and bases: results/factuality/mean_tables.py and
results/reward_hacking/copy_base_seeds.py, on hand-made tables whose means are worked out here;
results/sft_recipe/collect.sh on its committed runs."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from results.factuality import mean_tables
from results.reward_hacking import copy_base_seeds


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def test_mean_cell_averages_each_figure_and_lists_the_bases():
  assert mean_tables.mean_cell(['50.6%', '40.6%']) == '45.6% (50.6 / 40.6)'
  assert mean_tables.mean_cell(['8.1%; 55.0%', '10.1%; 45.0%']) == '9.1%; 50.0% (8.1%; 55.0% / 10.1%; 45.0%)'
  assert mean_tables.mean_cell(['0.0%', '0.0%']) == '0.0%'
  assert mean_tables.mean_cell(['-', '12.0%']) == '- / 12.0%'  # nothing to average against


def test_tables_with_the_same_rows_combine_figure_by_figure(tmp_path):
  header = '| | baseline | refusals |\n|---|---|---|\n'
  a = _write(tmp_path / 'a.md', header + '| accuracy | 50.0% | 30.0% |\n| hallucination | 90.0% | 40.0% |\n\nnot a row\n')
  b = _write(tmp_path / 'b.md', header + '| accuracy | 40.0% | 30.0% |\n| hallucination | 100.0% | 50.0% |\n')
  text = mean_tables.combine([mean_tables.rows(a), mean_tables.rows(b)])
  assert '| accuracy | 45.0% (50.0 / 40.0) | 30.0% |' in text
  assert '| hallucination | 95.0% (90.0 / 100.0) | 45.0% (40.0 / 50.0) |' in text


def test_a_table_of_bases_stacks_them_under_a_mean_row(tmp_path):
  header = '| base | needless; unseen | fewest (known) |\n|---|---|---|\n'
  a = _write(tmp_path / 'a.md', header + '| runs_s0 | 8.0%; 90.0% | 18.0% (90.0%) |\n')
  b = _write(tmp_path / 'b.md', header + '| runs_s1 | 12.0%; 80.0% | 22.0% (80.0%) |\n')
  lines = mean_tables.combine([mean_tables.rows(a), mean_tables.rows(b)]).splitlines()
  assert lines[2:] == ['| runs_s0 | 8.0%; 90.0% | 18.0% (90.0%) |', '| runs_s1 | 12.0%; 80.0% | 22.0% (80.0%) |',
                       '| mean | 10.0%; 85.0% | 20.0% (85.0%) |']


def test_tables_of_different_kinds_are_refused(tmp_path):
  a = _write(tmp_path / 'a.md', '| | x |\n|---|---|\n| accuracy | 1% |\n')
  b = _write(tmp_path / 'b.md', '| | x |\n|---|---|\n| recall | 1% |\n')
  with pytest.raises(ValueError, match='different rows'):
    mean_tables.combine([mean_tables.rows(a), mean_tables.rows(b)])
  c = _write(tmp_path / 'c.md', '| | y |\n|---|---|\n| accuracy | 1% |\n')
  with pytest.raises(ValueError, match='different headers'):
    mean_tables.combine([mean_tables.rows(a), mean_tables.rows(c)])


def _report(folder, seed, rm_acc, gold):
  """A hacking_report folder: one reward model, one best-of-n curve and one RL run whose gold rises
  to its best at step 2 and falls after it (the monitor fires at step 4)."""
  _write(folder / 'table.md',
         '| reward model | pairs | held-out accuracy | length-only baseline | held-out pairs, training topics '
         '(baseline) |\n|---|---|---|---|---|\n'
         f'| rm_copy_s{seed} | 16000 | {rm_acc[0]:.3f} | 0.650 | {rm_acc[1]:.3f} (0.640) |\n\n| best-of-n | alpha |\n')
  rl = {'name': f'rlhf_copy_16k_b0.02_s{seed}', 'steps': [0, 2, 4, 6], 'd': [0.0, 1.0, 2.0, 3.0],
        'gold': gold, 'proxy': [-1.0, 0.0, 1.0, 2.0], 'hacking_steps': [4, 6], 'fit': {'peaks_inside': True}}
  bon = {'name': 'bon_16k', 'd': [0.0, 1.0], 'gold': [0.5, gold[1]], 'proxy': [0.0, 1.0],
         'fit': {'peaks_inside': False, 'fit_peak_kl': 10.0 * (seed + 1)}}
  _write(folder / 'fits.json', json.dumps({'bon': [bon], 'rl': [rl]}))
  return folder


def test_copy_base_seeds_lines_seeds_up_by_name_and_averages(tmp_path):
  s0 = _report(tmp_path / 'copy_base_s0', 0, (0.880, 0.970), [0.8, 1.6, 1.4, 1.2])
  s1 = _report(tmp_path / 'copy_base_s1', 1, (0.900, 0.950), [0.9, 1.8, 1.7, 1.5])
  text = copy_base_seeds.table([copy_base_seeds.per_seed(s0), copy_base_seeds.per_seed(s1)], ['s0', 's1'])
  assert '| rm_copy | 0.890 (0.880, 0.900) | 0.960 (0.970, 0.950) |' in text
  assert '| bon_16k | 0.500 (0.500, 0.500) | 1.700 (1.600, 1.800) | 10, 20 | no, no |' in text
  # RL: best gold 1.6 and 1.8 at d = 1 (KL 1); end 1.2 and 1.5, so end - best -0.4 and -0.3
  assert ('| rlhf_copy_16k_b0.02 | 0.850 (0.800, 0.900) | 1.700 (1.600, 1.800) | 1.00 (1.00, 1.00) | yes, yes | '
          '4, 4 | 1.350 (1.200, 1.500) | -0.350 (-0.400, -0.300) | 2.00 (2.00, 2.00) | 9 (9, 9) |') in text


def test_copy_base_seeds_refuses_a_folder_without_a_report(tmp_path):
  with pytest.raises(ValueError, match='no reward-model rows'):
    copy_base_seeds.reward_models(_write(tmp_path / 'x' / 'table.md', '| a | b |\n|---|---|\n').parent)


def test_sft_recipe_tables_rebuild_from_the_committed_runs(tmp_path):
  """collect.sh given results/sft_recipe/runs, the copies it committed, rebuilds the tables from them."""
  recipe = Path(__file__).resolve().parents[1] / 'results' / 'sft_recipe'
  copy = tmp_path / 'results' / 'sft_recipe'
  shutil.copytree(recipe / 'runs', copy / 'runs')
  shutil.copy(recipe / 'collect.sh', copy)
  env = {**os.environ, 'PYTHONPATH': str(recipe.parents[1])}
  proc = subprocess.run(['bash', str(copy / 'collect.sh'), 'results/sft_recipe/runs'], capture_output=True, text=True,
                        env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr
  for table in ('table.md', 'bases/table.md'):
    assert (copy / table).read_text() == (recipe / table).read_text(), table
