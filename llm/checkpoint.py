"""One orbax CheckpointManager holding the train state and the data iterator's position,
so a resumed run continues with exactly the next batch, and the run's wall time so far."""
import asyncio
import contextlib
import inspect
import logging
import os
import re
import sys
import traceback
from pathlib import Path

import grain
import jax
import orbax.checkpoint as ocp

from llm import files


class Checkpointer:

  def __init__(self, directory: Path, keep: int):
    self._directory = Path(directory).absolute()
    self._manager = ocp.CheckpointManager(
        self._directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=True),
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'data': grain.checkpoint.CheckpointHandler(),
                       'run': ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, data_iter, wall_s: float = 0.0):
    """Asynchronous: returns once the arrays are copied off the devices, and the save before
    finished, or raised its error here. wall_s: the run's wall time until now, over all its sessions."""
    # From the first save on: orbax writes in threads of its own, which log a write that fails (a
    # full disk) and the writes they abandon with it, pages of tracebacks, before the failure
    # reaches a save or wait here. Each is added once, however many saves call this.
    _drop_errors_of_abandoned_reads()
    logging.getLogger('absl').addFilter(_not_orbax_logging_a_full_disk)
    with self._full_disk_named():
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iter),
          run=ocp.args.JsonSave({'wall_s': wall_s})))

  def restore(self, step: int, abstract_state, data_iter):
    """Restores the state into abstract_state's shapes and shardings, and data_iter in place."""
    restored = restore(self._manager, step, ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(data_iter)))
    return restored['state']

  def wall_s(self, step: int) -> float:
    """The run's wall time saved with the checkpoint of step; 0 for a checkpoint written before
    it was kept (its sessions' time is unknown)."""
    if 'run' not in self._manager.item_metadata(step):
      return 0.0
    return self._manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore()))['run']['wall_s']

  def restore_raw(self, step: int) -> dict:
    """The saved train state as a plain tree of arrays on this process's first device, without
    knowing its structure first, whatever devices and processes saved it."""
    saved = self._manager.item_metadata(step)['state']
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved)
    return self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))['state']

  def saved_paths(self, step: int, part: str) -> list[tuple]:
    """tree_paths of a part of the train state saved at step ('opt_state'), from its metadata (no arrays)."""
    return tree_paths(self._manager.item_metadata(step)['state'][part])

  def saved_param_shapes(self, step: int) -> dict[str, tuple]:
    """{parameter path: shape} of the checkpoint at step, read from its metadata (no arrays)."""
    params = self._manager.item_metadata(step)['state']['params']
    return {jax.tree_util.keystr(path): tuple(m.shape) for path, m in jax.tree_util.tree_leaves_with_path(params)}

  def wait(self):
    with self._full_disk_named():
      self._manager.wait_until_finished()

  def close(self):
    with self._full_disk_named():
      self._manager.close()

  @contextlib.contextmanager
  def _full_disk_named(self):
    """A save that finds the disk full fails at the next save or wait with orbax's ValueError, 425
    characters of TensorStore detail: raised as an OSError naming the checkpoint instead, which
    llm.main ends in one line saying to free space and rerun."""
    try:
      yield
    except Exception as e:
      code = _no_space_errno(e)
      if code is None:
        raise
      step = re.search(rf'{re.escape(str(self._directory))}/(\d+)', str(e))
      raise OSError(code, os.strerror(code), str(self._directory / step[1] if step else self._directory)) from e


def _no_space_errno(error: BaseException) -> int | None:
  """ENOSPC or EDQUOT where error, or one it came from, is a full disk's (an OSError, or
  TensorStore's error: '... No space left on device [os_error_code='28']'); None for any other."""
  while error is not None:
    code = error.errno if isinstance(error, OSError) else next(
        (int(c) for c in re.findall(r"\[os_error_code='(\d+)'\]", str(error))), None)
    if code in files.NO_SPACE:
      return code
    error = error.__cause__ or error.__context__
  return None


def _not_orbax_logging_a_full_disk(record: logging.LogRecord) -> bool:
  """False for orbax's logs of a save that failed for want of space: three tracebacks of its
  threads, 330 lines, before Checkpointer raises the error in one line at the next save or wait."""
  return not (record.exc_info and record.pathname.startswith(_ORBAX)
              and _no_space_errno(record.exc_info[1]) is not None)


def tree_paths(tree) -> list[tuple]:
  """Each leaf's path in tree as a tuple of its dict keys, attribute names and indices: the same for a
  train state and for orbax's metadata of it, which holds the state's named tuples as dicts."""
  return [tuple(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))) for k in path)
          for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


class Unreadable(ValueError):
  """A checkpoint orbax could not read (files missing, cut or corrupt); the message names its
  folder and the checkpoint to fall back to."""


def restore(manager: ocp.CheckpointManager, step: int, args):
  """manager.restore(step, args), where a damaged checkpoint ends in one Unreadable line instead of
  orbax's pages of TensorStore specs. The errors of the reads orbax abandons when one fails are
  dropped from the start (some come before the failure reaches here) and, once it failed, for good."""
  undo = _drop_errors_of_abandoned_reads()
  try:
    restored = manager.restore(step, args=args)
  except Exception as e:  # orbax raises bare Exceptions for missing or cut files, tensorstore's error inside
    if _raised_by_jax(e):  # placing the arrays failed, not reading them: no advice to move a good checkpoint out
      raise
    raise Unreadable(_unreadable(Path(manager.directory), step, manager.all_steps(), e)) from e
  undo()  # every read succeeded: none was abandoned
  return restored


def _raised_by_jax(error: Exception) -> bool:
  """Whether JAX raised error, or the one it came from: laying the arrays out on the devices failed
  (a sharding that does not divide them, memory running out), not reading the files."""
  while error is not None:
    if type(error).__module__.partition('.')[0] in ('jax', 'jaxlib'):
      return True
    error = error.__cause__
  return False


def _unreadable(checkpoints: Path, step: int, steps, error: Exception) -> str:
  """The one line: the folder, the innermost error (orbax's own only names the slice it was
  reading) and the checkpoint to fall back to."""
  while error.__cause__ is not None:
    error = error.__cause__
  reason = str(error).splitlines()[0].split(' [tensorstore_spec')[0][:300] if str(error) else type(error).__name__
  earlier = [s for s in steps if s < step]
  fix = (f'move it out of {checkpoints} to load the checkpoint before it, step {max(earlier)}' if earlier
         else 'it is the only checkpoint: copy it again from where the run trained, or train the run again')
  return f'{checkpoints / str(step)} is unreadable, damaged or incomplete ({reason}); {fix}'


def _drop_errors_of_abandoned_reads():
  """Once one read fails, orbax abandons its other reads, and each can print pages around our one
  line, often as the process exits (as do the writes it abandons when a save fails). Its coroutine
  catches BaseException around its await and raises an Exception in its place, so the GeneratorExit
  that closes it when it is collected becomes an 'Exception ignored in' traceback. Its TensorStore
  read, finishing after orbax's event loop closed, hands its result to that loop from TensorStore's
  own thread: 'Event loop is closed'. And its future or task, collected with its error never read,
  is logged by asyncio.
  Drop exactly those; every other unraisable error still reaches the previous hook, every other
  asyncio record its handlers. Returns what undoes it (nothing where they were dropped already)."""
  previous = sys.unraisablehook
  if getattr(previous, 'drops_errors_of_abandoned_reads', False):
    return lambda: None

  def hook(unraisable):
    if not (_closed_abandoned_read(unraisable) or _result_for_a_closed_loop(unraisable)):
      previous(unraisable)

  def undo():
    if sys.unraisablehook is hook:  # not replaced since
      sys.unraisablehook = previous
    asyncio_log.removeFilter(_not_an_unread_error_of_a_read)

  hook.drops_errors_of_abandoned_reads = True
  sys.unraisablehook = hook
  asyncio_log = logging.getLogger('asyncio')
  asyncio_log.addFilter(_not_an_unread_error_of_a_read)
  return undo


def _closed_abandoned_read(unraisable) -> bool:
  """A coroutine whose close raised an error caused by its GeneratorExit."""
  return (inspect.iscoroutine(unraisable.object) and isinstance(unraisable.exc_value, Exception)
          and isinstance(unraisable.exc_value.__cause__, GeneratorExit))


def _result_for_a_closed_loop(unraisable) -> bool:
  """A closed event loop refusing a result handed to it by native code (no Python frame calls
  call_soon_threadsafe: TensorStore's thread does)."""
  return (unraisable.object is None and isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == 'Event loop is closed' and unraisable.exc_traceback is not None
          and unraisable.exc_traceback.tb_frame.f_code is asyncio.BaseEventLoop.call_soon_threadsafe.__code__)


def _not_an_unread_error_of_a_read(record: logging.LogRecord) -> bool:
  """False for asyncio's log of an abandoned read's future or task, collected with its error never
  read: an error TensorStore's thread set (no Python frame raised it) or one raised in orbax."""
  if not (record.exc_info and str(record.msg).partition('\n')[0].endswith(' exception was never retrieved')):
    return True  # asyncio names the class: Future, _GatheringFuture, Task
  error = record.exc_info[1]
  return not (error.__traceback__ is None or any(
      frame.filename.startswith(_ORBAX) for frame in traceback.extract_tb(error.__traceback__)))


_ORBAX = str(Path(ocp.__file__).parent)


def saved_steps(directory: Path) -> list[int]:
  """The steps of the checkpoints in directory, none where it does not exist, read without opening
  it (orbax names a checkpoint's folder by its step only once its save is complete)."""
  return sorted(int(p.name) for p in Path(directory).glob('*') if p.name.isdigit())


def abstract_like(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
