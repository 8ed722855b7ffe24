"""Can the model learn to copy by content? Random tokens, then the first L of them again at a random
distance (L 8..T/2-1, so no fixed offset predicts them); prints the loss on the second copy and on
the other tokens every 250 steps. The defaults are the toy of README's "The SFT recipe across
bases"; the flags move it towards configs/pretrain_small.py one property at a time:

    python results/sft_recipe/induction_toy.py --steps=2000                     # 2 layers, dim 128, vocab 255
    python results/sft_recipe/induction_toy.py --steps=1750 --vocab=4096        # the tokenizer's vocabulary size
    python results/sft_recipe/induction_toy.py --steps=1750 --layers=4 --dim=256 --mlp_dim=768 --kv_heads=2 --tied
    ... --model_vocab=4096                # 255 tokens drawn, the tokenizer's 4096 in the model
    ... --smear_keys                      # keys smeared with the previous position's (Olsson et al.)
"""
import argparse, sys, time
from pathlib import Path
import jax, jax.numpy as jnp, numpy as np, optax
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from llm import model as M

ap = argparse.ArgumentParser()
ap.add_argument('--steps', type=int, default=2000)
ap.add_argument('--attention', default='xla')  # llm/attention's choice: xla | cpu_kernel | auto
ap.add_argument('--no_qk_norm', action='store_true')
ap.add_argument('--lr', type=float, default=1e-3)  # constant AdamW, no weight decay
ap.add_argument('--layers', type=int, default=2)
ap.add_argument('--dim', type=int, default=128)
ap.add_argument('--mlp_dim', type=int, default=512)
ap.add_argument('--heads', type=int, default=4)
ap.add_argument('--kv_heads', type=int, default=4)
ap.add_argument('--tied', action='store_true')  # tie the lm head to the embedding (pretrain_small does)
ap.add_argument('--vocab', type=int, default=256)  # tokens drawn uniformly from 1..vocab-1
ap.add_argument('--model_vocab', type=int, default=0)  # the model's vocabulary, if larger than --vocab (0: the same)
ap.add_argument('--b2', type=float, default=0.999)  # Adam beta2 (optax's default; the training loop's is 0.95)
ap.add_argument('--seq', type=int, default=128)
ap.add_argument('--smear_keys', action='store_true')  # model.smear_keys: each key mixed with the one before
ap.add_argument('--every', type=int, default=250)  # print the losses every this many steps
ap.add_argument('--batch', type=int, default=32)
a = ap.parse_args()
cfg = M.ModelConfig(vocab_size=max(a.vocab, a.model_vocab), num_layers=a.layers, num_heads=a.heads, num_kv_heads=a.kv_heads, dim=a.dim,
                    mlp_dim=a.mlp_dim, max_seq_len=a.seq, position='rope', norm='rmsnorm', mlp='swiglu',
                    qk_norm=not a.no_qk_norm, tied_embeddings=a.tied, rope_theta=10000.0, dtype='float32',
                    remat='none', scan_layers=False, init_std=0.02, attention=a.attention,
                    smear_keys=a.smear_keys)
model = M.Transformer(cfg)
rng = np.random.default_rng(0)
def batch(B=a.batch, T=a.seq):
  """Each row: random tokens, then its first L tokens again at a random offset: the second copy is
  predictable only by content. mask marks the second copy's targets after its first token."""
  w = rng.integers(1, a.vocab, size=(B, T + 1))
  mask = np.zeros((B, T), np.float32)
  for b in range(B):
    L = rng.integers(8, T // 2); start = rng.integers(L, T + 1 - L)
    w[b, start:start + L] = w[b, :L]
    mask[b, start:start + L - 1] = 1  # targets w[start+1 .. start+L-1]
  return jnp.asarray(w[:, :-1]), jnp.asarray(w[:, 1:]), jnp.asarray(mask)
x, y, m = batch()
params = model.init(jax.random.key(0), x)
params = jax.tree.map(lambda p: p.value if hasattr(p, 'value') else p, params, is_leaf=lambda p: hasattr(p, 'value'))
tx = optax.adamw(a.lr, b2=a.b2, weight_decay=0.0)
opt = tx.init(params)
def loss_fn(p, x, y, m):
  logits = model.apply(p, x)
  l = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  return l.mean(), ((l * m).sum() / m.sum(), (l * (1 - m)).sum() / (1 - m).sum())
@jax.jit
def step(p, o, x, y, m):
  (_, (l, first)), g = jax.value_and_grad(loss_fn, has_aux=True)(p, x, y, m)
  u, o = tx.update(g, o, p)
  return optax.apply_updates(p, u), o, l, first
t = time.time()
for i in range(a.steps + 1):
  x, y, m = batch()
  params, opt, l, first = step(params, opt, x, y, m)
  if i % a.every == 0:
    print(f'{vars(a)} step {i}: second-copy loss {float(l):.3f}, other tokens {float(first):.3f} '
          f'(chance {np.log(a.vocab - 1):.2f})  {time.time()-t:.0f}s', flush=True)
