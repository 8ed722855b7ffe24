"""Can the model learn to copy by content? Random tokens, then the first L of them again at a random
distance (L 8..63, so no fixed offset predicts them); prints the loss on the second copy and on
the other tokens every 250 steps. A toy for results/sft_recipe/induction.md:

    python results/sft_recipe/induction_toy.py ATTENTION QK_NORM STEPS [LR] [LAYERS]
    python results/sft_recipe/induction_toy.py xla 1 2000
"""
import sys, time
from pathlib import Path
import jax, jax.numpy as jnp, numpy as np, optax
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from llm import model as M

attention, qk_norm, steps = sys.argv[1], sys.argv[2] == '1', int(sys.argv[3])
lr = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-3
layers = int(sys.argv[5]) if len(sys.argv) > 5 else 2
cfg = M.ModelConfig(vocab_size=256, num_layers=layers, num_heads=4, num_kv_heads=4, dim=128, mlp_dim=512, max_seq_len=128,
                    position='rope', norm='rmsnorm', mlp='swiglu', qk_norm=qk_norm, tied_embeddings=False,
                    rope_theta=10000.0, dtype='float32', remat='none', scan_layers=False, init_std=0.02,
                    attention=attention)
model = M.Transformer(cfg)
rng = np.random.default_rng(0)
def batch(B=32, T=128):
  """Each row: random tokens, then its first L (8..63) tokens again at a random offset: the second
  copy is predictable only by content. mask marks the second copy's targets after its first token."""
  w = rng.integers(1, 256, size=(B, T + 1))
  mask = np.zeros((B, T), np.float32)
  for b in range(B):
    L = rng.integers(8, 64); start = rng.integers(L, T + 1 - L)
    w[b, start:start + L] = w[b, :L]
    mask[b, start:start + L - 1] = 1  # targets w[start+1 .. start+L-1]
  return jnp.asarray(w[:, :-1]), jnp.asarray(w[:, 1:]), jnp.asarray(mask)
x, y, m = batch()
params = model.init(jax.random.key(0), x)
params = jax.tree.map(lambda p: p.value if hasattr(p, 'value') else p, params, is_leaf=lambda p: hasattr(p, 'value'))
tx = optax.adamw(lr, weight_decay=0.0)
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
for i in range(steps + 1):
  x, y, m = batch()
  params, opt, l, first = step(params, opt, x, y, m)
  if i % 250 == 0:
    print(f'{attention} qk_norm={qk_norm} lr={lr} L={layers} step {i}: second-copy loss {float(l):.3f}, other tokens {float(first):.3f} (chance {np.log(255):.2f})  {time.time()-t:.0f}s', flush=True)
