"""glibc malloc settings for XLA on a CPU-only host; called by the entry points before JAX starts."""
import ctypes
import glob
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # mallopt parameters, from glibc's malloc.h


def keep_freed_memory():
  """Stops glibc from handing XLA's per-step buffers back to the kernel on CPU-only hosts.

  XLA's CPU runtime allocates each step's temporaries as one block and frees it at the end.
  Above the mmap threshold glibc maps and unmaps such a block every time, so every step
  page-faults and zero-fills all of it again. One malloc arena (the others cannot grow past
  64 MB, so they map large blocks regardless), no mmap and no trimming keep the block in the
  heap for reuse; the process keeps its peak memory instead. What that saves in step time and
  costs in memory, measured per host: docs/performance.md, "Keeping freed memory". It must run
  before JAX creates its CPU client, whose threads pick their arenas once. Skipped where an
  accelerator is visible (device memory is elsewhere there), off with LLM_KEEP_MALLOC=1.
  """
  if not sys.platform.startswith('linux') or os.environ.get('LLM_KEEP_MALLOC') == '1':
    return
  platforms = os.environ.get('JAX_PLATFORMS', '')
  if platforms and not platforms.startswith('cpu'):
    return
  if not platforms and (glob.glob('/dev/nvidia[0-9]*') or glob.glob('/dev/accel*') or glob.glob('/dev/vfio/[0-9]*')):
    return
  try:
    mallopt = ctypes.CDLL('libc.so.6').mallopt
  except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
    return
  mallopt(_M_ARENA_MAX, 1)
  mallopt(_M_MMAP_MAX, 0)
  mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
