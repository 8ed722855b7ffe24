"""The mesh's sizes from config.mesh: what a device count allows, and one line naming the fix when not."""
import re
from pathlib import Path

import pytest

from llm import sharding
from llm.config import base_config


def _sizes(**mesh):
  cfg = base_config().mesh
  cfg.update(mesh)
  return cfg


def test_the_mesh_flags_the_readme_gives_make_meshes():
  """Each `--config.mesh...` example of README.md, over the default config, on 8 devices."""
  readme = (Path(__file__).resolve().parents[1] / 'README.md').read_text()
  examples = re.findall(r'`((?:--config\.mesh\.\w+=-?\d+ ?)+)`', readme)
  assert len(examples) >= 2, examples
  for example in examples:
    mesh = {k: int(v) for k, v in re.findall(r'--config\.mesh\.(\w+)=(-?\d+)', example)}
    sharding.mesh_shape(_sizes(**mesh), 8)  # raises where the flags make no mesh


@pytest.mark.parametrize('mesh, message', [
    # The default mesh.data=-1 is the other -1: the fix names both flags.
    (dict(fsdp=-1), 'mesh.data=-1 and mesh.fsdp=-1: at most one axis may be -1 (the devices the others leave); '
                    'to shard over every device with FSDP, set --config.mesh.data=1 --config.mesh.fsdp=-1'),
    # Divided by zero before.
    (dict(fsdp=0), 'mesh.fsdp=0: a mesh size is at least 1, or -1 for the devices the other axes leave'),
    # Their product, 8, is the device count: JAX failed on the negative sizes.
    (dict(data=-2, fsdp=-4), 'mesh.data=-2: a mesh size is at least 1, or -1'),
    (dict(tensor=-8, data=1), 'mesh.tensor=-8: a mesh size is at least 1, or -1'),
    (dict(fsdp=3), "mesh sizes {'data': -1, 'fsdp': 3, 'tensor': 1} do not divide the 8 devices: choose sizes whose "
                   'product divides 8'),
])
def test_sizes_a_mesh_cannot_have_are_named_with_the_fix(mesh, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    sharding.mesh_shape(_sizes(**mesh), 8)
