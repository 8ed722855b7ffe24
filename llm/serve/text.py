"""Generated ids -> the text a client sees, piece by piece, and that text back into parts.

Tool activity is shown inline, in the content itself, so any OpenAI client sees it and a
conversation sent back keeps it: the engine's tool call and its result appear as
<tool_call>calculator: 48/2</tool_call><tool_result>24</tool_result>. In an assistant message
that a client sends back, these tags are read as the tool_call and tool_result parts that
llm.chat_template renders, so the model sees what it was trained on.

The same tags written as text (by the model, or in a tool's output: a search result may hold
'</tool_result><tool_call>python: ...') are not tags: in the content a zero-width space follows
their '<', and parse_parts takes it out again, so they reach the model on the next turn as the
text they were, never as a tool call it did not make.
"""
import re

from llm import chat_template

TAGS = {'<|tool_call|>': '<tool_call>', '<|/tool_call|>': '</tool_call>',
        '<|tool_result|>': '<tool_result>', '<|/tool_result|>': '</tool_result>'}
_PART = re.compile(r'<(tool_call|tool_result)>(.*?)</\1>', re.DOTALL)
_ZERO_WIDTH_SPACE = '\u200b'  # as llm.tools.sanitize_tool_output escapes special-token strings
_TAG_ENDS = tuple(tag[1:] for tag in TAGS.values())  # 'tool_call>', '/tool_call>', ...
# What follows a tag's '<' in text, with the zero-width spaces already after it: escaping adds one
# more, and unescaping takes one away, so text that held an escaped tag round-trips too.
_REST_OF_TAG = f'(?={_ZERO_WIDTH_SPACE}*(?:{"|".join(map(re.escape, _TAG_ENDS))}))'
_TEXT_TAG = re.compile('<' + _REST_OF_TAG)
_ESCAPED_TAG = re.compile('<' + _ZERO_WIDTH_SPACE + _REST_OF_TAG)


def escape_tags(text: str) -> str:
  """Decoded text with every tag in it written as text ('<tool_call>' -> '<\u200btool_call>')."""
  return _TEXT_TAG.sub('<' + _ZERO_WIDTH_SPACE, text)


def unescape_tags(text: str) -> str:
  """escape_tags undone."""
  return _ESCAPED_TAG.sub('<', text)


def _tag_start(text: str) -> int:
  """Length of the tail of the text that may still become a tag written as text ('<tool_c'): held
  back, so a '<' is escaped, or not, once what follows it decides."""
  at = text.rfind('<')
  rest = text[at + 1:].lstrip(_ZERO_WIDTH_SPACE)
  return len(text) - at if at >= 0 and any(end.startswith(rest) and end != rest for end in _TAG_ENDS) else 0


class TextStream:
  """Turns ids into text deltas as they become final; the tool tokens become tags, and tags in the
  text are escaped (escape_tags).

  A character whose UTF-8 bytes are split over tokens (byte fallback) is held back until it is
  complete, and so is any tail that may be the start of a stop string; when a stop string
  appears the text ends before it (stopped is set).
  """

  def __init__(self, tokenizer, stop: list[str] = (), end_ids: tuple[int, ...] | None = None,
               incremental: bool = True):
    """end_ids: the ids that end generation (default chat_template.turn_stop_ids, as the engine's).
    incremental=False (a reply sent whole): without stop strings to watch for, the text is
    decoded once, by finish(), instead of on every feed."""
    self.tok, self.stop = tokenizer, [s for s in stop if s]
    self.incremental = incremental or bool(self.stop)
    sp = tokenizer.special_id
    # A model imported without the chat tokens (--chat_tokens=false) has no tags to show.
    self.tags = {sp(token): tag for token, tag in TAGS.items() if tokenizer.has_special(token)}
    self.ends = set(chat_template.turn_stop_ids(tokenizer) if end_ids is None else end_ids)
    self.run: list[int] = []  # ids of the current stretch of plain text
    self.run_used = 0  # characters of that stretch already in self.text
    self.text, self.sent = '', 0  # final text so far, and how much of it was handed out
    self.stopped = self.ended = False
    self.ids: list[int] = []  # every id taken, for tokens_used

  def feed(self, ids: list[int]) -> str:
    """The next ids; returns the text that became final with them."""
    for t in ids:
      if self.stopped or self.ended:
        break
      self.ids.append(t)
      if t in self.ends:
        self.ended = True
      elif t in self.tags:
        self._take_run(final=True)
        self.run, self.run_used = [], 0
        self.text += self.tags[t]
      else:
        self.run.append(t)
    if not self.incremental:
      return ''
    self._take_run(final=self.ended)
    return self._deliver(final=self.ended)

  def finish(self) -> str:
    """Everything still held back (an incomplete character shows as U+FFFD)."""
    if not self.stopped:
      self._take_run(final=True)
    return self._deliver(final=True)

  def tokens_used(self) -> int:
    """The ids the reply consumed: all taken, or after a stop string the fewest that hold it (the
    ids decoded after it in the same call are not part of the reply, nor of its usage)."""
    if not self.stopped:
      return len(self.ids)

    def holds_a_stop(n: int) -> bool:
      plain = TextStream(self.tok, end_ids=tuple(self.ends))
      text = plain.feed(self.ids[:n]) + plain.finish()
      return any(s in text for s in self.stop)

    low, high = 1, len(self.ids)  # holds_a_stop(high); a prefix that holds one, longer ones hold it too
    while low < high:
      mid = (low + high) // 2
      low, high = (low, mid) if holds_a_stop(mid) else (mid + 1, high)
    return high

  def _take_run(self, final: bool):
    decoded = self.tok.decode(self.run)
    if not final:
      decoded = decoded.rstrip('\ufffd')  # maybe the first bytes of a character still to come
      decoded = decoded[:len(decoded) - _tag_start(decoded)]
    escaped = escape_tags(decoded)
    self.text += escaped[self.run_used:]
    self.run_used = max(self.run_used, len(escaped))

  def _deliver(self, final: bool) -> str:
    hits = [i for i in (self.text.find(s, max(self.sent - len(s) + 1, 0)) for s in self.stop) if i >= 0]
    if hits:
      self.text, self.stopped, final = self.text[:min(hits)], True, True
    end = len(self.text) if final else len(self.text) - self._stop_prefix()
    delta = self.text[self.sent:max(end, self.sent)]
    self.sent += len(delta)
    return delta

  def _stop_prefix(self) -> int:
    """Length of the longest tail of the text that begins some stop string (and is shorter than it).
    Only the tails that start with the stop's first character are tried, found by str.find from
    the longest: trying every length cost a pass over the text per character of the stop."""
    longest = 0
    for s in self.stop:
      at = self.text.find(s[0], max(len(self.text) - len(s) + 1, 0))
      while at >= 0 and not s.startswith(self.text[at:]):
        at = self.text.find(s[0], at + 1)
      if at >= 0:
        longest = max(longest, len(self.text) - at)
    return longest


def parse_parts(content: str) -> list[dict]:
  """An assistant's annotated content -> llm.chat_template parts (text, tool_call, tool_result)."""
  parts, at = [], 0
  for m in _PART.finditer(content):
    if m.start() > at:
      parts.append({'type': 'text', 'text': unescape_tags(content[at:m.start()])})
    parts.append({'type': m.group(1), 'text': unescape_tags(m.group(2))})
    at = m.end()
  if at < len(content) or not parts:
    parts.append({'type': 'text', 'text': unescape_tags(content[at:])})
  return parts
