"""The mesh's sizes from config.mesh: what a device count allows, and one line naming the fix when not;
where the default rules place each parameter on a mesh with every axis."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llm import sharding
from llm.config import base_config
from conftest import ROOT, xla_flags


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


_PLACED = """
import json, jax
from llm import sharding, train
from llm.config import base_config
from llm.interop import params as params_lib
config = base_config()
config.model.update(num_layers=2, num_heads=2, num_kv_heads=2, dim=32, mlp_dim=64, max_seq_len=16, mlp='swiglu',
                    position='rope', norm='rmsnorm', tied_embeddings=False)
config.mesh.update(data=2, fsdp=2, tensor=2)
setup = train.build(config, 64, sharding.make_mesh(config.mesh))
with setup.context():
  params = setup.init(jax.random.key(0)).params
print(json.dumps({params_lib.path_str(path): [list(x.sharding.spec) + [None] * (x.ndim - len(x.sharding.spec)),
                                              sorted({tuple(s.data.shape) for s in x.addressable_shards})]
                  for path, x in jax.tree_util.tree_leaves_with_path(params)}))
"""


def test_the_default_rules_split_heads_and_the_mlp_over_tensor_and_embed_over_fsdp(python_env):
  """8 fake devices as data x fsdp x tensor = 2 x 2 x 2, D = 32, F = 64, 2 heads of 16, V = 64: the
  MLP's hidden axis and the attention heads (query, key, value, out) split over tensor, the model
  axis over fsdp, the vocabulary over tensor; norms whole."""
  res = subprocess.run([sys.executable, '-c', _PLACED], capture_output=True, text=True, cwd=ROOT,
                       env=dict(python_env, XLA_FLAGS=xla_flags(8)))
  assert res.returncode == 0, res.stderr[-2000:]
  placed = json.loads(res.stdout.strip().splitlines()[-1])
  stacked_d_h = [[None, 'fsdp', 'tensor', None], [[2, 16, 1, 16]]]  # [layers, D, H, Dh]
  assert placed == {
      'embed/embedding': [['tensor', 'fsdp'], [[32, 16]]],  # [V, D]
      'lm_head': [['fsdp', 'tensor'], [[16, 32]]],  # [D, V]
      'layers/mlp/up': [[None, 'fsdp', 'tensor'], [[2, 16, 32]]],  # [layers, D, F]
      'layers/mlp/gate': [[None, 'fsdp', 'tensor'], [[2, 16, 32]]],
      'layers/mlp/down': [[None, 'tensor', 'fsdp'], [[2, 32, 16]]],  # [layers, F, D]
      'layers/attn/query': stacked_d_h, 'layers/attn/key': stacked_d_h, 'layers/attn/value': stacked_d_h,
      'layers/attn/out': [[None, 'tensor', None, 'fsdp'], [[2, 1, 16, 16]]],  # [layers, H, Dh, D]
      'layers/attn_norm/scale': [[None, None], [[2, 32]]], 'layers/mlp_norm/scale': [[None, None], [[2, 32]]],
      'final_norm/scale': [[None], [[32]]]}
