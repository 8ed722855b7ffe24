"""llm.inference without the data: a run read back with its parameters only, the sampler's traced
knobs, the kept KV cache, prompts fitted to the context, tool results cut once for both sides."""
import json
import logging
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, xla_flags
from llm import chat_template, checkpoint, cli, inference, tools
from llm.inference import sampling
from llm.tokenizer import train_tokenizer
from test_engine import Scripted, greedy_by_full_passes
from test_model import init, small_config


@pytest.fixture(scope='module')
def synthetic_tok(tmp_path_factory):
  """A small BPE tokenizer trained on made-up words: no data needed."""
  rng = random.Random(0)
  words = [''.join(rng.choice('abcdefghij') for _ in range(rng.randint(2, 7))) for _ in range(300)]
  text = '\n\n'.join(' '.join(rng.choice(words) for _ in range(40)) for _ in range(300))
  return train_tokenizer([text], 400, tmp_path_factory.mktemp('tok') / 'tokenizer.model', 10**6)


def _opt_bytes_and_save(setup, state, directory: Path, step: int) -> int:
  """Saves state as training does, with Adam moments of random values (fresh zeros would
  compress to nothing); returns their size in bytes."""
  moments = jax.tree.map(lambda x: jax.random.normal(jax.random.key(1), x.shape, x.dtype) if x.ndim else x,
                         state.opt_state)
  state = state.replace(opt_state=moments)
  ckpt = checkpoint.Checkpointer(directory, keep=2)
  ckpt.save(step, state, iter(grain.MapDataset.range(4).to_iter_dataset()))
  ckpt.wait()
  ckpt.close()
  return sum(x.nbytes for x in jax.tree.leaves(moments))


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory, synthetic_tok):
  """A run directory as llm.main leaves it: config.json, tokenizer.model, checkpoints/."""
  workdir = tmp_path_factory.mktemp('run')
  config = small_config('modern', max_seq_len=64)
  setup, state = init(config, vocab=synthetic_tok.vocab_size)
  (workdir / 'config.json').write_text(json.dumps(json.loads(config.to_json_best_effort())))
  shutil.copyfile(synthetic_tok.path, workdir / 'tokenizer.model')
  _opt_bytes_and_save(setup, state, workdir / 'checkpoints', 5)
  return workdir, setup, state


def _bytes_read() -> int:
  return int(dict(line.split(': ') for line in Path('/proc/self/io').read_text().splitlines())['rchar'])


@pytest.mark.skipif(not Path('/proc/self/io').exists(), reason='counts bytes read through /proc/self/io')
def test_parameters_load_without_reading_the_optimizer_state(tmp_path):
  setup, state = init(small_config('gpt2', num_layers=4, dim=128, mlp_dim=512), vocab=2048)
  opt_bytes = _opt_bytes_and_save(setup, state, tmp_path, 3)
  param_bytes = sum(x.nbytes for x in jax.tree.leaves(state.params))
  assert opt_bytes > 1.9 * param_bytes  # the Adam moments: what must not be read
  before = _bytes_read()
  params, step = inference.restore_params(tmp_path, setup.abstract_state.params)
  read = _bytes_read() - before
  assert step == 3
  jax.tree.map(np.testing.assert_array_equal, params, state.params)
  assert read < param_bytes + 0.25 * opt_bytes, (read, param_bytes, opt_bytes)


def test_a_run_loads_for_sampling_and_samples_like_its_training_model(run_dir):
  workdir, setup, state = run_dir
  run = inference.load(workdir)
  assert run.step == 5 and run.model_cfg == setup.model_cfg
  jax.tree.map(np.testing.assert_array_equal, run.params, state.params)
  prompt = [run.tokenizer.bos_id, 40, 41]
  out = run.engine().generate([prompt], max_new_tokens=5, temperature=0.0, stop_ids=[])[0].tokens
  with setup.context():
    assert out == greedy_by_full_passes(setup.model, state.params, prompt, 5)


def test_a_run_trained_on_more_devices_loads_on_this_hosts(run_dir, tmp_path):
  """A run trained with data x fsdp x tensor = 2 x 4 x 2 (16 devices) loads here, FSDP over the
  devices there are: the checkpoint reshards on restore."""
  workdir, _, state = run_dir
  moved = tmp_path / 'run'
  shutil.copytree(workdir, moved)
  config = json.loads((moved / 'config.json').read_text())
  config['mesh'].update(data=2, fsdp=4, tensor=2)
  (moved / 'config.json').write_text(json.dumps(config))
  run = inference.load(moved)
  assert run.mesh.size == jax.device_count()
  jax.tree.map(np.testing.assert_array_equal, run.params, state.params)


_LOAD_ON_SIX = '''
import sys
import jax, numpy as np
from llm import checkpoint, inference
run = inference.load(sys.argv[1])
saved = checkpoint.Checkpointer(f'{sys.argv[1]}/checkpoints', keep=2).restore_raw(run.step)['params']
jax.tree.map(np.testing.assert_array_equal, run.params, saved)
print(dict(run.mesh.shape))
'''


@pytest.mark.parametrize('mesh', [dict(data=1, fsdp=-1, tensor=1), dict(data=2, fsdp=4, tensor=2)])
def test_a_run_loads_on_six_devices_with_the_most_fsdp_its_parameters_split_into(run_dir, tmp_path, python_env, mesh):
  """model.dim=32 over fsdp=6 (the run's own fsdp=-1 here), or FSDP over all 6 devices (where the
  run's 16 do not fit): JAX cannot split 32 into 6, and restoring said the checkpoint was damaged.
  fsdp=2 divides 32 and 6; tensor=3 does not divide the 2 heads, so the other 3 devices take data."""
  moved = tmp_path / 'run'
  shutil.copytree(run_dir[0], moved)
  config = json.loads((moved / 'config.json').read_text())
  config['mesh'].update(mesh)
  (moved / 'config.json').write_text(json.dumps(config))
  out = subprocess.run([sys.executable, '-c', _LOAD_ON_SIX, str(moved)], env=dict(python_env, XLA_FLAGS=xla_flags(6)),
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().splitlines()[-1] == str({'data': 3, 'fsdp': 2, 'tensor': 1})


def _engine(tok, **kwargs):
  setup, state = init(small_config('modern', max_seq_len=96), vocab=tok.vocab_size)
  return inference.Engine(setup.model_cfg, state.params, tok, setup.mesh, rules=setup.rules, **kwargs)


def test_new_sampling_knobs_reuse_the_compiled_decode_loop(synthetic_tok):
  engine = _engine(synthetic_tok)
  prompts = [[2, 50, 51], [2, 60]]
  outs = [engine.generate(prompts, max_new_tokens=n, temperature=t, top_k=k, top_p=p, seed=[1, 2])
          for n, t, k, p in ((6, 1.0, 0, 1.0), (9, 0.5, 5, 1.0), (5, 1.7, 0, 0.8), (7, 0.0, 3, 0.5))]
  assert engine._decode._cache_size() == 1
  assert engine._prefill._cache_size() == 1
  assert [len(o[0].tokens) for o in outs] == [6, 9, 5, 7]


def test_a_kept_cache_gives_what_a_fresh_one_gives(synthetic_tok, monkeypatch):
  engine = _engine(synthetic_tok)
  allocations = []
  init_cache = engine.init_cache
  monkeypatch.setattr(engine, 'init_cache', lambda b: allocations.append(b) or init_cache(b))
  kw = dict(max_new_tokens=8, temperature=1.0, top_k=20, seed=[3, 4], stop_ids=[])
  engine.generate([[2] + list(range(10, 80)), [2] + list(range(20, 70))], **kw)  # fills the cache far
  again = engine.generate([[2, 50, 51], [2, 70]], **kw)
  fresh = _engine(synthetic_tok).generate([[2, 50, 51], [2, 70]], **kw)
  assert [c.tokens for c in again] == [c.tokens for c in fresh]
  assert allocations == [2]  # one cache for both calls
  engine.generate([[2, 50]], **dict(kw, seed=[3]))
  assert allocations == [2, 1]  # another batch size gets its own


def test_a_cache_of_a_batch_size_seen_before_allocates_without_compiling(synthetic_tok):
  engine = _engine(synthetic_tok)
  compiles = []

  def listener(name, _seconds, **_):
    if name == '/jax/core/compile/backend_compile_duration':
      compiles.append(name)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    with engine.context():
      engine.init_cache(3)
      assert len(compiles) == 1  # the listener sees compilations
      caches = [engine.init_cache(3), engine.init_cache(3)]
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert len(compiles) == 1
  assert all(c['k'][0].shape[0] == 3 and not c['k'][0].any() and not c['lengths'].any() for c in caches)


def test_draws_across_blocks_follow_the_softmax():
  """The two-level draw (a block of tokens, then a token inside it) over a vocabulary of three
  blocks and a ragged fourth, with zero-mass tokens scattered by top-k: never one of those, the
  others within 4 standard errors of the softmax over 40,000 draws."""
  V = 3 * sampling._BLOCK + 22
  logits_V = 2 * jax.random.normal(jax.random.key(3), (V,))
  n = 40_000
  keys = jax.random.split(jax.random.key(8), n)
  draw = jax.jit(jax.vmap(lambda k: sampling.sample_logits(k[None], logits_V[None], 1.0, 60, 1.0)[0]))
  counts = np.bincount(np.asarray(draw(keys)), minlength=V)
  want = np.asarray(jax.nn.softmax(_static_filter(logits_V[None], 60)[0]))
  assert (counts[want == 0] == 0).all() and (want == 0).sum() == V - 60
  np.testing.assert_array_less(np.abs(counts / n - want), 4 * np.sqrt(want * (1 - want) / n) + 1e-9)


def test_a_draw_at_the_very_top_takes_the_last_token_with_mass():
  """u = 1 asks for the token where the cumulative mass reaches the total: the last one with
  mass. Summed inside its block the mass may round a hair below the blocks' total; the draw must
  then still land on a token with mass, never on the zero-mass tokens after it."""
  rng = np.random.default_rng(0)
  B, V = 512, 2 * sampling._BLOCK
  mass_BxV = rng.uniform(0.01, 1.0, (B, V)).astype(np.float32)
  last_B = rng.integers(sampling._BLOCK, V - 1, B)  # the last token with mass, in the second block
  mass_BxV[np.arange(V)[None, :] > last_B[:, None]] = 0.0
  drawn_B = np.asarray(jax.jit(sampling._first_reaching)(jnp.asarray(mass_BxV), jnp.ones((B,), jnp.float32)))
  assert (mass_BxV[np.arange(B), drawn_B] > 0).all()
  assert (drawn_B >= sampling._BLOCK).all()  # the block where the mass ends


def _static_filter(logits_BxV, top_k=0, top_p=1.0):
  """The sampler's top-k / top-p filter before its knobs were traced (static Python values), kept
  as the reference."""
  if top_k:
    kth_Bx1 = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)
  if top_p < 1.0:
    sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
    cum_BxV = jnp.cumsum(jax.nn.softmax(sorted_BxV, axis=-1), axis=-1)
    keep_BxV = ((cum_BxV - jax.nn.softmax(sorted_BxV, axis=-1)) < top_p).at[:, 0].set(True)  # the top token stays
    cutoff_Bx1 = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
    logits_BxV = jnp.where(logits_BxV < cutoff_Bx1, -jnp.inf, logits_BxV)
  return logits_BxV


@pytest.mark.parametrize('temperature,top_k,top_p', [(1.0, 0, 1.0), (0.7, 3, 1.0), (1.3, 0, 0.6), (0.9, 4, 0.8),
                                                     (1.0, 1, 1.0)])
def test_draws_follow_the_filtered_softmax(temperature, top_k, top_p):
  """Frequencies over 40,000 draws (each its own key) against softmax(filtered logits / T): a
  token outside top-k / top-p is never drawn, the others within 4 standard errors."""
  logits_V = jnp.array([2.0, 1.5, 0.3, 0.0, -0.5, -1.0, 1.0, -2.0])
  n = 40_000
  keys = jax.random.split(jax.random.key(7), n)
  draw = jax.jit(jax.vmap(lambda k: sampling.sample_logits(k[None], logits_V[None], temperature, top_k, top_p)[0]))
  counts = np.bincount(np.asarray(draw(keys)), minlength=len(logits_V))
  want = np.asarray(jax.nn.softmax(_static_filter(logits_V[None] / temperature, top_k, top_p)[0]))
  assert (counts[want == 0] == 0).all() and (want == 0).any() == bool(top_k or top_p < 1.0)
  se = np.sqrt(want * (1 - want) / n)
  np.testing.assert_array_less(np.abs(counts / n - want), 4 * se + 1e-9)


@pytest.mark.parametrize('top_k,top_p', [(0, 1.0), (5, 1.0), (0, 0.6), (8, 0.8), (1, 1.0), (0, 0.0)])
def test_traced_filter_is_the_static_one(top_k, top_p):
  logits_BxV = 3 * jax.random.normal(jax.random.key(0), (64, 50))
  B = logits_BxV.shape[0]
  traced = jax.jit(sampling._filtered)(logits_BxV, jnp.full((B,), top_k), jnp.full((B,), top_p))
  np.testing.assert_array_equal(traced, _static_filter(logits_BxV, top_k, top_p))


@pytest.mark.parametrize('top_p,drawn', [(0.0, {2}), (1e-6, {2}), (0.4, {2}), (0.6, {1, 2}), (0.85, {1, 2, 3})])
def test_top_p_keeps_the_smallest_set_that_reaches_it_and_at_least_the_top_token(top_p, drawn):
  """Probabilities 0.05, 0.3, 0.5, 0.15: top_p 0 (or any mass the top token reaches alone) is greedy."""
  logits_V = jnp.log(jnp.array([0.05, 0.3, 0.5, 0.15]))
  keys = jax.random.split(jax.random.key(0), 2000)
  draw = jax.jit(jax.vmap(lambda k: sampling.sample_logits(k[None], logits_V[None], 1.0, 0, top_p)[0]))
  assert set(np.asarray(draw(keys)).tolist()) == drawn


def test_greedy_takes_the_first_of_tied_maxima_as_argmax_does():
  rng = np.random.default_rng(0)
  logits_BxV = rng.integers(0, 4, (64, 300)).astype(np.float32)  # many ties for the maximum
  logits_BxV[1] = -np.inf
  got = jax.jit(sampling._first_argmax)(jnp.asarray(logits_BxV))
  np.testing.assert_array_equal(got, np.argmax(logits_BxV, axis=-1))


def test_greedy_is_the_argmax_and_rows_draw_apart():
  logits_BxV = 3 * jax.random.normal(jax.random.key(0), (64, 50))
  keys_B = jax.random.split(jax.random.key(1), 64)
  greedy = jax.jit(sampling.sample_logits)(keys_B, logits_BxV, 0.0, 0, 1.0)
  np.testing.assert_array_equal(greedy, jnp.argmax(logits_BxV, axis=-1))
  assert len(set(jax.jit(sampling.sample_logits)(keys_B, logits_BxV, 1.0, 0, 1.0).tolist())) > 1


@pytest.mark.parametrize('used', [[1, 1, 1, 1, 1, 1], [0, 1, 1, 0, 1, 1], [1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0]])
def test_rows_left_out_do_not_change_the_used_rows_tokens(used):
  """A server's empty slots (used_B False) may hold any knobs: the used rows draw as they would
  in a batch of their own, greedy rows included, whichever of the sampler's branches runs."""
  logits_BxV = 3 * jax.random.normal(jax.random.key(0), (6, 50))
  keys_B = jax.random.split(jax.random.key(1), 6)
  temperature = np.array([0.0, 1.0, 0.8, 0.0, 1.2, 1.0], np.float32)
  used_B = np.array(used, bool)
  tokens = jax.jit(sampling.sample_logits)(keys_B, logits_BxV, temperature, 0, 1.0, jnp.asarray(used_B))
  rows = np.flatnonzero(used_B)
  alone = [int(sampling.sample_logits(keys_B[i:i + 1], logits_BxV[i:i + 1], float(temperature[i]), 0, 1.0)[0])
           for i in rows]
  assert np.asarray(tokens)[rows].tolist() == alone
  greedy = [i for i in rows if temperature[i] == 0]
  assert np.asarray(tokens)[greedy].tolist() == np.argmax(np.asarray(logits_BxV)[greedy], axis=-1).tolist()


def test_a_prompt_longer_than_the_context_keeps_bos_and_its_latest_tokens():
  ids = [1] + list(range(100, 190))  # 91 tokens
  assert inference.fit_prompt(ids, 64, 20) == ([1] + list(range(147, 190)), 20, 47)
  assert inference.fit_prompt(ids, 64, 200) == ([1] + list(range(159, 190)), 32, 59)  # room: half the context
  assert inference.fit_prompt(ids[:30], 64, 20) == (ids[:30], 20, 0)
  assert inference.fit_prompt(ids[:30], 64, 100) == (ids[:30], 34, 0)  # fits: the budget shrinks instead


def test_a_long_tool_result_is_cut_with_a_marker_the_same_for_engine_and_training(synthetic_tok):
  tok = synthetic_tok
  sp = tok.special_id
  long_result = ' '.join(['abc', 'defg', 'hij'] * 400)
  prompt = chat_template.render_prompt(tok, [{'role': 'user', 'content': 'abc'}])
  call = [sp('<|tool_call|>')] + tok.encode('echo: x') + [sp('<|/tool_call|>')]
  script = [0] * (len(prompt) - 1) + call + [7] * 300 + [sp('<|end|>')] + [tok.eos_id] * 10
  setup, _ = init(small_config('gpt2', max_seq_len=512), vocab=tok.vocab_size)
  engine = inference.Engine(setup.model_cfg, {}, tok, setup.mesh, tools={'echo': lambda args: long_result},
                            model=Scripted(tuple(script), tok.vocab_size))
  out = engine.generate([prompt], max_new_tokens=400, temperature=0.0)[0]
  fed = [t for t, f in zip(out.tokens, out.forced) if f]
  assert len(fed) == chat_template.MAX_TOOL_RESULT_TOKENS
  assert tok.decode(fed).endswith(tools.TRUNCATED.strip()) and fed[-1] == sp('<|/tool_result|>')
  trained, mask = chat_template.render(tok, [
      {'role': 'user', 'content': 'abc'},
      {'role': 'assistant', 'content': [{'type': 'tool_call', 'text': 'echo: x'},
                                        {'type': 'tool_result', 'text': long_result}]}])
  start = trained.index(sp('<|tool_result|>'))
  assert trained[start:start + len(fed)] == fed and not any(mask[start:start + len(fed)])


_CLI = [('llm.sample', ['--prompt=abc']), ('llm.chat', [])]
_ABSL_LOG_LINE = re.compile(r'[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ')  # I1207 04:24:10.24 1404 f.py:8] ...


@pytest.mark.parametrize('module,args', _CLI)
def test_cli_on_a_folder_that_is_not_a_run_says_so_in_one_line(module, args, tmp_path, python_env):
  out = subprocess.run([sys.executable, '-m', module, f'--workdir={tmp_path}', *args], env=python_env, cwd=ROOT,
                       capture_output=True, text=True, input='')
  assert out.returncode != 0 and 'Traceback' not in out.stderr
  assert out.stderr.strip().splitlines()[-1] == (f'{module}: {tmp_path / "config.json"} is missing: is {tmp_path} '
                                                 'a training run (python -m llm.main --workdir=...)?')


@pytest.mark.parametrize('module,args', _CLI)
def test_cli_on_a_run_without_its_tokenizer_says_so_in_one_line(module, args, run_dir, tmp_path, python_env):
  workdir = tmp_path / 'run'
  shutil.copytree(run_dir[0], workdir)
  (workdir / 'tokenizer.model').unlink()
  out = subprocess.run([sys.executable, '-m', module, f'--workdir={workdir}', *args], env=python_env, cwd=ROOT,
                       capture_output=True, text=True, input='')
  assert out.returncode != 0 and 'Traceback' not in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith(f'{module}: {workdir / "tokenizer.model"} is missing')


def test_sample_on_a_damaged_latest_checkpoint_says_so_in_one_line_and_the_fix_works(run_dir, tmp_path, python_env):
  """Array files deleted by hand from the newest step's folder: orbax ended in a traceback pages
  long; now one line names the folder and the step before it (of 5 and 6, the later), which loads
  once the folder is moved."""
  workdir = tmp_path / 'run'
  shutil.copytree(run_dir[0], workdir)
  checkpoints = workdir / 'checkpoints'
  for step in ('6', '7'):
    shutil.copytree(checkpoints / '5', checkpoints / step)
  for f in (checkpoints / '7' / 'state').glob('ocdbt.process_*/d/*'):
    f.unlink()
  out = subprocess.run([sys.executable, '-m', 'llm.sample', f'--workdir={workdir}', '--prompt=abc'], env=python_env,
                       cwd=ROOT, capture_output=True, text=True)
  # Nor the tracebacks of orbax's other reads, abandoned when one fails: closed as the process exits,
  # finishing after its event loop closed, or collected with their errors unread (asyncio logs
  # those). Besides absl's log lines, stderr is the one line.
  not_logged = [l for l in out.stderr.splitlines() if not _ABSL_LOG_LINE.match(l)]
  assert out.returncode != 0 and len(not_logged) == 1, out.stderr[-3000:]
  [line] = not_logged
  assert line.startswith(f'llm.sample: {checkpoints / "7"} is unreadable, damaged or incomplete ('), line
  assert line.endswith(f'; move it out of {checkpoints} to load the checkpoint before it, step 6'), line
  (checkpoints / '7').rename(tmp_path / 'step_7_damaged')
  assert inference.load(workdir).step == 6


def test_a_checkpoint_that_loads_leaves_unraisable_errors_and_asyncio_logs_reported(run_dir, monkeypatch):
  """The errors of reads abandoned after a failed one are dropped from the restore's start; once
  every read succeeded, nothing else is."""
  monkeypatch.setattr(sys, 'unraisablehook', sys.__unraisablehook__)
  asyncio_log = logging.getLogger('asyncio')
  monkeypatch.setattr(asyncio_log, 'filters', [])
  inference.load(run_dir[0])
  assert sys.unraisablehook is sys.__unraisablehook__ and asyncio_log.filters == []


def test_a_damaged_only_checkpoint_is_a_run_error_with_nothing_to_fall_back_to(run_dir, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(run_dir[0], workdir)
  for f in (workdir / 'checkpoints' / '5' / 'state').glob('ocdbt.process_*/d/*'):
    f.unlink()
  with pytest.raises(inference.RunError, match=r'checkpoints/5 is unreadable, damaged or incomplete \(.*\); it is the '
                                               'only checkpoint: copy it again from where the run trained'):
    inference.load(workdir)


def test_sample_keeps_the_end_of_a_prompt_longer_than_the_context(run_dir, tmp_path, python_env):
  workdir = run_dir[0]
  prompt = ' '.join(['abc', 'defg', 'hij'] * 60)
  out = subprocess.run([sys.executable, '-m', 'llm.sample', f'--workdir={workdir}', f'--prompt={prompt}',
                        '--max_new_tokens=10', '--temperature=0'], env=python_env, cwd=ROOT,
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  warning = [l for l in out.stderr.splitlines() if l.startswith('llm.sample: the prompt is')]
  assert len(warning) == 1 and 'context 64: keeping its last 53 (and bos)' in warning[0]
  assert '--max_new_tokens' not in out.stderr  # 10 new tokens fit: nothing was cut
  assert not out.stdout.startswith(prompt) and prompt[-40:] in out.stdout


def test_sample_prints_no_screen_of_library_logging(run_dir, python_env):
  """orbax logged some 25 INFO lines reading the checkpoint before the sample's first word (llm.main
  filtered them; llm.sample, llm.eval, llm.chat and llm.hf did not)."""
  out = subprocess.run([sys.executable, '-m', 'llm.sample', f'--workdir={run_dir[0]}', '--prompt=abc',
                        '--max_new_tokens=2', '--temperature=0'], env=python_env, cwd=ROOT, capture_output=True,
                       text=True)
  assert out.returncode == 0, out.stderr
  lines = out.stderr.splitlines()
  assert not [l for l in lines if l.startswith('I') and 'checkpoint' in l.lower()], out.stderr
  assert not [l for l in lines if 'read only' in l or 'read_only' in l], out.stderr  # opened so on purpose
  assert not [l for l in lines if "backend 'tpu'" in l], out.stderr  # no TPU here is no news


def test_library_warnings_pass_the_quiet_filter_and_their_info_does_not():
  import orbax.checkpoint
  record = lambda path, level, message: logging.LogRecord('x', level, path, 1, message, (), None)
  keep = cli._QuietLibraries().filter
  orbax_file = str(Path(orbax.checkpoint.__file__).parent / 'checkpoint_manager.py')
  assert keep(record(orbax_file, logging.WARNING, 'Checkpoint of step 3 has no metadata'))
  assert keep(record(orbax_file, logging.ERROR, 'Could not read step 3'))
  assert not keep(record(orbax_file, logging.INFO, 'Restoring checkpoint from step 3'))
  assert not keep(record(orbax_file, logging.WARNING, 'Given directory is read only=/runs/x/checkpoints'))
  xla_bridge = str(Path(jax.__file__).parent / '_src' / 'xla_bridge.py')
  assert not keep(record(xla_bridge, logging.INFO, "Unable to initialize backend 'tpu'"))
  assert keep(record(xla_bridge, logging.WARNING, 'An NVIDIA GPU may be present on this machine'))
  grain_file = str(Path(grain.__file__).parent / 'python' / 'experimental.py')
  assert not keep(record(grain_file, logging.INFO, 'Prefetching 4 elements'))
  assert keep(record('/repo/llm/train.py', logging.INFO, 'step 3'))  # the project's own lines stay


def test_a_checkout_in_a_folder_named_like_a_library_keeps_its_info_lines():
  """A checkout at ~/jax/llm logged no INFO at all, not even 'resuming from step': the filter took
  any path with a /jax/ folder for jax's own."""
  keep = cli._QuietLibraries().filter
  for library in ('jax', 'orbax', 'grain'):
    path = f'/x/{library}/llm/llm/train.py'
    assert keep(logging.LogRecord('x', logging.INFO, path, 1, 'resuming from step 3', (), None)), path


def test_sample_says_when_max_new_tokens_is_cut_to_the_context(run_dir, synthetic_tok, python_env):
  prompt_len = 1 + len(synthetic_tok.encode('abc'))  # bos
  out = subprocess.run([sys.executable, '-m', 'llm.sample', f'--workdir={run_dir[0]}', '--prompt=abc',
                        '--max_new_tokens=500', '--temperature=0'], env=python_env, cwd=ROOT, capture_output=True,
                       text=True)
  assert out.returncode == 0, out.stderr
  notices = [l for l in out.stderr.splitlines() if l.startswith('llm.sample: --max_new_tokens')]
  assert notices == [f'llm.sample: --max_new_tokens=500 is more than the 64-token context leaves after the '
                     f'{prompt_len}-token prompt: generating at most {64 - prompt_len}']


def test_chat_warns_but_goes_on_with_a_pretraining_run_and_not_with_an_sft_one(run_dir, tmp_path, python_env):
  warnings = {}
  for task in ('pretrain', 'sft'):
    workdir = tmp_path / task
    shutil.copytree(run_dir[0], workdir)
    config = json.loads((workdir / 'config.json').read_text())
    (workdir / 'config.json').write_text(json.dumps(dict(config, task=task)))
    out = subprocess.run([sys.executable, '-m', 'llm.chat', f'--workdir={workdir}'], env=python_env, cwd=ROOT,
                         capture_output=True, text=True, input='/quit\n')
    assert out.returncode == 0 and f'chatting with {workdir}' in out.stdout, out.stderr[-2000:]
    warnings[task] = [l for l in out.stderr.splitlines() if l.startswith('llm.chat: ')]
  pretrained = tmp_path / 'pretrain'
  assert warnings == {'pretrain': [f'llm.chat: {pretrained} is a pretraining run (config.task=pretrain), never trained '
                                   "on the chat template's turns: its replies may not follow them. Chat with an SFT "
                                   f'run of it (python -m llm.main --config=configs/sft_small.py --config.init_from='
                                   f'{pretrained} --workdir=...), or continue text with python -m llm.sample'],
                      'sft': []}


@pytest.mark.parametrize('module,flag', [('llm.sample', '--max_new_tokens=0'), ('llm.sample', '--temperature=-1'),
                                         ('llm.sample', '--top_p=2'), ('llm.sample', '--num_samples=0'),
                                         ('llm.sample', '--seed=-1'), ('llm.chat', '--max_new_tokens=-5'),
                                         ('llm.chat', '--seed=4294967296'), ('llm.eval', '--limit=-3'),
                                         ('llm.serve', '--port=99999')])
def test_a_knob_out_of_range_is_refused_before_the_run_loads(module, flag, run_dir, python_env):
  """--temperature=-1 sampled 'c c c c', --limit=-3 scored all but 3 items (or hung), a port past
  65535 served on another, a seed outside uint32 ended in an OverflowError traceback: now each is
  refused while the flags are read."""
  out = subprocess.run([sys.executable, '-m', module, f'--workdir={run_dir[0]}', flag], env=python_env, cwd=ROOT,
                       capture_output=True, text=True, input='')
  assert out.returncode != 0 and 'Traceback' not in out.stderr
  assert f'Flags parsing error: flag {flag}: ' in out.stderr, out.stderr[-1000:]


def test_the_largest_seed_wraps_for_the_next_sample_and_the_next_turn(run_dir, python_env):
  """--seed=2**32-1 passes the flag's bound; sample 1 and chat's turn 2 (seed + 1) must wrap to 0, not
  end the run with the engine's refusal of a seed outside uint32."""
  top = f'--seed={2**32 - 1}'
  runs = [('llm.sample', ['--prompt=abc', '--num_samples=2', '--max_new_tokens=3'], ''),
          ('llm.chat', ['--max_new_tokens=3'], 'hi\nhello\n/quit\n')]
  for module, flags, stdin in runs:
    out = subprocess.run([sys.executable, '-m', module, f'--workdir={run_dir[0]}', top, *flags], env=python_env,
                         cwd=ROOT, capture_output=True, text=True, input=stdin, timeout=300)
    assert out.returncode == 0 and 'outside [0, 2**32)' not in out.stderr, (module, out.stderr[-1000:])


def test_sample_draws_each_sample_with_its_own_seed_and_cuts_each_at_the_first_stop(run_dir, python_env):
  """--num_samples=2 of a fresh (near-uniform) model at temperature 1: sample i is drawn with seed + i,
  so the two differ; --stop then cuts each of the same samples at its first occurrence of the stop."""
  def samples(*flags):
    out = subprocess.run([sys.executable, '-m', 'llm.sample', f'--workdir={run_dir[0]}', '--prompt=abc',
                          '--num_samples=2', '--max_new_tokens=24', '--temperature=1', '--top_p=1', *flags],
                         env=python_env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-1000:]
    parts = out.stdout.split('--- sample ')[1:]
    assert [p.split('\n', 1)[0] for p in parts] == ['0', '1'], out.stdout
    return [p.split('\n', 1)[1].removesuffix('\n').removeprefix('abc') for p in parts]
  whole = samples()
  assert whole[0] != whole[1]
  stop = next(c for c in whole[0] if c.isalpha())  # a letter sample 0 writes
  assert samples(f'--stop={stop}') == [text.split(stop)[0] for text in whole]


def test_chat_draws_each_turn_with_a_new_seed(run_dir, python_env):
  """The same question twice (after /reset, so the same prompt) to a fresh model at temperature 1:
  the second turn samples with seed + 1, so the replies differ."""
  out = subprocess.run([sys.executable, '-m', 'llm.chat', f'--workdir={run_dir[0]}', '--temperature=1', '--top_p=1',
                        '--max_new_tokens=12'], env=python_env, cwd=ROOT, capture_output=True, text=True,
                       input='hi\n/reset\nhi\n/quit\n', timeout=300)
  assert out.returncode == 0, out.stderr[-1000:]
  replies = [part.split('\nyou> ')[0] for part in out.stdout.split('assistant> ')[1:]]
  assert len(replies) == 2 and replies[0] != replies[1], out.stdout


def test_an_evaluation_that_cannot_be_written_is_refused_before_it_runs(run_dir, tmp_path, python_env):
  workdir = tmp_path / 'run'
  shutil.copytree(run_dir[0], workdir)
  (workdir / 'eval').write_text('a file where the results folder goes')
  out = subprocess.run([sys.executable, '-m', 'llm.eval', f'--workdir={workdir}', '--suite=copying'], env=python_env,
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode != 0 and 'Traceback' not in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith(f'llm.eval: {workdir / "eval"} cannot be written')
  assert 'copy_' not in out.stdout  # refused before the evaluation, not after it


@pytest.mark.parametrize('module', ['llm.chat', 'llm.serve'])
def test_a_search_folder_that_is_not_there_is_refused_at_the_start(module, run_dir, python_env):
  out = subprocess.run([sys.executable, '-m', module, f'--workdir={run_dir[0]}', '--search_folder=/nope'],
                       env=python_env, cwd=ROOT, capture_output=True, text=True, input='', timeout=300)
  assert out.returncode != 0 and 'Traceback' not in out.stderr
  assert out.stderr.strip().splitlines()[-1] == f'{module}: --search_folder=/nope is not a folder; give a folder of .txt/.md files'


@pytest.fixture(scope='module')
def reward_model_dir(tmp_path_factory, synthetic_tok):
  """A task=reward_model run (head 'scalar') as llm.main leaves it, trained from runs/sft_small."""
  workdir = tmp_path_factory.mktemp('rm')
  config = small_config('modern', max_seq_len=64, head='scalar')
  config.task, config.init_from = 'reward_model', 'runs/sft_small'
  setup, state = init(config, vocab=synthetic_tok.vocab_size)
  (workdir / 'config.json').write_text(json.dumps(json.loads(config.to_json_best_effort())))
  shutil.copyfile(synthetic_tok.path, workdir / 'tokenizer.model')
  _opt_bytes_and_save(setup, state, workdir / 'checkpoints', 5)
  return workdir


@pytest.mark.parametrize('command', ['llm.sample --prompt=abc', 'llm.chat', 'llm.serve --port={port}',
                                     'llm.eval --suite=chat'])
def test_a_reward_model_is_refused_at_load_naming_the_policy_it_was_trained_from(reward_model_dir, python_env,
                                                                                  command):
  """serve started and answered every request with a 500 while /health said ok; sample and eval ended
  in the model's 'does not decode with a cache'; chat read the user's message first."""
  from test_serve import free_port  # not at the top: test_serve imports this module's fixtures
  module, *args = command.format(port=free_port()).split()
  out = subprocess.run([sys.executable, '-m', module, f'--workdir={reward_model_dir}', *args], env=python_env,
                       cwd=ROOT, capture_output=True, text=True, input='hello\n', timeout=300)
  assert out.returncode == 1 and 'Traceback' not in out.stderr, out.stderr
  assert out.stderr.strip().splitlines()[-1] == (
      f"{module}: {reward_model_dir} is a reward model (task=reward_model, model.head='scalar'): it scores sequences "
      'and does not generate; sample, chat with, serve, evaluate or export the policy it was trained from (its '
      'init_from: runs/sft_small)')
  assert 'you>' not in out.stdout


def test_a_reward_model_still_loads_as_one(reward_model_dir, synthetic_tok):
  from llm.rl import reward_model
  scorer = reward_model.load_proxy([str(reward_model_dir)], seq_len=32, batch=2)
  ids = synthetic_tok.encode('abc def')
  assert scorer.score([ids, ids + ids]).shape == (2,)


def test_an_evaluation_on_a_data_dir_without_the_runs_source_names_llm_evals_flag(run_dir, tmp_path, python_env):
  """It said 'fix --config.data.source=...', a flag llm.eval does not have."""
  empty = tmp_path / 'empty'
  empty.mkdir()
  out = subprocess.run([sys.executable, '-m', 'llm.eval', f'--workdir={run_dir[0]}', '--suite=bpb',
                        f'--data_dir={empty}'], env=python_env, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1 and 'Traceback' not in out.stderr, out.stderr
  assert out.stderr.strip().splitlines()[-1] == (
      f'llm.eval: data dir {empty} (--data_dir) holds no gutenberg_pd_books; set --data_dir to the folder that holds '
      'it (for llm.eval: --data_dir=DIR or $LLM_DATA_DIR)')
