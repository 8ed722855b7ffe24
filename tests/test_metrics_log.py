"""Where metrics go: metrics.jsonl and TensorBoard scalars, and what logging costs a run's start."""
import io
import json
import logging
import subprocess
import sys

import pytest

from conftest import ROOT, tensorboard_scalars


def test_starting_a_run_does_not_import_torch_and_torch_still_imports_after(python_env):
  """tensorboardX imports torch where it is installed (2.5 s at every start of a run here); the
  training loop must not pay for it, and a later `import torch` in the same process must work."""
  pytest.importorskip('torch')
  code = ('import sys, llm.train, llm.metrics_log; print("torch" in sys.modules); '
          'import torch; print(torch.ones(2).sum().item())')
  out = subprocess.run([sys.executable, '-c', code], env=python_env, cwd=ROOT, capture_output=True, text=True,
                       check=True).stdout.split()
  assert out == ['False', '2.0']


def test_metrics_go_to_jsonl_and_tensorboard_and_a_resume_forgets_later_steps(tmp_path):
  from llm import metrics_log
  log = metrics_log.MetricsLog(tmp_path, total_steps=3, start_step=0, progress_bar=False)
  for step in (1, 2, 3):
    log.write(step, {'loss': 1.0 / step, 'note': 'x'})
  log.close()
  assert tensorboard_scalars(tmp_path / 'tensorboard', 'loss') == [(1, 1.0), (2, 0.5), (3, 0.3333)]
  resumed = metrics_log.MetricsLog(tmp_path, total_steps=3, start_step=2, progress_bar=False)
  assert [json.loads(l)['step'] for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()] == [1, 2]
  resumed.write(3, {'loss': 0.25})  # step 3 rerun: TensorBoard shows it once, with its new value
  resumed.close()
  assert tensorboard_scalars(tmp_path / 'tensorboard', 'loss') == [(1, 1.0), (2, 0.5), (3, 0.25)]


class _Terminal(io.StringIO):
  def isatty(self):
    return True


@pytest.mark.parametrize('terminal', [False, True])
def test_the_progress_bar_is_drawn_on_a_terminal_and_a_log_file_gets_the_step_lines(
    tmp_path, monkeypatch, caplog, terminal):
  """progress_bar=True is the default: a run whose stderr goes to a file (the TPU launcher's nohup)
  must still log each step, not only the bar's \r frames."""
  from llm import metrics_log
  stderr = _Terminal() if terminal else io.StringIO()
  monkeypatch.setattr(sys, 'stderr', stderr)
  caplog.set_level(logging.INFO)
  log = metrics_log.MetricsLog(tmp_path, total_steps=2, start_step=0, progress_bar=True)
  log.advance(1)
  log.write(1, {'loss': 2.5})
  log.close()
  logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith('step ')]
  if terminal:
    assert logged == [] and '\r' in stderr.getvalue() and '1/2' in stderr.getvalue()
  else:
    assert logged == ['step 1 loss=2.5'] and stderr.getvalue() == ''


def test_a_restart_without_a_checkpoint_reruns_every_row_and_a_resume_keeps_the_start(tmp_path):
  from llm import metrics_log
  path = tmp_path / 'metrics.jsonl'
  rows = '{"step": 0, "val_loss": 5.0}\n{"step": 10, "loss": 4.0}\n{"step": 20, "loss": 3.0}\n'
  path.write_text(rows)
  metrics_log.MetricsLog(tmp_path, total_steps=30, start_step=10, progress_bar=False).close()
  assert path.read_text() == rows[:rows.index('{"step": 20')]  # the evaluation at the start stays
  metrics_log.MetricsLog(tmp_path, total_steps=30, start_step=0, progress_bar=False).close()
  assert path.read_text() == ''  # killed before its first checkpoint: step 0 on is logged again


def test_a_resume_drops_a_last_line_cut_short_by_a_kill_and_refuses_a_damaged_middle(tmp_path):
  from llm import metrics_log
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
  metrics_log.MetricsLog(tmp_path, total_steps=3, start_step=2, progress_bar=False).close()
  assert path.read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'
  assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ['metrics.jsonl']  # no temporary file left
  path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n{"step": 3, "loss": 1.0}\n')
  with pytest.raises(ValueError, match=r'metrics.jsonl:2 is not valid JSON and not the last line'):
    metrics_log.MetricsLog(tmp_path, total_steps=3, start_step=2, progress_bar=False)
  assert path.read_text().count('\n') == 3  # left as it was
