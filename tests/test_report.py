"""The report card from tiny runs: the summary across stages, per-stage pages, curves, errors."""
import json
import logging
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from llm import report

HOST = {'cpu': 'Test CPU', 'cores': 2, 'isa': 'AVX2', 'devices': 1, 'device_kind': 'cpu', 'platform': 'cpu',
        'jax': '0'}


def make_run(path, task, summary, evals, metrics):
  path.mkdir(parents=True)
  (path / 'config.json').write_text(json.dumps({'task': task, 'model': {'dim': 64}, 'train': {'steps': 3},
                                                'data': {'source': 'books'}}))
  (path / 'summary.json').write_text(json.dumps(summary))
  (path / 'metrics.jsonl').write_text(''.join(json.dumps(m) + '\n' for m in metrics))
  (path / 'eval').mkdir()
  for suite, results in evals.items():
    (path / 'eval' / f'{suite}.json').write_text(json.dumps(results))
  return path


def test_report_has_one_column_per_stage_and_each_stage_page(tmp_path):
  losses = [{'step': s, 'loss': 5.0 - s} for s in (1, 2, 3)] + [{'step': 3, 'val_loss': 2.5}]
  base = make_run(tmp_path / 'base', 'pretrain', {'params': 4_200_000, 'wall_s': 60.0, 'val_bpb': 1.8},
                  {'base': {'step': 3, 'hellaswag_acc': 0.26, 'eval_wall_s': 30.0}}, losses)
  sft = make_run(tmp_path / 'sft', 'sft', {'params': 4_200_000, 'wall_s': 120.0},
                 {'chat': {'step': 3, 'arith_acc_tool': 0.95, 'eval_wall_s': 30.0},
                  'base': {'step': 3, 'hellaswag_acc': 0.25}}, losses)
  rl = make_run(tmp_path / 'rl', 'grpo', {'params': 4_200_000, 'wall_s': 60.0},
                {'rl': {'step': 3, 'heldout_pass_at_1': 0.8}},
                [{'step': s, 'loss': 0.1, 'reward_mean': 0.5 + s / 10} for s in (1, 2, 3)])
  path = report.write([base, sft, rl], tmp_path / 'out', HOST)
  text = path.read_text()
  assert '| metric | BASE | SFT | RL |' in text
  assert '| params | 4,200,000 | 4,200,000 | 4,200,000 |' in text
  assert '| hellaswag_acc | 0.26 | 0.25 | - |' in text
  assert '| arith_acc_tool | - | 0.95 | - |' in text
  assert '| heldout_pass_at_1 | - | - | 0.8 |' in text
  assert 'eval_wall_s |' not in text.split('## BASE')[0]  # a suite's time is not a metric of the model
  assert 'Wall time of the stages and their evaluations: 5.0 min' in text  # 240 s of training + 60 s of evals
  assert 'Test CPU (2 cores, AVX2)' in text and 'git ' in text
  for stage in ('base', 'sft', 'rl'):
    assert (tmp_path / 'out' / f'{stage}_curves.png').stat().st_size > 1000
    assert f'![{stage.upper()} curves]({stage}_curves.png)' in text
  assert text.index('## BASE') < text.index('## SFT') < text.index('## RL')


def test_the_summary_table_shows_every_summary_number_to_four_significant_digits(tmp_path):
  """summary.json's numbers in SUMMARY_KEYS' order: floats to 4 significant digits (3.4567 -> 3.457),
  whole numbers of 1000 and more with thousands separators."""
  summary = {'params': 4_200_000, 'tokens_seen': 1_048_576, 'steps': 256, 'wall_s': 61.25, 'val_loss': 3.4567,
             'val_bpb': 1.2346}
  base = make_run(tmp_path / 'base', 'pretrain', summary, {}, [])
  table = report.write([base], tmp_path / 'out', HOST).read_text().split('## Summary')[1].split('## BASE')[0]
  assert [line for line in table.splitlines() if line.startswith('| ')] == [
      '| metric | BASE |', '| params | 4,200,000 |', '| tokens_seen | 1,048,576 |', '| steps | 256 |',
      '| wall_s | 61.25 |', '| val_loss | 3.457 |', '| val_bpb | 1.235 |']


def test_a_suite_evaluated_with_limit_is_marked_not_shown_as_the_full_evaluation(tmp_path):
  evals = {'base': {'step': 3, 'limit': 8, 'hellaswag_acc': 0.5},
           'chat': {'step': 3, 'limit': 0, 'well_formed_rate': 0.75}}
  base = make_run(tmp_path / 'base', 'pretrain', {'params': 10}, evals, [])
  text = report.write([base], tmp_path / 'out', HOST).read_text()
  summary, page = text.split('## BASE')
  assert '| hellaswag_acc | 0.5 (limit 8) |' in summary and '| well_formed_rate | 0.75 |' in summary
  assert 'Evaluation `base` (limit 8) (checkpoint step 3):' in page and 'Evaluation `chat` (checkpoint step 3):' in page
  assert '| limit |' not in text


def test_a_number_two_suites_give_is_shown_from_the_one_that_scored_the_most(tmp_path):
  """bpb_val from base (whole), bpb (limit 2) and a third suite (limit 20): the whole one's; without
  it, the limit 20 one's, whichever suite sorts last."""
  evals = {'base': {'step': 3, 'bpb_val': 2.902}, 'bpb': {'step': 3, 'limit': 2, 'bpb_val': 4.685},
           'other': {'step': 3, 'limit': 20, 'bpb_val': 3.1}}
  for name, shown in (('whole', '| bpb_val | 2.902 |'), ('limited', '| bpb_val | 3.1 (limit 20) |')):
    run_evals = evals if name == 'whole' else {k: v for k, v in evals.items() if k != 'base'}
    run = make_run(tmp_path / name, 'pretrain', {'params': 10}, run_evals, [])
    summary = report.write([run], tmp_path / f'out_{name}', HOST).read_text().split('## BASE')[0]
    assert shown in summary.splitlines(), summary


def test_report_cli_runs_as_arguments_and_refuses_a_missing_run(tmp_path, python_env):
  make_run(tmp_path / 'base', 'pretrain', {'params': 10}, {}, [{'step': 1, 'loss': 3.0}])
  make_run(tmp_path / 'base2', 'pretrain', {'params': 20}, {}, [{'step': 1, 'loss': 3.0}])
  cmd = [sys.executable, '-m', 'llm.report', f'--out={tmp_path / "out"}']
  ok = subprocess.run(cmd + [f'--runs={tmp_path / "base"}', str(tmp_path / 'base2')], env=python_env, cwd=ROOT,
                      capture_output=True, text=True)
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert '| metric | BASE (base) | BASE (base2) |' in (tmp_path / 'out' / 'report.md').read_text()
  assert (tmp_path / 'out' / 'base_base_curves.png').exists() and (tmp_path / 'out' / 'base_base2_curves.png').exists()
  bad = subprocess.run(cmd + [f'--runs={tmp_path / "nope"}'], env=python_env, cwd=ROOT, capture_output=True, text=True)
  assert bad.returncode != 0 and 'Traceback' not in bad.stderr
  assert 'holds no config.json' in bad.stderr.strip().splitlines()[-1]
  bad = subprocess.run(cmd + [f'--runs={tmp_path / "base"}', '--seeds=foo', '--seed_keys=params'], env=python_env,
                       cwd=ROOT, capture_output=True, text=True)
  assert bad.stderr.strip().splitlines()[-1].startswith("llm.report: --seeds='foo': write NAME=RUN")
  (tmp_path / 'a_file').write_text('')
  bad = subprocess.run(cmd[:-1] + [f'--out={tmp_path / "a_file" / "out"}', f'--runs={tmp_path / "base"}'],
                       env=python_env, cwd=ROOT, capture_output=True, text=True)
  assert 'Traceback' not in bad.stderr and 'a_file/out cannot be written' in bad.stderr.strip().splitlines()[-1]


def test_report_adds_the_mean_over_seeds_of_each_group(tmp_path):
  runs = [make_run(tmp_path / f'sft{i}', 'sft', {'wall_s': 1.0}, {'chat': {'arith_acc_tool': acc}}, [])
          for i, acc in enumerate([0.90, 0.96, 0.93])]
  text = report.write(runs[:1], tmp_path / 'out', HOST, {'SFT': runs}, ['arith_acc_tool']).read_text()
  over_seeds = text.split('## Over seeds')[1]
  assert '| SFT | 3 | 93.0 ± 3.0 [90.0, 96.0] |' in over_seeds  # sample std of 90, 96, 93 by hand
  assert f'| SFT | {runs[1]} | 96.0 |' in over_seeds


def test_a_json_file_that_is_not_json_is_named(tmp_path):
  base = make_run(tmp_path / 'base', 'pretrain', {'params': 10}, {'base': {'step': 3, 'hellaswag_acc': 0.5}}, [])
  (base / 'eval' / 'base.json').write_text('{"step": 3,\n')  # cut short
  path, workdir = re.escape(str(base / 'eval' / 'base.json')), re.escape(str(base))
  named = rf'{path} is not valid JSON .*python -m llm.eval --workdir={workdir} --suite=base'
  with pytest.raises(ValueError, match=named):
    report.write([base], tmp_path / 'out', HOST)
  (base / 'eval' / 'base.json').unlink()
  (base / 'summary.json').write_text('')
  with pytest.raises(ValueError, match=re.escape(f'{base / "summary.json"} is not valid JSON')):
    report.write([base], tmp_path / 'out', HOST)


def test_a_metrics_log_whose_last_line_a_full_disk_cut_is_read_without_it_and_a_damaged_middle_is_refused(
    tmp_path, caplog):
  """A full disk (or a kill) cuts metrics.jsonl's last line short: the report refused the whole run."""
  base = make_run(tmp_path / 'base', 'pretrain', {'params': 10}, {}, [{'step': 1, 'loss': 3.0}, {'step': 2, 'loss': 2.5}])
  metrics = base / 'metrics.jsonl'
  with metrics.open('a') as f:
    f.write('{"step": 3, "lo')
  with caplog.at_level(logging.WARNING):
    assert report.read_run(base)['metrics'] == [{'step': 1, 'loss': 3.0}, {'step': 2, 'loss': 2.5}]
  assert f'{metrics}: skipping its last line, cut short by a kill or a full disk' in caplog.text
  metrics.write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "lo\n{"step": 3, "loss": 2.0}\n')
  with pytest.raises(ValueError, match=re.escape(f'{metrics}:2 is not valid JSON and not the last line')):
    report.read_run(base)


def test_a_seed_group_that_cannot_be_read_stops_the_report_before_any_file_is_written(tmp_path):
  base = make_run(tmp_path / 'base', 'pretrain', {'params': 10}, {}, [{'step': 1, 'loss': 3.0}])
  seeds = [make_run(tmp_path / f'sft{i}', 'sft', {'wall_s': 1.0}, {'chat': {'arith_acc_tool': 0.9}}, [])
           for i in range(2)]
  (seeds[1] / 'eval' / 'chat.json').write_text('{}')  # not evaluated: the key is missing
  with pytest.raises(ValueError, match=re.escape(f"'arith_acc_tool' is not a number in {seeds[1]}")):
    report.write([base], tmp_path / 'out', HOST, {'SFT': seeds}, ['arith_acc_tool'])
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('value, shown', [(1000.0, '1,000'), (999.0, '999'), (12345, '12,345'), (0.123456, '0.1235'),
                                          (None, '-'), (True, 'True')])
def test_numbers_of_the_summary_table_by_hand(value, shown):
  """Whole numbers from 1000 on get thousands separators, other numbers 4 significant digits."""
  assert report.fmt(value) == shown
