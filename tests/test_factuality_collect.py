"""results/factuality/collect.py: the table and exposure plot of run.sh's runs, on hand-made
evaluations and labels."""
import json

import pytest

from results.factuality import collect

# The training people's facts were seen 0, 1 or 4 times; the interrogation knows those seen at all.
LABELS = [{'exposure': k, 'known': k > 0} for k in (0, 1, 4) for _ in range(2)]


def by_exposure(*exposures: int) -> dict:
  """An evaluation whose held-out people have facts of these exposures only."""
  return {'honesty_acc': 0.5} | {f'honesty_{m}_exposure_{k}': 0.5 for m in ('acc', 'abstain') for k in exposures}


def test_exposures_are_those_every_evaluation_reports():
  # a small world: one base's held-out people have no fact seen 4 times, the other's do
  results = {'sft_answers_short': [by_exposure(0, 1, 4), by_exposure(0, 1)],
             'sft_honesty_short': [by_exposure(0, 1, 4), by_exposure(0, 1, 4)]}
  assert collect.shared_exposures(LABELS, results) == ([0, 1], [4])
  everywhere = {'sft_answers_short': [by_exposure(0, 1, 4)]}
  assert collect.shared_exposures(LABELS, everywhere) == ([0, 1, 4], [])


def test_plot_of_a_small_world_leaves_out_what_held_out_people_lack_and_says_so(tmp_path, capsys):
  runs = tmp_path / 'runs'
  (runs / 'world').mkdir(parents=True)
  (runs / 'world' / 'labels.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in LABELS))
  for name in ('sft_answers_short', 'sft_honesty_short'):
    (runs / name / 'eval').mkdir(parents=True)
    (runs / name / 'eval' / 'honesty.json').write_text(json.dumps(by_exposure(0, 1)))
  collect.main([f'--out={tmp_path / "out"}', str(runs)])
  assert (tmp_path / 'out' / 'exposure.png').stat().st_size > 0
  assert '| accuracy, all questions | 50.0% | 50.0% |' in (tmp_path / 'out' / 'table.md').read_text()
  assert 'exposure.png leaves out exposure 4:' in capsys.readouterr().err


def test_a_folder_without_its_labels_ends_in_one_line_naming_the_file_and_its_command(tmp_path):
  runs = tmp_path / 'runs'
  (runs / 'sft_answers_short' / 'eval').mkdir(parents=True)
  (runs / 'sft_answers_short' / 'eval' / 'honesty.json').write_text(json.dumps(by_exposure(0, 1)))
  with pytest.raises(SystemExit) as error:
    collect.main([f'--out={tmp_path / "out"}', str(runs)])
  message = str(error.value.code)
  assert '\n' not in message
  assert str(runs / 'world' / 'labels.jsonl') in message and 'python -m llm.honesty.interrogate' in message
  assert not (tmp_path / 'out' / 'table.md').exists()  # nothing written before the check
