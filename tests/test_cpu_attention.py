"""The compiled CPU attention kernel against the reference attention, its fallback, and the
measurement that decides whether `auto` takes it."""
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import xla_flags
from llm import attention as attention_lib
from llm.attention import reference
from llm.kernels import cpu_attention

needs_compiler = pytest.mark.skipif(cpu_attention._compiler() is None, reason='no C++ compiler here')


@needs_compiler
@pytest.mark.parametrize('B,T,H,K,Dh,q_block', [
    (2, 64, 4, 4, 64, 64),    # the benchmark's head width, one block
    (2, 130, 4, 2, 64, 64),   # GQA, a last block of 2 rows
    (1, 100, 6, 1, 48, 32),   # one key/value head; 48 = 32 + a 16-column remainder
    (3, 37, 2, 2, 16, 8),     # head width below one register tile
    (1, 300, 4, 2, 128, 64),  # a wide head, five blocks
])
def test_kernel_matches_masked_attention_and_its_gradients(B, T, H, K, Dh, q_block):
  assert cpu_attention.available()
  rng = np.random.default_rng(0)
  q, k, v, dout = (jnp.asarray(rng.standard_normal((B, T, n, Dh)), jnp.float32) for n in (H, K, K, H))
  got, vjp_got = jax.vjp(lambda q, k, v: cpu_attention.causal_attention(q, k, v, q_block), q, k, v)
  want, vjp_want = jax.vjp(lambda q, k, v: reference.masked_attention(q, k, v, reference.causal_mask(B, T)),
                           q, k, v)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for g, w in zip(vjp_got(dout), vjp_want(dout), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@needs_compiler
def test_a_fresh_process_can_call_the_kernel_directly(python_env):
  """causal_attention builds and registers the kernel itself; available() need not come first."""
  code = ('import jax.numpy as jnp; from llm.kernels import cpu_attention; '
          'x = jnp.ones((1, 8, 2, 16)); print(float(cpu_attention.causal_attention(x, x, x).sum()))')
  proc = subprocess.run([sys.executable, '-c', code], env=python_env, capture_output=True, text=True,
                        check=True)
  assert float(proc.stdout.split()[-1]) == 8 * 2 * 16  # v = 1 everywhere: every output is 1


def test_without_a_compiler_the_model_keeps_the_xla_path(monkeypatch, caplog):
  monkeypatch.setenv('CXX', '/nonexistent/c++')
  monkeypatch.setattr(shutil, 'which', lambda name: None)
  assert cpu_attention._library.__wrapped__() is None  # uncached: the process's kernel stays
  assert 'using the XLA path' in caplog.text


def test_auto_takes_the_kernel_only_where_it_was_measured_faster(monkeypatch, tmp_path):
  """The timing is kept on disk: a host where the kernel lost keeps the XLA path, one where it
  won takes the kernel, and neither times again."""
  if not cpu_attention.available():
    pytest.skip('no C++ compiler here')
  monkeypatch.setenv('LLM_CACHE_DIR', str(tmp_path))
  (tmp_path / 'kernels').mkdir()
  q_shape, k_shape = (2, 32, 4, 16), (2, 32, 2, 16)
  timed = []
  monkeypatch.setattr(cpu_attention, '_time_both', lambda *shape: timed.append(shape) or (1.0, 2.0))
  for kernel_ms, xla_ms, want in ((3.0, 2.0, 'xla'), (1.0, 2.0, 'cpu_kernel')):
    (tmp_path / 'kernels' / 'choices.json').write_text(json.dumps({cpu_attention.choice_key('causal', (2, 32, 4, 2, 16)): [kernel_ms, xla_ms]}))
    cpu_attention.faster_than_xla.cache_clear()
    assert attention_lib.select('auto', q_shape, k_shape, jnp.float32) == want
  assert not timed
  cpu_attention.faster_than_xla.cache_clear()
  assert attention_lib.select('auto', (2, 48, 4, 16), (2, 48, 2, 16), jnp.float32) == 'cpu_kernel'
  assert timed == [(2, 48, 4, 2, 16)]  # a new shape is timed once, and kept
  assert cpu_attention.choice_key('causal', (2, 48, 4, 2, 16)) in json.loads((tmp_path / 'kernels' / 'choices.json').read_text())
  cpu_attention.faster_than_xla.cache_clear()


@needs_compiler
def test_the_timing_runs_eagerly_while_the_model_is_traced(monkeypatch, tmp_path):
  """faster_than_xla is called during tracing; its timing must run, not be staged into the trace."""
  monkeypatch.setenv('LLM_CACHE_DIR', str(tmp_path))
  cpu_attention.faster_than_xla.cache_clear()
  x = jnp.ones((1, 16, 2, 8))
  jax.jit(lambda x: attention_lib.causal_attention(x, x, x, 'auto'))(x)
  (choice,) = json.loads((tmp_path / 'kernels' / 'choices.json').read_text()).values()
  assert all(ms > 0 for ms in choice)
  cpu_attention.faster_than_xla.cache_clear()


_SHARDED_STEP = '''
import json, jax, numpy as np
from llm import losses, sharding, train
from llm.config import base_config
out = {}
for mesh, kv_heads in [((1, 1, 1), 'tensor'), ((2, 2, 2), 'tensor'), ((1, 8, 1), 'tensor'), ((1, 1, 2), None)]:
  c = base_config()
  c.mesh.rules.kv_heads = kv_heads  # None: query heads split over tensor, key/value heads whole
  c.model.update(dict(num_layers=2, num_heads=4, num_kv_heads=2, dim=32, mlp_dim=64, max_seq_len=16,
                      position='rope', norm='rmsnorm', mlp='swiglu'))
  c.model.attention = 'cpu_kernel'  # not 'auto': the choice must not depend on a timing here
  c.train.update(dict(seq_len=16, batch_size=8, steps=10, warmup_steps=2))
  c.mesh.update(dict(zip(('data', 'fsdp', 'tensor'), mesh)))
  setup = train.build(c, 64, sharding.make_mesh(c.mesh, jax.devices()[:int(np.prod(mesh))]))
  with setup.context():
    state = setup.init(jax.random.key(0))
    batch = {k: np.random.default_rng(0).integers(0, 64, (8, 16)).astype(np.int32) for k in ('inputs', 'targets')}
    step = jax.jit(train.make_train_step(setup.model, setup.tx, setup.lr_fn, losses.lm_loss, 1))
    hlo = step.lower(state, batch).as_text()
    _, m = step(state, batch)
  out[f'{mesh} kv_heads={kv_heads}'] = dict(loss=float(m['loss']), grad_norm=float(m['grad_norm']),
                        kernel='llm_causal_attention_bwd' in hlo)
print(json.dumps(out))
'''


@needs_compiler
def test_the_kernel_runs_per_shard_on_a_mesh_and_matches_one_device(python_env):
  """On 8 fake devices, data x fsdp x tensor = 2x2x2 and fsdp = 8 give one device's step. Query
  heads split over tensor with the key/value heads whole: a shard's local head would be paired
  with the wrong key/value head, so the XLA path runs, and the step is still one device's."""
  env = dict(python_env, XLA_FLAGS=xla_flags(8))
  proc = subprocess.run([sys.executable, '-c', _SHARDED_STEP], env=env, capture_output=True, text=True,
                        check=True)
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  one = out.pop('(1, 1, 1) kv_heads=tensor')
  for mesh, got in out.items():
    assert got['kernel'] == ('None' not in mesh) and one['kernel'], mesh
    assert got['loss'] == pytest.approx(one['loss'], rel=1e-5), mesh
    assert got['grad_norm'] == pytest.approx(one['grad_norm'], rel=1e-5), mesh


@needs_compiler
def test_attention_benchmark_times_the_kernel_and_the_xla_path():
  from llm import bench_attention, hostinfo
  result = bench_attention.run(batch=1, seq=64, heads=2, head_dim=16)
  assert result['xla']['tokens_per_s'] > 0 and result['cpu_kernel']['tokens_per_s'] > 0
  assert result['host'] == hostinfo.describe()  # the JSON says where it was measured


@needs_compiler
def test_a_build_that_fails_with_a_compiler_present_is_not_called_a_missing_compiler(python_env, tmp_path):
  code = ('import jax.numpy as jnp\nfrom llm import attention\n'
          "attention.select('cpu_kernel', (1, 16, 2, 8), (1, 16, 2, 8), jnp.float32)")
  env = dict(python_env, LLM_CPU_MARCH='notanarch', LLM_CACHE_DIR=str(tmp_path))
  proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
  assert proc.returncode != 0
  error = proc.stderr.strip().splitlines()[-1]
  assert 'did not build' in error and 'missing' not in error, error


@needs_compiler
def test_a_kept_timing_is_kept_per_core_count_and_xla_flags(monkeypatch):
  from llm import hostinfo
  shape = (2, 32, 4, 2, 16)
  key = cpu_attention.choice_key('causal', shape)
  monkeypatch.setenv('XLA_FLAGS', os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_max_isa=AVX2')
  avx2 = cpu_attention.choice_key('causal', shape)
  monkeypatch.setattr(hostinfo, 'cores', lambda: hostinfo.os.cpu_count() + 7)
  assert len({key, avx2, cpu_attention.choice_key('causal', shape)}) == 3


@pytest.mark.parametrize('kept', ['[]', '{"key": "fast"}'])
def test_a_choices_file_of_the_wrong_shape_is_named_with_its_remedy(monkeypatch, tmp_path, kept):
  """Valid JSON that is not timings by key: a TypeError traceback, or an unnamed unpacking error."""
  monkeypatch.setenv('LLM_CACHE_DIR', str(tmp_path))
  monkeypatch.setattr(cpu_attention, 'choice_key', lambda kernel, shape: 'key')  # no kernel built for the test
  path = tmp_path / 'kernels' / 'choices.json'
  path.parent.mkdir()
  path.write_text(kept)
  with pytest.raises(ValueError, match=rf'^{re.escape(str(path))} is not a table of kept attention timings .*; '
                                       'delete it: the next run times the kernels again$'):
    cpu_attention._decide('causal', (1, 8, 2, 2, 16), lambda *shape: (1.0, 2.0))
