"""What llm.chat and llm.sample do in a terminal: print a reply as it streams, read escapes in a
flag's text."""
import codecs
import sys


# How a tool call and its result show in a streamed reply (a model imported without the chat
# tokens has none of them).
_MARKS = {'<|tool_call|>': '\n  [tool call] ', '<|/tool_call|>': '\n',
          '<|tool_result|>': '  [tool result] ', '<|/tool_result|>': '\n'}


class Printer:
  """Streams a reply (Engine.generate's stream=), each tool call and result on its own line. A
  character whose bytes come in separate tokens (byte fallback), or separate stream calls, is
  held back until it is whole; flush() at the end writes what is held, so the reply shows as
  decode() reads it."""

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
    self._write(hold_cut_character=True)

  def flush(self):
    """Writes the text held, a character cut short too: no more of it comes (the reply ended, or a
    tool mark follows), and decode() reads the bytes it has as U+FFFD."""
    self._write(hold_cut_character=False)

  def _write(self, hold_cut_character: bool):
    text = self.tok.decode(self.text_ids)
    if not (hold_cut_character and text.endswith('\ufffd')):
      self.out.write(text)
      self.text_ids = []
    self.out.flush()


def unescape(text: str, flag: str) -> str:
  """The text of --flag with backslash escapes read ('\\n' -> newline); other characters kept as
  typed. A bad escape ('\\x' alone) is a ValueError naming the flag."""
  try:
    return codecs.decode(text.encode('latin-1', 'backslashreplace'), 'unicode_escape')
  except UnicodeDecodeError as e:
    raise ValueError(f'--{flag}={text}: {e.reason}; write a backslash itself as \\\\') from None
