"""Sample from a trained model: python -m llm.sample --workdir=DIR --prompt="Once upon a time"

Plain decoding: every new token re-runs the model over the (windowed) sequence so far.
"""
import sys

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory.', required=True)
_PROMPT = flags.DEFINE_string('prompt', '', 'Text to continue.')
_PROMPT_FILE = flags.DEFINE_string('prompt_file', None, 'Read the prompt from this file instead.')
_MAX_NEW = flags.DEFINE_integer('max_new_tokens', 200, 'Tokens to generate per sample.')
_TEMPERATURE = flags.DEFINE_float('temperature', 0.8, '0 = greedy.')
_TOP_K = flags.DEFINE_integer('top_k', 0, 'Keep the k most likely tokens (0 = all).')
_TOP_P = flags.DEFINE_float('top_p', 0.95, 'Nucleus sampling mass (1.0 = off).')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
_NUM = flags.DEFINE_integer('num_samples', 1, 'Independent samples of the same prompt.')


def generate(setup, params, prompt_ids: list[int], max_new: int, num_samples: int, seed: int,
             temperature: float, top_k: int, top_p: float, stop_id: int | None = None) -> list[list[int]]:
  """Samples num_samples continuations; the window slides once the sequence outgrows the model."""
  from llm import sampling
  window = setup.model_cfg.max_seq_len

  @jax.jit
  def next_token(params, buf_BxW, last_B, rng):
    logits_BxWxV = setup.model.apply({'params': params}, buf_BxW)
    logits_BxV = jnp.take_along_axis(logits_BxWxV, last_B[:, None, None], axis=1)[:, 0]
    return sampling.sample_logits(rng, logits_BxV, temperature, top_k, top_p)

  seqs = [list(prompt_ids) for _ in range(num_samples)]
  done = [False] * num_samples
  rng = jax.random.key(seed)
  with setup.context():
    for _ in range(max_new):
      ctx = [s[-window:] for s in seqs]
      buf = np.zeros((num_samples, window), np.int32)
      for i, c in enumerate(ctx):
        buf[i, :len(c)] = c
      rng, sub = jax.random.split(rng)
      new = np.asarray(next_token(params, buf, np.array([len(c) - 1 for c in ctx]), sub))
      for i in range(num_samples):
        if not done[i]:
          seqs[i].append(int(new[i]))
          done[i] = stop_id is not None and int(new[i]) == stop_id
      if all(done):
        break
  return [s[len(prompt_ids):] for s in seqs]


def main(argv):
  del argv
  from llm import run_dir
  prompt = open(_PROMPT_FILE.value).read() if _PROMPT_FILE.value else _PROMPT.value
  config, tok, setup, params = run_dir.load(_WORKDIR.value)
  prompt_ids = [tok.bos_id] + tok.encode(prompt)
  outs = generate(setup, params, prompt_ids, _MAX_NEW.value, _NUM.value, _SEED.value,
                  _TEMPERATURE.value, _TOP_K.value, _TOP_P.value, stop_id=tok.bos_id)
  for i, ids in enumerate(outs):
    if _NUM.value > 1:
      print(f'--- sample {i}')
    sys.stdout.write(prompt + tok.decode([t for t in ids if t != tok.bos_id]) + '\n')


if __name__ == '__main__':
  app.run(main)
