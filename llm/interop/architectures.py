"""The architectures the importer and exporter map, by Hugging Face model_type and by our config."""
from llm.interop import gpt2, llama
from llm.interop.errors import refuse

_MODULES = (gpt2, llama)


def for_model_type(model_type):
  for module in _MODULES:
    if model_type in module.MODEL_TYPES:
      return module
  known = [t for m in _MODULES for t in m.MODEL_TYPES]
  return refuse('model_type', model_type, f'the importer maps {known}')


def for_model(cfg):
  """GPT-2 for learned positions, Llama for RoPE; each refuses what else it cannot hold."""
  if cfg.head != 'lm':
    refuse('model.head', cfg.head, 'a reward model\'s scalar head has no place in a causal LM checkpoint')
  if cfg.smear_keys:
    refuse('model.smear_keys', True, 'neither GPT-2 nor Llama smears its keys (the two-file export does)')
  module = gpt2 if cfg.position == 'learned' else llama
  module.check_exportable(cfg)
  return module
