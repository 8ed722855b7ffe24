"""What llm.chat and llm.sample do in a terminal: print a reply as it streams, keep a chat's
history within the context, read escapes in a flag's text."""
import codecs
import sys

from llm import chat_template

MIN_NEW_TOKENS = 16  # room a chat prompt leaves for the reply, at least


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


def fit_history(tokenizer, messages: list[dict], keep: int, context: int) -> tuple[list[dict], list[int]]:
  """(messages, prompt ids): the oldest exchanges after the first `keep` messages (the system
  turn) dropped, a user turn with the assistant's reply to it, until the prompt leaves
  MIN_NEW_TOKENS of the context free. The last message, the one just asked, always stays: when it
  alone does not fit, ValueError says so."""
  messages = list(messages)
  prompt = chat_template.render_prompt(tokenizer, messages)
  while len(prompt) + MIN_NEW_TOKENS > context:
    if len(messages) - keep <= 1:
      raise ValueError(f'the message is {len(prompt)} tokens with the template, and this model\'s context is '
                       f'{context} with {MIN_NEW_TOKENS} kept for the reply: shorten it')
    del messages[keep]
    if messages[keep]['role'] == 'assistant':  # its reply goes with it: a history starts with a user turn
      del messages[keep]
    prompt = chat_template.render_prompt(tokenizer, messages)
  return messages, prompt


def unescape(text: str) -> str:
  """A flag's text with backslash escapes read ('\\n' -> newline); other characters kept as typed."""
  return codecs.decode(text.encode('latin-1', 'backslashreplace'), 'unicode_escape')
