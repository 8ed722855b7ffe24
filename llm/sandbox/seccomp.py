"""The sandbox child's system-call allowlist: a seccomp-BPF filter assembled here and installed
with prctl through ctypes (no dependency), for x86_64 and aarch64.

Once installed (it cannot be removed, and it is inherited by anything the process could start),
the process may compute and write to its stdout and stderr, and nothing else: every system call
off the list fails with EPERM, so there is no open (no file reads or writes, no /proc, no
imports of modules not yet loaded), no socket, no fork, clone or exec, no ioctl, no new
executable memory, no signal to another process and no raising of a resource limit. A system
call of another ABI (i386 on x86_64) kills the process. This is the sandbox's hard boundary for
what code can touch; resource limits (llm/sandbox/child.py) bound what it can consume.
"""
import ctypes
import errno
import os
import sys

# System calls allowed whatever their arguments: memory, signals, clocks, the process's own ids
# and resource use, futexes, randomness, and reading (only already-open descriptors exist).
ALWAYS = ('read', 'close', 'fstat', 'lseek', 'munmap', 'brk', 'mremap', 'madvise', 'rt_sigaction',
          'rt_sigprocmask', 'rt_sigreturn', 'sigaltstack', 'restart_syscall', 'sched_yield', 'futex',
          'getpid', 'gettid', 'getppid', 'getuid', 'geteuid', 'getgid', 'getegid', 'getrusage', 'times',
          'time', 'gettimeofday', 'clock_gettime', 'clock_getres', 'nanosleep', 'clock_nanosleep',
          'getrandom', 'exit', 'exit_group')
# write, mmap, mprotect, kill, tgkill and prlimit64 are allowed under a condition on their arguments
# (program() below).

# Numbers from <asm/unistd_64.h> (x86_64) and <asm-generic/unistd.h> (aarch64); aarch64 has no `time`.
SYSCALLS = {
    'x86_64': dict(read=0, write=1, close=3, fstat=5, lseek=8, mmap=9, mprotect=10, munmap=11, brk=12,
                   rt_sigaction=13, rt_sigprocmask=14, rt_sigreturn=15, sched_yield=24, mremap=25, madvise=28,
                   nanosleep=35, getpid=39, exit=60, kill=62, gettimeofday=96, getrusage=98, times=100,
                   getuid=102, getgid=104, geteuid=107, getegid=108, getppid=110, sigaltstack=131, gettid=186,
                   time=201, futex=202, restart_syscall=219, clock_gettime=228, clock_getres=229,
                   clock_nanosleep=230, exit_group=231, tgkill=234, prlimit64=302, getrandom=318),
    'aarch64': dict(close=57, lseek=62, read=63, write=64, fstat=80, exit=93, exit_group=94, futex=98,
                    nanosleep=101, clock_gettime=113, clock_getres=114, clock_nanosleep=115, sched_yield=124,
                    restart_syscall=128, kill=129, tgkill=131, sigaltstack=132, rt_sigaction=134,
                    rt_sigprocmask=135, rt_sigreturn=139, times=153, getrusage=165, gettimeofday=169,
                    getpid=172, getppid=173, getuid=174, geteuid=175, getgid=176, getegid=177, gettid=178,
                    brk=214, munmap=215, mremap=216, mmap=222, mprotect=226, madvise=233, prlimit64=261,
                    getrandom=278),
}
AUDIT_ARCH = {'x86_64': 0xC000003E, 'aarch64': 0xC00000B7}  # <linux/audit.h>

PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS = 4, 22, 38  # <linux/prctl.h>
_SECCOMP_MODE_FILTER = 2
_RET_KILL_PROCESS, _RET_ERRNO, _RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
_PROT_EXEC = 0x4
_STDOUT, _STDERR = 1, 2

# Classic BPF over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6];}.
_LD_W_ABS, _JEQ_K, _JSET_K, _RET_K = 0x20, 0x15, 0x45, 0x06
_NR_OFFSET, _ARCH_OFFSET, _ARGS_OFFSET = 0, 4, 16
_LOW, _HIGH = (0, 4) if sys.byteorder == 'little' else (4, 0)

Instruction = tuple[int, int, int, int]  # (code, jump if true, jump if false, k)


def _load(offset: int) -> Instruction:
  return (_LD_W_ABS, 0, 0, offset)


def _arg(i: int, half: int = _LOW) -> Instruction:
  """Loads 32 bits of argument i: the low half holds a whole int, fd, pid or flag word."""
  return _load(_ARGS_OFFSET + 8 * i + half)


def _ret(value: int) -> Instruction:
  return (_RET_K, 0, 0, value)


_ALLOW, _DENY = _ret(_RET_ALLOW), _ret(_RET_ERRNO | errno.EPERM)


def _arg_in(i: int, values: tuple[int, ...]) -> list[Instruction]:
  """Allowed when argument i (32 bits) is one of values."""
  n = len(values)
  return [_arg(i)] + [(_JEQ_K, n - j, 0, v) for j, v in enumerate(values)] + [_DENY, _ALLOW]


def _arg_without(i: int, bits: int) -> list[Instruction]:
  """Allowed when argument i has none of bits set."""
  return [_arg(i), (_JSET_K, 1, 0, bits), _ALLOW, _DENY]


def _arg_null(i: int) -> list[Instruction]:
  """Allowed when argument i (a 64-bit pointer) is NULL."""
  return [_arg(i, _LOW), (_JEQ_K, 0, 3, 0), _arg(i, _HIGH), (_JEQ_K, 0, 1, 0), _ALLOW, _DENY]


def program(arch: str, pid: int) -> list[Instruction]:
  """The filter for a process `pid` on `arch`: each allowed call is a test on its number followed
  by its block, which ends in a return on every path; anything that matches no test is denied."""
  if arch not in SYSCALLS:
    raise OSError(f'no system-call table for {arch!r} (have {", ".join(SYSCALLS)})')
  numbers = SYSCALLS[arch]
  blocks = {name: [_ALLOW] for name in ALWAYS if name in numbers}
  blocks.update(
      write=_arg_in(0, (_STDOUT, _STDERR)),
      mmap=_arg_without(2, _PROT_EXEC),  # mmap(addr, len, prot, ...)
      mprotect=_arg_without(2, _PROT_EXEC),
      kill=_arg_in(0, (pid,)),  # itself only: never a group (0, -pgid) or every process (-1)
      tgkill=_arg_in(0, (pid,)),
      prlimit64=_arg_null(2),  # reading limits; prlimit64(pid, resource, new, old)
  )
  out = [_load(_ARCH_OFFSET), (_JEQ_K, 1, 0, AUDIT_ARCH[arch]), _ret(_RET_KILL_PROCESS), _load(_NR_OFFSET)]
  for name, block in blocks.items():
    out += [(_JEQ_K, 0, len(block), numbers[name])] + block
  return out + [_DENY]


class _SockFilter(ctypes.Structure):
  _fields_ = [('code', ctypes.c_ushort), ('jt', ctypes.c_ubyte), ('jf', ctypes.c_ubyte), ('k', ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
  _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.POINTER(_SockFilter))]


def prctl(option: int, *args) -> None:
  """prctl(2): int arguments are passed as unsigned longs, others (ctypes.byref(...)) as they are."""
  libc = ctypes.CDLL(None, use_errno=True)
  args = [ctypes.c_ulong(a) if isinstance(a, int) else a for a in args]
  if libc.prctl(ctypes.c_int(option), *args, *[ctypes.c_ulong(0)] * (4 - len(args))) != 0:
    code = ctypes.get_errno()
    raise OSError(code, f'prctl({option}): {os.strerror(code)}')


def install(pid: int) -> None:
  """Installs program(this machine, pid) on the calling process (pid: its own id), for good."""
  if sys.platform != 'linux':
    raise OSError(f'seccomp needs Linux, not {sys.platform}')
  instructions = program(os.uname().machine, pid)
  filters = (_SockFilter * len(instructions))(*instructions)
  prctl(PR_SET_NO_NEW_PRIVS, 1)  # what lets a process without privileges install a filter
  prctl(PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(_SockFprog(len(instructions), filters)))
