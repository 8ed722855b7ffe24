"""Where metrics go: DIR/metrics.jsonl, TensorBoard event files, the console."""
import json
import math
from pathlib import Path
import sys
import time

from absl import logging
import jax
import tqdm

from llm import files
from llm.data import sources


def _import_tensorboardx():
  """tensorboardX without torch: its writer imports torch, where installed, only to accept torch
  tensors (2.5 s at every start of a run; we log floats). A later `import torch` is unaffected."""
  hide_torch = 'torch' not in sys.modules
  if hide_torch:
    sys.modules['torch'] = None  # makes `import torch` raise ImportError, which tensorboardX expects
  try:
    import tensorboardX
  finally:
    if hide_torch:
      del sys.modules['torch']
  return tensorboardX


tensorboardX = _import_tensorboardx()
event_pb2 = tensorboardX.proto.event_pb2


class MetricsLog:
  """Writes from process 0 only; every process may call it."""

  def __init__(self, workdir: Path, total_steps: int, start_step: int, progress_bar: bool):
    self._active = jax.process_index() == 0
    self._path = Path(workdir) / 'metrics.jsonl'
    if not self._active:
      return
    drop_lines_after(self._path, start_step)
    self._file = self._path.open('a')
    # Events written here, in this thread: tensorboardX's SummaryWriter queues them to a thread of
    # its own that flushes every 2 minutes, so no flush() of ours could put them all on disk
    # before a checkpoint. The file's name ends in the start step: a resume within the same second
    # as the start would otherwise get the same name and overwrite it.
    self._tb_dir = Path(workdir) / 'tensorboard'
    self._tb_dir.mkdir(exist_ok=True)
    self._tb = tensorboardX.event_file_writer.EventsWriter(str(self._tb_dir / 'events'),
                                                           filename_suffix=f'.{start_step}')
    # A resumed run reruns the steps after its checkpoint (every step, from 0, when there was none):
    # a session START at the first of them makes TensorBoard hide their events from before.
    self._tb.write_event(event_pb2.Event(wall_time=time.time(), step=start_step + 1 if start_step else 0,
                                         session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    # The bar only where stderr is a terminal: in a log file (a launcher's nohup, a job scheduler's)
    # it leaves \r-separated frames in place of the per-step lines.
    self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit='step', dynamic_ncols=True,
                          disable=not (progress_bar and sys.stderr.isatty()))

  def write(self, step: int, metrics: dict):
    if not self._active:
      return
    row = {'step': step, **{k: _plain(v) for k, v in metrics.items()}}
    with files.naming(self._path):  # a full disk: the line it ends in names the file
      self._file.write(json.dumps(row) + '\n')
      self._file.flush()
    for k, v in row.items():
      if k != 'step' and isinstance(v, (int, float)):
        self._tb.write_event(event_pb2.Event(wall_time=time.time(), step=step,
                                             summary=tensorboardX.summary.scalar(k, v)))
    shown = ' '.join(f'{k}={_short(v)}' for k, v in row.items() if k != 'step')
    if self._bar.disable:
      logging.info('step %d %s', step, shown)
    else:
      self._bar.set_postfix_str(shown, refresh=False)

  def flush(self):
    """Everything written so far onto the disk: called before a checkpoint is saved, since a run
    resumed from it keeps what was logged up to it (metrics.jsonl is flushed at every row)."""
    if self._active:
      with files.naming(self._tb_dir):
        self._tb.flush()

  def advance(self, step: int):
    if self._active:
      self._bar.update(step - self._bar.n)

  def close(self):
    if self._active:
      self._bar.close()
      self._tb.close()
      self._file.close()


def _plain(v):
  v = v.item() if hasattr(v, 'item') else v
  return v if not isinstance(v, float) or math.isfinite(v) else str(v)


def _short(v):
  return f'{v:.4g}' if isinstance(v, float) else str(v)


def drop_lines_after(path: Path, step: int):
  """On resume, forget the rows of a JSONL log (metrics.jsonl, a task's own) logged after the
  checkpoint we resume from, `step`: those steps rerun (all of them from step 0, the evaluation at
  the start included, when there was no checkpoint). A last line cut short by a kill or a full disk
  is dropped too; the file is replaced whole, never half written."""
  if not path.exists():
    return
  kept = [row for row in sources.read_jsonl(path, last_line_may_be_cut=True)
          if step and row['step'] <= step]  # from step 0 every row reruns
  files.write_atomically(path, ''.join(json.dumps(row) + '\n' for row in kept))
