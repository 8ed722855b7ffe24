"""x @ w with the weight gradient laid out the way XLA's CPU backend runs it fast.

XLA's CPU dot runs a rows-contracting (weight-gradient) product 1.4-1.6x slower when its output
has more rows than columns (docs/performance.md has the measurements). Then dW^T = dy^T x is
computed and transposed; the optimization barrier stops XLA folding the transpose back into
the slow dot. Every weight-gradient dot gets one, so a transpose taken by the caller (the tied
lm-head's w = E^T) stays a plain copy too. Accelerators keep the plain product, whose gradient
their compilers lay out themselves.
"""
import jax


def _rows_contracted(a_RxM, b_RxN):
  """a^T b, the weight-gradient product: both operands contract over their rows."""
  return jax.lax.dot_general(a_RxM, b_RxN, (((0,), (0,)), ((), ())))


@jax.custom_vjp
def _cpu_matmul(x_RxK, w_KxN):
  return x_RxK @ w_KxN


def _cpu_matmul_fwd(x_RxK, w_KxN):
  return x_RxK @ w_KxN, (x_RxK, w_KxN)


def _cpu_matmul_bwd(residuals, dy_RxN):
  x_RxK, w_KxN = residuals
  dx_RxK = dy_RxN @ w_KxN.T
  if x_RxK.shape[1] > dy_RxN.shape[1]:
    dw_KxN = jax.lax.optimization_barrier(_rows_contracted(dy_RxN, x_RxK)).T
  else:
    dw_KxN = jax.lax.optimization_barrier(_rows_contracted(x_RxK, dy_RxN))
  return dx_RxK, dw_KxN


_cpu_matmul.defvjp(_cpu_matmul_fwd, _cpu_matmul_bwd)


def matmul(x_RxK, w_KxN):
  """x @ w for 2-D operands; on the CPU backend with the weight gradient described above."""
  if jax.default_backend() == 'cpu':
    return _cpu_matmul(x_RxK, w_KxN)
  return x_RxK @ w_KxN
