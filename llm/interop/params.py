"""Our parameter tree as flat paths ('attn/query'), split into top-level and per-layer parameters,
whichever layout the config gives it: stacked on a leading axis ('layers/...', scan_layers) or one
subtree per layer ('layer_3/...')."""
import jax
import numpy as np


def path_str(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def locate(path: str) -> tuple[str, int | None, str]:
  """('top' | 'stacked' | 'layer', layer index or None, path inside the layer or the top level)."""
  head, _, rest = path.partition('/')
  if head == 'layers':
    return 'stacked', None, rest
  if head.startswith('layer_'):
    return 'layer', int(head[len('layer_'):]), rest
  return 'top', None, path


def to_host(params, num_layers: int) -> tuple[dict, list[dict]]:
  """(top-level {path: float32 array}, one {path: array} per layer) on this host."""
  top, layers = {}, [{} for _ in range(num_layers)]
  for path, x in jax.tree_util.tree_leaves_with_path(params):
    x = np.asarray(jax.device_get(x), np.float32)
    where, i, name = locate(path_str(path))
    if where == 'top':
      top[name] = x
    elif where == 'layer':
      layers[i][name] = x
    else:
      for i in range(num_layers):
        layers[i][name] = x[i]
  return top, layers
