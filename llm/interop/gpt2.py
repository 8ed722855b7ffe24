"""GPT-2 (transformers' GPT2LMHeadModel) <-> our model with learned positions, LayerNorm with
biases, GELU (tanh approximation: GPT-2's gelu_new), biases in every projection, tied head.

GPT-2's Conv1D layers keep weights as [in, out] (y = x @ W + b), our layout already; the
attention's query, key and value are one c_attn matrix [D, 3D], split into our [D, H, Dh] each.
"""
import numpy as np

from llm.interop.errors import refuse

MODEL_TYPES = ('gpt2',)
_GELU_TANH = ('gelu_new', 'gelu_pytorch_tanh')
# Buffers older checkpoints store beside the parameters: the causal mask and its fill value.
_BUFFERS = ('.attn.bias', '.attn.masked_bias')


def model_fields(hf: dict) -> dict:
  """Our config.model fields for a GPT-2 config.json; anything we cannot run is refused by name."""
  act = hf.get('activation_function', 'gelu_new')
  if act not in _GELU_TANH:
    refuse('activation_function', act, f'our GELU is the tanh approximation ({" or ".join(_GELU_TANH)})')
  for field, ok in (('scale_attn_weights', True), ('scale_attn_by_inverse_layer_idx', False),
                    ('add_cross_attention', False)):
    if hf.get(field, ok) != ok:
      refuse(field, hf[field], f'only {ok} is supported')
  dim, inner = hf['n_embd'], hf.get('n_inner')  # inner absent or null: 4 * dim; 0 is refused by name
  return dict(num_layers=hf['n_layer'], num_heads=hf['n_head'], num_kv_heads=hf['n_head'], dim=dim,
              mlp_dim=4 * dim if inner is None else inner, max_seq_len=hf['n_positions'], position='learned',
              norm='layernorm', mlp='gelu', qk_norm=False, tied_embeddings=hf.get('tie_word_embeddings', True),
              bias=True, norm_eps=hf.get('layer_norm_epsilon', 1e-5))


def check_exportable(cfg):
  for field, want in (('position', 'learned'), ('norm', 'layernorm'), ('mlp', 'gelu'), ('qk_norm', False)):
    if getattr(cfg, field) != want:
      refuse(f'model.{field}', getattr(cfg, field), f'a GPT-2 checkpoint needs {want!r}')
  if cfg.num_kv_heads != cfg.num_heads:
    refuse('model.num_kv_heads', cfg.num_kv_heads, f'GPT-2 has no grouped-query attention (needs {cfg.num_heads})')


def _prefix(names) -> str:
  return 'transformer.' if 'transformer.wte.weight' in names else ''


def ignored(name: str, cfg) -> bool:
  return name.endswith(_BUFFERS) or (cfg.tied_embeddings and name == 'lm_head.weight')


def import_thunks(w, cfg) -> tuple[dict, callable]:
  """({our top-level param path: () -> array}, i -> {our layer param path: () -> array})."""
  p, D, H, Dh = _prefix(w.names()), cfg.dim, cfg.num_heads, cfg.head_dim
  top = {'embed/embedding': lambda: w[p + 'wte.weight'], 'pos_embed': lambda: w[p + 'wpe.weight'],
         'final_norm/scale': lambda: w[p + 'ln_f.weight'], 'final_norm/bias': lambda: w[p + 'ln_f.bias']}
  if not cfg.tied_embeddings:
    top['lm_head'] = lambda: w['lm_head.weight'].T

  def layer(i):
    h = f'{p}h.{i}.'
    out = {'attn_norm/scale': lambda: w[h + 'ln_1.weight'], 'attn_norm/bias': lambda: w[h + 'ln_1.bias'],
           'mlp_norm/scale': lambda: w[h + 'ln_2.weight'], 'mlp_norm/bias': lambda: w[h + 'ln_2.bias'],
           'attn/out': lambda: w[h + 'attn.c_proj.weight'].reshape(H, Dh, D),
           'attn/out_bias': lambda: w[h + 'attn.c_proj.bias'],
           'mlp/up': lambda: w[h + 'mlp.c_fc.weight'], 'mlp/up_bias': lambda: w[h + 'mlp.c_fc.bias'],
           'mlp/down': lambda: w[h + 'mlp.c_proj.weight'], 'mlp/down_bias': lambda: w[h + 'mlp.c_proj.bias']}
    for j, name in enumerate(('query', 'key', 'value')):
      out[f'attn/{name}'] = lambda j=j: _columns(w[h + 'attn.c_attn.weight'], j, D).reshape(D, H, Dh)
      out[f'attn/{name}_bias'] = lambda j=j: _columns(w[h + 'attn.c_attn.bias'], j, D).reshape(H, Dh)
    return out

  return top, layer


def _columns(x, j: int, width: int):
  if x.shape[-1] != 3 * width:
    raise ValueError(f'c_attn has {x.shape[-1]} output columns, expected 3 x n_embd = {3 * width}')
  return x[..., j * width:(j + 1) * width]


def export_tensors(top: dict, layers: list[dict], cfg) -> dict:
  """HF tensor name -> array, from our parameters (flat paths); zero biases where we have none."""
  D, F = cfg.dim, cfg.mlp_dim
  bias = lambda params, name, size: params.get(name, np.zeros(size, np.float32)).reshape(-1)
  out = {'transformer.wte.weight': top['embed/embedding'], 'transformer.wpe.weight': top['pos_embed'],
         'transformer.ln_f.weight': top['final_norm/scale'],
         'transformer.ln_f.bias': bias(top, 'final_norm/bias', D)}
  if not cfg.tied_embeddings:
    out['lm_head.weight'] = top['lm_head'].T
  for i, l in enumerate(layers):
    h = f'transformer.h.{i}.'
    out |= {h + 'ln_1.weight': l['attn_norm/scale'], h + 'ln_1.bias': bias(l, 'attn_norm/bias', D),
            h + 'ln_2.weight': l['mlp_norm/scale'], h + 'ln_2.bias': bias(l, 'mlp_norm/bias', D),
            h + 'attn.c_attn.weight': np.concatenate([l[f'attn/{n}'].reshape(D, D) for n in ('query', 'key', 'value')],
                                                     axis=1),
            h + 'attn.c_attn.bias': np.concatenate([bias(l, f'attn/{n}_bias', D) for n in ('query', 'key', 'value')]),
            h + 'attn.c_proj.weight': l['attn/out'].reshape(D, D), h + 'attn.c_proj.bias': bias(l, 'attn/out_bias', D),
            h + 'mlp.c_fc.weight': l['mlp/up'], h + 'mlp.c_fc.bias': bias(l, 'mlp/up_bias', F),
            h + 'mlp.c_proj.weight': l['mlp/down'], h + 'mlp.c_proj.bias': bias(l, 'mlp/down_bias', D)}
  return out


def hf_config(cfg, ids: dict) -> dict:
  return {'model_type': 'gpt2', 'architectures': ['GPT2LMHeadModel'], 'vocab_size': cfg.vocab_size,
          'n_positions': cfg.max_seq_len, 'n_embd': cfg.dim, 'n_layer': cfg.num_layers, 'n_head': cfg.num_heads,
          'n_inner': cfg.mlp_dim, 'activation_function': 'gelu_new', 'layer_norm_epsilon': cfg.norm_eps,
          'tie_word_embeddings': cfg.tied_embeddings, 'resid_pdrop': 0.0, 'embd_pdrop': 0.0, 'attn_pdrop': 0.0,
          'scale_attn_weights': True, **ids}
