"""A sandbox for model-written Python: `python` as a tool (llm.tools.make_registry(python=True)).

Each call runs in a fresh interpreter process (llm/sandbox/child.py) confined in layers, the
kernel's first: a seccomp allowlist (llm/sandbox/seccomp.py: no open, socket, fork, exec or
signal to another process), resource limits (CPU seconds, address space, file size 0, no new
file descriptors or processes), a PEP 578 audit hook (readable refusals; escapable, so never
relied on alone), an empty environment and an empty temporary working directory; the parent
(llm/sandbox/runner.py) bounds wall time and output and kills the whole process group.
Only the standard library is used, so the sandbox runs wherever Linux does (x86_64, aarch64);
elsewhere every call is refused rather than run unconfined.

    python -m llm.sandbox 'print("strawberry".count("r"))'    # the tool's reply and its latency
"""
from llm.sandbox.child import LAYERS, MODULES
from llm.sandbox.runner import Limits, Result, run

__all__ = ['LAYERS', 'Limits', 'MODULES', 'Result', 'run']
