"""The parent side of the sandbox: starts the child (llm/sandbox/child.py), bounds its wall time
and output, kills its whole process group, and describes the outcome for the model."""
import dataclasses
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llm.sandbox import child

_CHILD = str(Path(child.__file__).resolve())
_READ_CHUNK = 65536


@dataclasses.dataclass(frozen=True)
class Limits:
  cpu_s: int = 2  # CPU seconds (RLIMIT_CPU): SIGXCPU at this, SIGKILL one second later
  wall_s: float = 5.0  # wall-clock seconds from start to kill (sleeping uses no CPU)
  memory_mb: int = 256  # address space (RLIMIT_AS); the interpreter itself takes about 30 MB
  output_bytes: int = 8192  # stdout + stderr kept; the child is killed when it writes more
  code_chars: int = 10_000  # longer code is refused without starting a process

  def __post_init__(self):
    for field in dataclasses.fields(self):
      if not getattr(self, field.name) > 0:
        raise ValueError(f'sandbox.Limits.{field.name} = {getattr(self, field.name)!r}; it must be positive')


@dataclasses.dataclass(frozen=True)
class Result:
  output: str  # stdout and stderr as written, at most Limits.output_bytes (decoded as UTF-8)
  exit_code: int | None  # the child's exit status; None when a signal ended it
  signal: str | None  # e.g. 'SIGXCPU', 'SIGKILL', 'SIGSEGV'
  timed_out: bool  # killed by the runner at Limits.wall_s
  truncated: bool  # killed by the runner for writing more than Limits.output_bytes
  limits: Limits
  wall_s: float  # start to end, setup included
  cpu_used_s: float  # the child's CPU time, user + system (its resource usage)
  setup_failed: bool  # the child could not confine itself, so the code did not run

  @property
  def status(self) -> str:
    """'' when the code ran to completion, else an 'error: ...' line saying what ended it."""
    if self.timed_out:
      return f'error: stopped after {self.limits.wall_s:g} s (the time limit)'
    if self.truncated:
      return f'error: stopped after {self.limits.output_bytes} bytes of output (the output limit)'
    # RLIMIT_CPU sends SIGXCPU at cpu_s and SIGKILL a second later. The kernel counts CPU time for
    # the limit by sampling at timer ticks, ahead of the usage measured here (0.97 s at a 1 s limit
    # and 1.95 s at 2 s have been seen), so a SIGXCPU is always taken as the limit's, and a SIGKILL
    # only past cpu_s: one before is the code's own (it may kill itself) or the OOM killer's.
    if self.signal == 'SIGXCPU' or self.signal == 'SIGKILL' and self.cpu_used_s >= self.limits.cpu_s:
      return f'error: stopped after {self.limits.cpu_s} s of CPU time (the CPU limit)'
    if self.signal:
      return f'error: the program was killed by {self.signal}'
    if self.setup_failed:
      return 'error: the python sandbox could not start on this machine, so the code did not run'
    if self.exit_code and not self.output.strip():
      return f'error: exit status {self.exit_code}'
    return ''

  def text(self, max_chars: int) -> str:
    """What the model reads: the output, cut to leave room for the status line, then the status;
    'no output' guidance when there is neither."""
    status = self.status
    output = self.output.rstrip('\n')
    if not output and not status:
      return 'no output (print the result, or end the code with an expression)'
    room = max_chars - len(status) - 1 if status else max_chars
    if len(output) > room:
      output = output[:max(room - 4, 0)] + ' ...'
    return '\n'.join(p for p in (output, status) if p)


def run(code: str, limits: Limits = Limits(), layers: tuple[str, ...] = child.LAYERS) -> Result:
  """Runs code in a fresh sandboxed interpreter and waits (at most limits.wall_s) for it.

  layers: the child's confinement layers (child.LAYERS, all by default); tests leave one out to
  check that the others still contain each attack.
  """
  if not isinstance(code, str):
    raise TypeError(f'code must be str, not {type(code).__name__}')
  if len(code) > limits.code_chars:
    return Result(f'error: code longer than {limits.code_chars} characters', 1, None, False, False, limits, 0.0,
                  0.0, False)
  unknown = set(layers) - set(child.LAYERS)
  if unknown:
    raise ValueError(f'unknown sandbox layers {sorted(unknown)}; choose from {child.LAYERS}')
  # The child writes a byte to failure_write only when its setup fails (its exit status cannot
  # tell: the code may exit with any). Read without waiting, once the child is gone: a fork of
  # this process (another thread's) may still hold a copy of failure_write.
  failure_read, failure_write = os.pipe()
  os.set_blocking(failure_read, False)
  request = dict(code=code, cpu_s=math.ceil(limits.cpu_s), memory_bytes=limits.memory_mb << 20,
                 layers=list(layers), setup_failed_fd=failure_write)
  start = time.monotonic()
  with (open(failure_read, 'rb', buffering=0) as failure_report, open(failure_write, 'wb') as child_end,
        tempfile.TemporaryDirectory(prefix='llm-sandbox-') as cwd):
    proc = subprocess.Popen([sys.executable, '-I', '-S', '-B', '-u', '-X', 'utf8', _CHILD],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=cwd, env={}, close_fds=True, pass_fds=(failure_write,), start_new_session=True)
    child_end.close()  # the child holds the only copy now
    try:
      _send(proc, request)
      output, timed_out, truncated = _read(proc, start + limits.wall_s, limits.output_bytes)
      if not (timed_out or truncated):  # the output has ended; the process may still be running
        timed_out = not _exited(proc, start + limits.wall_s)
    finally:
      cpu_used_s = _kill_group(proc)
      proc.stdout.close()
    setup_failed = bool(failure_report.read(1))  # b'' (end of file) or None (no byte, a copy open)
  status = proc.returncode
  signal_name = signal.Signals(-status).name if status < 0 and not (timed_out or truncated) else None
  return Result(output[:limits.output_bytes].decode('utf-8', 'replace'), status if status >= 0 else None,
                signal_name, timed_out, truncated, limits, time.monotonic() - start, cpu_used_s, setup_failed)


def _send(proc: subprocess.Popen, request: dict) -> None:
  """Writes the request and closes stdin. Code of at most code_chars fits in the pipe's buffer,
  so this never waits on the child."""
  try:
    proc.stdin.write(json.dumps(request).encode())
    proc.stdin.close()
  except BrokenPipeError:  # the child died first; its exit status tells why
    pass


def _read(proc: subprocess.Popen, deadline: float, max_bytes: int) -> tuple[bytes, bool, bool]:
  """(output, timed out, too much output): reads until end of output, the deadline, or more than
  max_bytes, whichever comes first."""
  output = bytearray()
  fd = proc.stdout.fileno()
  with selectors.DefaultSelector() as selector:
    selector.register(fd, selectors.EVENT_READ)
    while True:
      left = deadline - time.monotonic()
      if left <= 0:
        return bytes(output), True, False
      if not selector.select(left):
        continue
      chunk = os.read(fd, _READ_CHUNK)
      if not chunk:
        return bytes(output), False, False
      output += chunk
      if len(output) > max_bytes:
        return bytes(output), False, True


def _exited(proc: subprocess.Popen, deadline: float) -> bool:
  """Whether the child exits by the deadline, left unreaped (a zombie) so that its process
  group, whose id is its pid, cannot be reused before _kill_group."""
  while time.monotonic() < deadline:
    if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
      return True
    time.sleep(0.001)
  return False


def _kill_group(proc: subprocess.Popen) -> float:
  """SIGKILLs the child's process group (its id is the child's pid: the child leads a session of
  its own), then reaps the child: anything it started is killed too, were that possible. Returns
  the child's CPU seconds (user + system)."""
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  _, wait_status, usage = os.wait4(proc.pid, 0)  # proc.wait() would not return the usage
  proc.returncode = os.waitstatus_to_exitcode(wait_status)
  return usage.ru_utime + usage.ru_stime
