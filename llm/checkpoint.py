"""One orbax CheckpointManager holding the train state and the data iterator's position,
so a resumed run continues with exactly the next batch, and the run's wall time so far."""
from pathlib import Path

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:

  def __init__(self, directory: Path, keep: int):
    self._manager = ocp.CheckpointManager(
        Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=True),
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'data': grain.checkpoint.CheckpointHandler(),
                       'run': ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, data_iter, wall_s: float = 0.0):
    """Asynchronous: returns once the arrays are copied off the devices. wall_s: the run's wall
    time until now, over all its sessions."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iter),
        run=ocp.args.JsonSave({'wall_s': wall_s})))

  def restore(self, step: int, abstract_state, data_iter):
    """Restores the state into abstract_state's shapes and shardings, and data_iter in place."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
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

  def saved_param_shapes(self, step: int) -> dict[str, tuple]:
    """{parameter path: shape} of the checkpoint at step, read from its metadata (no arrays)."""
    params = self._manager.item_metadata(step)['state']['params']
    return {jax.tree_util.keystr(path): tuple(m.shape) for path, m in jax.tree_util.tree_leaves_with_path(params)}

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()


def abstract_like(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
