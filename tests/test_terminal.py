"""llm/terminal.py: streamed text printed whole, flag escapes; and the history llm.chat keeps within the context."""
import io

import pytest

from llm import chat_template, terminal
from test_inference import synthetic_tok  # noqa: F401  (fixture)


def _turns(n: int) -> list[dict]:
  return [{'role': 'user' if i % 2 == 0 else 'assistant', 'content': f'abc def ghi {i}'} for i in range(n)]


def test_a_chat_forgets_whole_exchanges_oldest_first_and_never_the_question(synthetic_tok):
  tok = synthetic_tok
  system = [{'role': 'system', 'content': 'be brief'}]
  history = system + _turns(5)  # user, assistant, user, assistant, the new user turn
  whole = len(chat_template.render_prompt(tok, history))
  kept, prompt = chat_template.fit_history(tok, history, keep=1, context=whole + chat_template.MIN_NEW_TOKENS)
  assert kept == history and prompt == chat_template.render_prompt(tok, history)
  kept, prompt = chat_template.fit_history(tok, history, keep=1, context=whole + chat_template.MIN_NEW_TOKENS - 1)
  assert kept == system + history[3:]  # the first exchange gone, user and reply together
  assert prompt == chat_template.render_prompt(tok, kept)
  alone = len(chat_template.render_prompt(tok, system + history[-1:])) + chat_template.MIN_NEW_TOKENS
  assert chat_template.fit_history(tok, history, keep=1, context=alone)[0] == system + history[-1:]
  with pytest.raises(ValueError, match=r"the message is \d+ tokens .* context is \d+ .*: shorten it"):
    chat_template.fit_history(tok, history, keep=1, context=alone - 1)  # not even the question fits


def test_streamed_text_is_printed_whole_across_stream_calls(synthetic_tok):
  tok = synthetic_tok
  ids = tok.encode('ab 日本 cd')
  assert len(ids) > len('ab 日本 cd'.split())  # the CJK characters come as several byte tokens
  out = io.StringIO()
  printer = terminal.Printer(tok, out)
  for i in range(0, len(ids), 3):  # the engine streams a few tokens at a time
    printer(0, ids[i:i + 3])
  printer.flush()
  assert out.getvalue() == 'ab 日本 cd'


def test_a_flags_escapes_are_read_and_other_characters_kept():
  assert terminal.unescape('\\n') == '\n' and terminal.unescape('a\\tb') == 'a\tb'
  assert terminal.unescape('。') == '。' and terminal.unescape('é\\n') == 'é\n'
