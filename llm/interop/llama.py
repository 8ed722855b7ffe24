"""Llama-style models (transformers' LlamaForCausalLM; Mistral without a sliding window has the
same tensors) <-> our model with RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases.
Qwen3 is the same with RMSNorm on each query and key head before RoPE: our qk_norm.

torch's Linear keeps weights as [out, in] (y = x @ W.T): each is transposed into our [in, out]
and its output split into heads. Hugging Face's RoPE is the rotate-half layout (its conversion
script permutes Meta's interleaved q/k rows into it), which is ours: no permutation here.
"""
from llm.interop.errors import refuse

MODEL_TYPES = ('llama', 'mistral', 'qwen3')


def _rope_theta(hf: dict) -> float:
  """transformers >= 5 writes rope_parameters; older config.json files rope_theta and rope_scaling."""
  rope = hf.get('rope_parameters') or {}
  scaling = hf.get('rope_scaling') or {}
  for field, value in (('rope_parameters', rope), ('rope_scaling', scaling)):
    if not isinstance(value, dict):
      refuse(field, value, 'expected an object such as {"rope_type": "default", "rope_theta": 10000.0}')
  kind = rope.get('rope_type', scaling.get('rope_type', scaling.get('type', 'default')))
  if kind != 'default':
    refuse('rope_parameters.rope_type', kind, 'only unscaled RoPE is supported')
  return float(rope.get('rope_theta', hf.get('rope_theta', 10_000.0)))


def model_fields(hf: dict) -> dict:
  """Our config.model fields for a Llama config.json; anything we cannot run is refused by name."""
  dim, heads = hf['hidden_size'], hf['num_attention_heads']
  if hf.get('hidden_act', 'silu') != 'silu':
    refuse('hidden_act', hf['hidden_act'], "SwiGLU's gate is silu")
  if hf.get('head_dim') not in (None, dim // heads):
    refuse('head_dim', hf['head_dim'], f'our head width is hidden_size / num_attention_heads = {dim // heads}')
  for field in ('attention_bias', 'mlp_bias'):
    if hf.get(field):
      refuse(field, hf[field], 'Llama-style models import without biases')
  if hf.get('sliding_window') is not None:
    refuse('sliding_window', hf['sliding_window'], 'attention is over the whole context here')
  kv_heads = hf.get('num_key_value_heads')  # absent: one per query head; 0 is refused by name, not read as absent
  return dict(num_layers=hf['num_hidden_layers'], num_heads=heads,
              num_kv_heads=heads if kv_heads is None else kv_heads, dim=dim, mlp_dim=hf['intermediate_size'],
              max_seq_len=hf.get('max_position_embeddings', 2048), position='rope', norm='rmsnorm',
              mlp='swiglu', qk_norm=hf['model_type'] == 'qwen3', tied_embeddings=hf.get('tie_word_embeddings', False),
              rope_theta=_rope_theta(hf), bias=False, norm_eps=hf.get('rms_norm_eps', 1e-6))


def check_exportable(cfg):
  for field, want in (('position', 'rope'), ('norm', 'rmsnorm'), ('mlp', 'swiglu'), ('bias', False)):
    if getattr(cfg, field) != want:
      refuse(f'model.{field}', getattr(cfg, field), f'a Llama checkpoint needs {want!r}')


def ignored(name: str, cfg) -> bool:
  return name.endswith('rotary_emb.inv_freq') or (cfg.tied_embeddings and name == 'lm_head.weight')


def import_thunks(w, cfg) -> tuple[dict, callable]:
  """({our top-level param path: () -> array}, i -> {our layer param path: () -> array})."""
  D, H, K, Dh = cfg.dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  top = {'embed/embedding': lambda: w['model.embed_tokens.weight'], 'final_norm/scale': lambda: w['model.norm.weight']}
  if not cfg.tied_embeddings:
    top['lm_head'] = lambda: w['lm_head.weight'].T

  def layer(i):
    h = f'model.layers.{i}.'
    linear = lambda name: w[h + name].T  # [out, in] -> [in, out]
    qk_norms = {'attn/query_norm/scale': lambda: w[h + 'self_attn.q_norm.weight'],
                'attn/key_norm/scale': lambda: w[h + 'self_attn.k_norm.weight']} if cfg.qk_norm else {}
    return qk_norms | {'attn_norm/scale': lambda: w[h + 'input_layernorm.weight'],
            'mlp_norm/scale': lambda: w[h + 'post_attention_layernorm.weight'],
            'attn/query': lambda: linear('self_attn.q_proj.weight').reshape(D, H, Dh),
            'attn/key': lambda: linear('self_attn.k_proj.weight').reshape(D, K, Dh),
            'attn/value': lambda: linear('self_attn.v_proj.weight').reshape(D, K, Dh),
            'attn/out': lambda: linear('self_attn.o_proj.weight').reshape(H, Dh, D),
            'mlp/gate': lambda: linear('mlp.gate_proj.weight'), 'mlp/up': lambda: linear('mlp.up_proj.weight'),
            'mlp/down': lambda: linear('mlp.down_proj.weight')}

  return top, layer


def export_tensors(top: dict, layers: list[dict], cfg) -> dict:
  """HF tensor name -> array, from our parameters (flat paths)."""
  D = cfg.dim
  out = {'model.embed_tokens.weight': top['embed/embedding'], 'model.norm.weight': top['final_norm/scale']}
  if not cfg.tied_embeddings:
    out['lm_head.weight'] = top['lm_head'].T
  for i, l in enumerate(layers):
    h = f'model.layers.{i}.'
    out |= {h + 'input_layernorm.weight': l['attn_norm/scale'],
            h + 'post_attention_layernorm.weight': l['mlp_norm/scale'],
            h + 'self_attn.q_proj.weight': l['attn/query'].reshape(D, -1).T,
            h + 'self_attn.k_proj.weight': l['attn/key'].reshape(D, -1).T,
            h + 'self_attn.v_proj.weight': l['attn/value'].reshape(D, -1).T,
            h + 'self_attn.o_proj.weight': l['attn/out'].reshape(-1, D).T,
            h + 'mlp.gate_proj.weight': l['mlp/gate'].T, h + 'mlp.up_proj.weight': l['mlp/up'].T,
            h + 'mlp.down_proj.weight': l['mlp/down'].T}
    if cfg.qk_norm:
      out |= {h + 'self_attn.q_norm.weight': l['attn/query_norm/scale'],
              h + 'self_attn.k_norm.weight': l['attn/key_norm/scale']}
  return out


def hf_config(cfg, ids: dict) -> dict:
  model_type, architecture = ('qwen3', 'Qwen3ForCausalLM') if cfg.qk_norm else ('llama', 'LlamaForCausalLM')
  return {'model_type': model_type, 'architectures': [architecture], 'vocab_size': cfg.vocab_size,
          'hidden_size': cfg.dim, 'intermediate_size': cfg.mlp_dim, 'num_hidden_layers': cfg.num_layers,
          'num_attention_heads': cfg.num_heads, 'num_key_value_heads': cfg.num_kv_heads, 'head_dim': cfg.head_dim,
          'hidden_act': 'silu', 'max_position_embeddings': cfg.max_seq_len, 'rms_norm_eps': cfg.norm_eps,
          'rope_theta': cfg.rope_theta, 'rope_parameters': {'rope_type': 'default', 'rope_theta': cfg.rope_theta},
          'tie_word_embeddings': cfg.tied_embeddings, 'attention_bias': False, 'mlp_bias': False, **ids}
