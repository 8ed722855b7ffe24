"""The sandbox's child process: sets up its own confinement, then runs the model's code.

llm.sandbox.runner starts it as `python -I -S -B -u -X utf8 child.py` (isolated: no site-packages,
no PYTHON* variables, no current directory on sys.path; unbuffered, so output written before a
kill survives) with an empty environment, in a fresh empty directory and a session of its own,
and writes one JSON request to its stdin: {"code": str, "cpu_s": int, "memory_bytes": int,
"layers": [...], "setup_failed_fd": int}. Everything before the code runs is trusted and happens
in this order:

1. the modules the code may use are imported (after step 3 nothing can be read from disk);
2. resource limits (`rlimits`): CPU seconds (SIGXCPU, then SIGKILL a second later), address
   space, file size 0 (no byte can be written to any file), no file descriptor beyond stdin,
   stdout and stderr, no new processes (not binding root, which step 3 covers), no core dumps;
3. (`seccomp`) the process is made non-dumpable (no core dump even to a core_pattern pipe) and
   the seccomp allowlist of llm/sandbox/seccomp.py is installed: the hard boundary;
4. an audit hook (`audit`, PEP 578) that refuses every event off a short list: imports, open,
   os.*, socket.*, subprocess.*, ctypes.*, gc walks, code and function construction, reading
   frames and code off objects, setting attributes of functions. It turns most attempts into a
   readable error, but hooks can be escaped (tests/test_sandbox_redteam.py has a finalizer that
   runs after the interpreter clears them), which is why steps 2 and 3 are the boundary.

The code then runs as a script, with a notebook's convenience: when its last statement is an
expression, that value's repr is printed (unless None). An exception prints as Python would,
cut to the code's own line and the error. If setup fails the process writes a byte to
setup_failed_fd (a pipe to the runner) and exits with SETUP_FAILED before any of the code runs;
else it closes setup_failed_fd first, so the code, which may exit with any status, cannot write it.
"""
import ast
import builtins
import json
import os
import resource
import sys
import traceback

MODULES = ('bisect', 'cmath', 'collections', 'datetime', 'decimal', 'fractions', 'functools', 'heapq',
           'itertools', 'json', 'math', 'operator', 'random', 're', 'statistics', 'string', 'textwrap',
           'time', 'unicodedata')
# Audit events the code may raise. compile/exec: exec() and eval(); sys._getframe (and
# sys._getframemodulename from Python 3.12): namedtuple reads its caller's module name;
# object.__setattr__/__delattr__ are allowed on classes only (a function's __code__ or
# __defaults__ could rewrite this hook).
ALLOWED_EVENTS = frozenset({'compile', 'exec', 'builtins.id', 'builtins.input', 'builtins.input/result',
                            'time.sleep', 'sys._getframe', 'sys._getframemodulename', 'sys.excepthook',
                            'sys.unraisablehook', 'cpython._PySys_ClearAuditHooks'})
LAYERS = ('rlimits', 'seccomp', 'audit')
SETUP_FAILED = 121  # exit status when the sandbox could not be set up (the code may exit with it too)
FILENAME = '<python>'


def _limit_resources(cpu_s: int, memory_bytes: int) -> None:
  for limit, value in ((resource.RLIMIT_CPU, (cpu_s, cpu_s + 1)),
                       (resource.RLIMIT_AS, (memory_bytes, memory_bytes)),
                       (resource.RLIMIT_FSIZE, (0, 0)),
                       (resource.RLIMIT_NOFILE, (3, 3)),  # stdin, stdout, stderr: all it has
                       (resource.RLIMIT_NPROC, (0, 0)),
                       (resource.RLIMIT_CORE, (0, 0)),
                       (resource.RLIMIT_MEMLOCK, (0, 0))):
    resource.setrlimit(limit, value)


def _audit_hook(event, args, allowed=ALLOWED_EVENTS, modules=', '.join(MODULES), type=type,
                issubclass=issubclass, PermissionError=PermissionError,
                ModuleNotFoundError=ModuleNotFoundError):
  """Everything it uses is bound at definition: the code may rebind builtins and this module's
  globals (reached through frames), but default arguments can only change through an audited
  setattr, which this hook refuses."""
  if event in allowed:
    return
  if event in ('object.__setattr__', 'object.__delattr__') and issubclass(type(args[0]), type):
    return
  if event == 'import':
    raise ModuleNotFoundError(f'module {args[0]!r} is not available in the python sandbox; it offers {modules}')
  raise PermissionError(f'{event} is not allowed in the python sandbox')


def _print_error(error: BaseException, in_code: bool) -> None:
  """The exception as Python prints it, with only the code's own top-level line (the frames
  above it are this file's, those below it the standard library's)."""
  tb = error.__traceback__.tb_next if in_code else None  # the first frame is _run's
  head = f'Traceback (most recent call last):\n  File "{FILENAME}", line {tb.tb_lineno}\n' if tb else ''
  sys.stderr.write(head + ''.join(traceback.format_exception_only(error)))


def _run(code: str) -> int:
  namespace = {'__name__': '__main__', '__builtins__': builtins}
  try:
    tree = ast.parse(code, FILENAME)
  except (SyntaxError, ValueError) as e:  # ValueError: a NUL byte
    _print_error(e, in_code=False)
    return 1
  last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
  try:
    exec(compile(tree, FILENAME, 'exec'), namespace)
    if last is not None:
      value = eval(compile(ast.Expression(last.value), FILENAME, 'eval'), namespace)
      if value is not None:
        print(repr(value))
  except SystemExit:
    raise
  except BaseException as e:  # the code's own error, reported to the model
    _print_error(e, in_code=True)
    return 1
  return 0


def main() -> None:
  request = json.loads(sys.stdin.buffer.read())
  layers = set(request['layers'])
  try:
    for name in MODULES:
      __import__(name)
    if 'seccomp' in layers:  # imported now: once file descriptors are limited, no file opens
      sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
      import seccomp  # llm/sandbox/seccomp.py (this process cannot import the llm package)
      del sys.path[0]
    if 'rlimits' in layers:
      _limit_resources(request['cpu_s'], request['memory_bytes'])
    if 'seccomp' in layers:
      seccomp.prctl(seccomp.PR_SET_DUMPABLE, 0)
      seccomp.install(os.getpid())
  except Exception as e:  # e.g. no seccomp on this kernel: refuse rather than run unconfined
    sys.stderr.write(f'sandbox setup failed: {type(e).__name__}: {e}\n')
    os.write(request['setup_failed_fd'], b'!')  # allowed: the filter is only in place once setup succeeded
    os._exit(SETUP_FAILED)
  os.close(request['setup_failed_fd'])
  if 'audit' in layers:
    sys.addaudithook(_audit_hook)
  sys.exit(_run(request['code']))


if __name__ == '__main__':
  main()
