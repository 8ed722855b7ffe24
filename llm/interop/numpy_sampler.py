"""A language model in two files: this script (numpy only) and the float16 parameters beside it,
written by `python -m llm.hf export --format=two_files`. It decodes greedily, as llama2.c's run.c
does in C, with a KV cache:

    python run.py model.f16 --ids=2,318,1110 --steps=32

prints the new token ids on one line and their text on the next. The prompt is given as token
ids (the run's tokenizer makes them: `python -m llm.hf encode --workdir=RUN --prompt=...`).
model.f16: 8 bytes (little-endian header length), a JSON header (model config, tensor names and
shapes in order, bos/eos ids, each token's bytes in hex), then every tensor in float16, C order.
"""
import argparse
import json

import numpy as np


def load(path):
  with open(path, 'rb') as f:
    size = int.from_bytes(f.read(8), 'little')
    if size > f.seek(0, 2) - 8:  # not a header length: another kind of file
      raise ValueError(f'{path}: the header runs past the end of the file')
    f.seek(8)
    header = json.loads(f.read(size))
  data = np.memmap(path, np.float16, 'r', offset=8 + size)
  params, at = {}, 0
  for name, shape in header['tensors']:
    count = int(np.prod(shape))
    params[name] = np.asarray(data[at:at + count], np.float32).reshape(shape)
    at += count
  return header, params


def norm(x, p, name, cfg):
  if cfg['norm'] == 'layernorm':
    x = x - x.mean(-1, keepdims=True)
  y = x / np.sqrt(np.square(x).mean(-1, keepdims=True) + cfg['norm_eps']) * p[name + '/scale']
  return y + p[name + '/bias'] if name + '/bias' in p else y


def dense(x, p, name, contract=1):
  """x's last `contract` dims times the weight's first ones, plus the bias if there is one."""
  w = p[name]
  k = int(np.prod(w.shape[:contract]))
  y = x.reshape(*x.shape[:x.ndim - contract], k) @ w.reshape(k, -1)
  y = y + p[name + '_bias'].reshape(-1) if name + '_bias' in p else y
  return y.reshape(*x.shape[:x.ndim - contract], *w.shape[contract:])


def rope(x_TxNxDh, positions_T, theta):
  half = x_TxNxDh.shape[-1] // 2
  angle_Tx1xH = (positions_T[:, None] * theta ** (-np.arange(half) / half))[:, None, :]
  x1, x2 = x_TxNxDh[..., :half], x_TxNxDh[..., half:]
  sin, cos = np.sin(angle_Tx1xH), np.cos(angle_Tx1xH)
  return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(np.float32)


def gelu(x):  # tanh approximation
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
  return x / (1 + np.exp(-x))


def forward(tokens_T, start, cache, p, cfg):
  """Logits [T, V] of tokens at positions start.., appending their keys and values to cache."""
  positions_T = np.arange(start, start + len(tokens_T))
  x_TxD = p['embed/embedding'][tokens_T]
  if cfg['position'] == 'learned':
    x_TxD = x_TxD + p['pos_embed'][positions_T]
  for i, layer_cache in enumerate(cache):
    l = f'layer_{i}/'
    h_TxD = norm(x_TxD, p, l + 'attn_norm', cfg)
    q_TxHxDh, k_TxKxDh, v_TxKxDh = (dense(h_TxD, p, l + 'attn/' + n) for n in ('query', 'key', 'value'))
    if cfg['qk_norm']:
      q_TxHxDh = norm(q_TxHxDh, p, l + 'attn/query_norm', dict(cfg, norm='rmsnorm'))
      k_TxKxDh = norm(k_TxKxDh, p, l + 'attn/key_norm', dict(cfg, norm='rmsnorm'))
    if cfg.get('smear_keys'):  # each key mixed with the one before it, by a gate per key head
      gate_Kx1 = 1 / (1 + np.exp(-p[l + 'attn/key_smear']))[:, None]
      before_1xKxDh = layer_cache.get('k_raw_last', np.zeros_like(k_TxKxDh[:1]))
      layer_cache['k_raw_last'] = k_TxKxDh[-1:]
      k_TxKxDh = gate_Kx1 * k_TxKxDh + (1 - gate_Kx1) * np.concatenate([before_1xKxDh, k_TxKxDh[:-1]])
    if cfg['position'] == 'rope':
      q_TxHxDh, k_TxKxDh = (rope(z, positions_T, cfg['rope_theta']) for z in (q_TxHxDh, k_TxKxDh))
    layer_cache['k'] = np.concatenate([layer_cache['k'], k_TxKxDh]) if 'k' in layer_cache else k_TxKxDh
    layer_cache['v'] = np.concatenate([layer_cache['v'], v_TxKxDh]) if 'v' in layer_cache else v_TxKxDh
    H, Dh = q_TxHxDh.shape[1:]
    group = H // layer_cache['k'].shape[1]  # query heads per key/value head
    k_SxHxDh, v_SxHxDh = (np.repeat(layer_cache[n], group, axis=1) for n in ('k', 'v'))
    scores_HxTxS = np.einsum('thd,shd->hts', q_TxHxDh, k_SxHxDh) / np.sqrt(Dh)
    visible_TxS = np.arange(len(k_SxHxDh))[None, :] <= positions_T[:, None]
    scores_HxTxS = np.where(visible_TxS, scores_HxTxS, -np.inf)
    probs_HxTxS = np.exp(scores_HxTxS - scores_HxTxS.max(-1, keepdims=True))
    probs_HxTxS /= probs_HxTxS.sum(-1, keepdims=True)
    out_TxHxDh = np.einsum('hts,shd->thd', probs_HxTxS, v_SxHxDh)
    x_TxD = x_TxD + dense(out_TxHxDh, p, l + 'attn/out', contract=2)
    h_TxD = norm(x_TxD, p, l + 'mlp_norm', cfg)
    up_TxF = dense(h_TxD, p, l + 'mlp/up')
    h_TxF = silu(dense(h_TxD, p, l + 'mlp/gate')) * up_TxF if cfg['mlp'] == 'swiglu' else gelu(up_TxF)
    x_TxD = x_TxD + dense(h_TxF, p, l + 'mlp/down')
  x_TxD = norm(x_TxD, p, 'final_norm', cfg)
  return x_TxD @ (p['embed/embedding'].T if cfg['tied_embeddings'] else p['lm_head'])


def generate(header, params, ids, steps):
  cfg = header['model']
  cache = [{} for _ in range(cfg['num_layers'])]
  logits = forward(np.array(ids), 0, cache, params, cfg)
  out = []
  while len(out) < steps and len(ids) + len(out) < cfg['max_seq_len']:
    out.append(int(np.argmax(logits[-1])))
    if out[-1] == header['eos_id']:
      break
    logits = forward(np.array(out[-1:]), len(ids) + len(out) - 1, cache, params, cfg)
  return out


def token_ids(text):
  try:
    return [int(i) for i in text.split(',')]
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r} is not token ids: write them comma-separated, e.g. 2,318,1110 '
                                     '(python -m llm.hf encode makes them)') from None


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('model')
  parser.add_argument('--ids', required=True, type=token_ids, help='prompt token ids, comma-separated (bos first)')
  parser.add_argument('--steps', type=int, default=64, help='most tokens to generate')
  args = parser.parse_args()
  # Bad input ends in argparse's one-line error, as a bad flag does: no traceback.
  try:
    header, params = load(args.model)
  except OSError as e:
    parser.error(f'cannot read {args.model}: {e.strerror}')
  except (ValueError, KeyError):
    parser.error(f'{args.model} is not a model.f16 (python -m llm.hf export --format=two_files writes one)')
  vocab, context = header['model']['vocab_size'], header['model']['max_seq_len']
  wrong = [i for i in args.ids if not 0 <= i < vocab]
  if wrong:
    parser.error(f'--ids: {wrong[0]} is no token id of this model; its ids are 0 to {vocab - 1}')
  if len(args.ids) > context:
    parser.error(f'--ids: {len(args.ids)} tokens, more than the model\'s context of {context}')
  out = generate(header, params, args.ids, args.steps)
  print(' '.join(map(str, out)))
  print(b''.join(bytes.fromhex(header['tokens'][i]) for i in out).decode('utf-8', errors='replace'))


if __name__ == '__main__':
  main()
