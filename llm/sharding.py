"""The device mesh (data, fsdp, tensor), logical-axis rules, and multi-host set-up."""
import contextlib
import os

from absl import logging
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')
# The global batch is split over every data-parallel axis.
BATCH_AXES = ('data', 'fsdp')


def maybe_initialize_distributed(enabled: bool):
  """Joins a multi-process job when asked (flag) or when the environment says so.

  Environment: JAX_COORDINATOR_ADDRESS (host:port of process 0) starts it; JAX_NUM_PROCESSES
  and JAX_PROCESS_ID give this process's place. JAX itself reads only the coordinator address
  and finds the other two on clusters it knows (Cloud TPU VMs, SLURM, Open MPI, Kubernetes);
  elsewhere, e.g. several processes on one machine, set all three.
  """
  if not (enabled or os.environ.get('JAX_COORDINATOR_ADDRESS')):
    return
  num_processes, process_id = (os.environ.get(k) for k in ('JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'))
  jax.distributed.initialize(num_processes=int(num_processes) if num_processes else None,
                             process_id=int(process_id) if process_id else None)
  logging.info('process %d of %d, %d local / %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


@contextlib.contextmanager
def process_zero_first(name: str):
  """Process 0 runs the block before every other process does: what it writes to a shared disk
  (the tokenizer, token caches) the others then read instead of racing to build it too."""
  if jax.process_count() == 1:
    yield
    return
  if jax.process_index() != 0:
    multihost_utils.sync_global_devices(name)
  try:
    yield
  finally:  # on an error too, so the others go on to meet it themselves rather than hang
    if jax.process_index() == 0:
      multihost_utils.sync_global_devices(name)


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, ...]:
  """Sizes of (data, fsdp, tensor); one of them may be -1, meaning 'all remaining devices'."""
  sizes = {a: int(mesh_cfg[a]) for a in MESH_AXES}
  for axis, size in sizes.items():
    if size < 1 and size != -1:
      raise ValueError(f'mesh.{axis}={size}: a mesh size is at least 1, or -1 for the devices the other axes leave')
  rest = [a for a in MESH_AXES if sizes[a] == -1]
  if len(rest) > 1:  # the default mesh.data=-1 is one of them
    raise ValueError(f'{" and ".join(f"mesh.{a}=-1" for a in rest)}: at most one axis may be -1 (the devices the '
                     'others leave); to shard over every device with FSDP, set --config.mesh.data=1 '
                     '--config.mesh.fsdp=-1')
  known = int(np.prod([s for s in sizes.values() if s != -1]))
  if rest:
    if num_devices % known:
      raise ValueError(f'mesh sizes {sizes} do not divide the {num_devices} devices: choose sizes whose product '
                       f'divides {num_devices}')
    sizes[rest[0]] = num_devices // known
  total = int(np.prod(list(sizes.values())))
  if total != num_devices:
    raise ValueError(f'mesh sizes {sizes} multiply to {total}, '
                     f'but there are {num_devices} devices; set --config.mesh.<axis>=-1 on one axis')
  return tuple(sizes.values())


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
  devices = devices if devices is not None else jax.devices()
  shape = mesh_shape(mesh_cfg, len(devices))
  # Auto axes: sharding follows the logical rules (GSPMD); JAX 0.10 defaults to Explicit.
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def logical_rules(rules_cfg) -> tuple[tuple[str, object], ...]:
  """Config rules {logical: mesh axis | [mesh axes] | None} as the tuple flax expects."""
  return tuple((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in rules_cfg.items())


def logical_to_sharding(logical_tree, mesh, rules):
  """Tree of logical PartitionSpecs (or boxed params) -> tree of NamedShardings."""
  return nn.logical_to_mesh_sharding(nn.get_partition_spec(logical_tree), mesh, rules)


def split_dims(abstract_tree) -> list[tuple]:
  """(key path, dimension, its size, mesh axes) of each dimension that the NamedShardings of
  abstract_tree's ShapeDtypeStructs split over mesh axes: those the logical rules name, whatever
  the axes' sizes."""
  return [(path, dim, x.shape[dim], (axes,) if isinstance(axes, str) else tuple(axes))
          for path, x in jax.tree_util.tree_leaves_with_path(abstract_tree)
          for dim, axes in enumerate(x.sharding.spec) if axes is not None]


def parts(sizes, axes: tuple) -> int:
  """Into how many pieces mesh axes of these sizes ({axis: size}, or a mesh's .shape) cut a dimension."""
  return int(np.prod([sizes[a] for a in axes]))


def unevenly_split(dims: list[tuple], sizes) -> list[tuple]:
  """Those of split_dims' dims that mesh axes of these sizes do not split evenly: JAX lays out no
  such array, and says so only at init or restore, naming shapes."""
  return [d for d in dims if d[2] % parts(sizes, d[3])]


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def kv_cache_sharding(mesh, batch: int, kv_heads: int, ndim: int = 4) -> NamedSharding:
  """A layer's decode cache, k [batch, kv_heads, head_dim, seq] or v [batch, kv_heads, seq,
  head_dim] (or a smeared-key model's previous key [batch, kv_heads, head_dim], ndim 3): rows
  over the data axes and heads over 'tensor', each only where it divides evenly (a batch of 1
  stays whole)."""
  data = parts(mesh.shape, BATCH_AXES)
  rows = BATCH_AXES if batch % data == 0 else None
  heads = 'tensor' if kv_heads % mesh.shape['tensor'] == 0 else None
  return NamedSharding(mesh, P(rows, heads, *[None] * (ndim - 2)))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict, mesh) -> dict:
  """Host-local numpy rows (this process's slice) -> global jax.Arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


@contextlib.contextmanager
def mesh_context(mesh, rules):
  """Tracing the model needs both the mesh and the logical rules in scope."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield
