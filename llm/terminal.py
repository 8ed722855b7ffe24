"""What llm.chat and llm.sample do in a terminal: print a reply as it streams, read a line that
Ctrl-C interrupts, read escapes in a flag's text."""
import codecs
import os
import select
import sys


# How a tool call and its result show in a streamed reply (a model imported without the chat
# tokens has none of them).
_MARKS = {'<|tool_call|>': '\n  [tool call] ', '<|/tool_call|>': '\n',
          '<|tool_result|>': '  [tool result] ', '<|/tool_result|>': '\n'}


class Printer:
  """Streams a reply (Engine.generate's stream=), each tool call and result on its own line. A
  character whose bytes come in separate tokens (byte fallback), or separate stream calls, is
  held back until it is whole."""

  def __init__(self, tokenizer, out=None):
    self.tok, self.out = tokenizer, out or sys.stdout
    self.marks = {tokenizer.special_id(name): mark for name, mark in _MARKS.items() if tokenizer.has_special(name)}
    self.text_ids = []

  def __call__(self, row, ids):
    for t in ids:
      if t in self.marks:
        self.flush()
        self.out.write(self.marks[t])
      else:
        self.text_ids.append(t)
    self.flush()

  def flush(self):
    text = self.tok.decode(self.text_ids)
    if '\ufffd' not in text[-1:]:
      self.out.write(text)
      self.text_ids = []
    self.out.flush()


class LineReader:
  """input(), but one that Ctrl-C always interrupts. The kernel hands a process's SIGINT to any of
  its threads, and once JAX runs there are dozens; Python then only sets a flag, which its main
  thread reads when it next runs Python code, and input() blocked in read() never does: the chat
  hung at its prompt until Enter. Here the main thread waits in 0.1 s slices, so the
  KeyboardInterrupt comes at once. Lines are cut from the raw bytes of the file descriptor (a
  buffered reader would hide lines already read from select)."""

  def __init__(self, fd: int | None = None, out=None):
    self.fd = sys.stdin.fileno() if fd is None else fd
    self.out = out or sys.stdout
    self.pending = b''

  def __call__(self, prompt: str) -> str:
    """The next line without its newline; EOFError at the end of the input."""
    self.out.write(prompt)
    self.out.flush()
    while b'\n' not in self.pending:
      if not select.select([self.fd], [], [], 0.1)[0]:
        continue
      chunk = os.read(self.fd, 1 << 16)
      if not chunk:
        if not self.pending:
          raise EOFError
        self.pending += b'\n'  # a last line without its newline
      self.pending += chunk
    line, self.pending = self.pending.split(b'\n', 1)
    return line.decode(errors='replace')


def unescape(text: str, flag: str) -> str:
  """The text of --flag with backslash escapes read ('\\n' -> newline); other characters kept as
  typed. A bad escape ('\\x' alone) is a ValueError naming the flag."""
  try:
    return codecs.decode(text.encode('latin-1', 'backslashreplace'), 'unicode_escape')
  except UnicodeDecodeError as e:
    raise ValueError(f'--{flag}={text}: {e.reason}; write a backslash itself as \\\\') from None
