"""llm/terminal.py: streamed text printed whole, flag escapes; llm.chat: its history kept within the context, Ctrl-C."""
import collections
import io
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from llm import chat_template, terminal
from test_inference import run_dir, synthetic_tok  # noqa: F401  (fixtures: a run with random parameters)


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
  # More room asked for than the question leaves: it is asked all the same, with what it leaves.
  assert chat_template.fit_history(tok, history, keep=1, context=alone, room=100)[0] == system + history[-1:]


def _exchanges(n: int) -> list[list[dict]]:
  """n exchanges, each reply with a tool call and its result among its parts."""
  return [[{'role': 'user', 'content': f'abc {i}'},
           {'role': 'assistant', 'content': [{'type': 'text', 'text': 'hij ' * i},
                                             {'type': 'tool_call', 'text': f'calculator: {i}*2'},
                                             {'type': 'tool_result', 'text': str(2 * i)},
                                             {'type': 'text', 'text': f'def {i}'}]}] for i in range(n)]


def test_a_chat_keeps_the_most_recent_exchanges_that_leave_the_room(synthetic_tok):
  tok = synthetic_tok
  system, exchanges, question = [{'role': 'system', 'content': 'be brief'}], _exchanges(6), _turns(1)
  latest = lambda n: system + sum(exchanges[len(exchanges) - n:], []) + question  # the last n exchanges
  sizes = [len(chat_template.render_prompt(tok, latest(n))) for n in range(7)]
  for room in (1, 16, 40):
    for context in range(sizes[0] + min(room, 16), sizes[-1] + room + 3, 5):
      n = max(n for n in range(7) if sizes[n] + room <= context or n == 0)
      kept, prompt = chat_template.fit_history(tok, latest(6), keep=1, context=context, room=room)
      assert (kept, prompt) == (latest(n), chat_template.render_prompt(tok, latest(n))), (room, context)
  # Over max_messages (5), whole exchanges go first: 4 messages are left.
  assert chat_template.fit_history(tok, latest(6), keep=1, context=1000, max_messages=5)[0] == latest(1)


def test_fit_history_keeps_the_system_turns_and_the_question_even_over_max_messages(synthetic_tok):
  """Nothing but the question can go: the caller (the server) refuses what is still too many."""
  messages = [{'role': 'system', 'content': 'be brief'}, {'role': 'system', 'content': 'be kind'}] + _turns(1)
  kept, prompt = chat_template.fit_history(synthetic_tok, messages, keep=2, context=1000, max_messages=2)
  assert kept == messages and prompt == chat_template.render_prompt(synthetic_tok, messages)


def test_fit_history_encodes_each_message_a_bounded_number_of_times(synthetic_tok):
  """Not once per exchange dropped: a long history in a short context drops most of it."""
  calls = collections.Counter()

  class Counted:
    def __getattr__(self, name):
      return getattr(synthetic_tok, name)

    def encode(self, text):
      calls[text] += 1
      return synthetic_tok.encode(text)

  history = sum(_exchanges(30), []) + _turns(1)
  kept, _ = chat_template.fit_history(Counted(), history, keep=0, context=80)
  assert len(kept) < len(history) / 4  # most of it went, an exchange at a time
  assert max(calls.values()) <= 2, calls.most_common(3)


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


def test_a_reply_cut_inside_a_character_is_printed_to_its_end(synthetic_tok):
  """A reply that stops (max_new_tokens, a stop token) between a character's bytes: the bytes it
  has are printed as decode() reads them, and nothing after them is lost."""
  tok = synthetic_tok
  ids = tok.encode('ab 日本')[:-1]  # 本 without its last byte
  assert tok.decode(ids) == 'ab 日\ufffd\ufffd'  # each byte of 本 it has
  out = io.StringIO()
  printer = terminal.Printer(tok, out)
  for i in range(0, len(ids), 3):
    printer(0, ids[i:i + 3])
  printer.flush()
  assert out.getvalue() == 'ab 日\ufffd\ufffd'


def test_a_flags_escapes_are_read_and_other_characters_kept():
  assert terminal.unescape('\\n', 'stop') == '\n' and terminal.unescape('a\\tb', 'stop') == 'a\tb'
  assert terminal.unescape('。', 'stop') == '。' and terminal.unescape('é\\n', 'stop') == 'é\n'


def test_a_bad_escape_in_sample_stop_is_one_line_naming_the_flag_before_any_loading(tmp_path, python_env):
  with pytest.raises(ValueError, match=r'^--stop=é\\x: truncated \\xXX escape'):
    terminal.unescape('é\\x', 'stop')
  # The run does not exist: the stop flag is read first.
  r = subprocess.run([sys.executable, '-m', 'llm.sample', f'--workdir={tmp_path / "none"}', '--stop=\\x'],
                     env=python_env, capture_output=True, text=True, timeout=120)
  assert r.returncode != 0 and r.stdout == ''
  assert r.stderr.strip().splitlines() == ['llm.sample: --stop=\\x: truncated \\xXX escape; write a backslash '
                                           'itself as \\\\'], r.stderr


# llm.chat with a real SIGINT sent to itself as the first reply streams, and each turn's history
# (its user messages) logged to stderr.
_CHAT_STOPPED_ONCE = '''
import os, signal, sys
# Ctrl-C as a terminal's program has it, also where the tests run as a background job (which
# inherits SIGINT ignored, and the chat would rightly ignore it too).
signal.signal(signal.SIGINT, signal.default_int_handler)
from llm import chat, chat_template, cli, terminal

class StoppedOnce(terminal.Printer):
  sent = False

  def __call__(self, row, ids):
    super().__call__(row, ids)
    if not StoppedOnce.sent:
      StoppedOnce.sent = True
      os.kill(os.getpid(), signal.SIGINT)

fit_history = chat_template.fit_history

def logged(tokenizer, messages, *args, **kwargs):
  print('history:', [m['content'] for m in messages if m['role'] == 'user'], file=sys.stderr, flush=True)
  return fit_history(tokenizer, messages, *args, **kwargs)

terminal.Printer, chat_template.fit_history = StoppedOnce, logged
sys.argv = ['llm.chat', '--workdir=' + sys.argv[1], '--max_new_tokens=8']
cli.run(chat.main, 'llm.chat')
'''


def test_ctrl_c_ends_a_reply_dropping_its_question_and_at_the_prompt_leaves(run_dir, python_env):
  chat = subprocess.Popen([sys.executable, '-c', _CHAT_STOPPED_ONCE, str(run_dir[0])], env=python_env,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  shown = []
  reader = threading.Thread(target=lambda: shown.extend(iter(lambda: os.read(chat.stdout.fileno(), 1 << 16), b'')),
                            daemon=True)
  reader.start()

  def at_prompt(n: int):
    deadline = time.time() + 120
    while b''.join(shown).count(b'you> ') < n:
      assert chat.poll() is None and time.time() < deadline, (b''.join(shown), chat.stderr.read())
      time.sleep(0.05)

  try:
    at_prompt(1)
    chat.stdin.write(b'abc\n')  # its reply is stopped
    chat.stdin.flush()
    at_prompt(2)
    chat.stdin.write(b'hij\n')
    chat.stdin.flush()
    at_prompt(3)
    chat.send_signal(signal.SIGINT)  # at the prompt: leaves
    assert chat.wait(timeout=60) == 0
  finally:
    chat.kill()
  reader.join(timeout=10)
  errors = chat.stderr.read().decode()
  assert 'Traceback' not in errors, errors
  assert [line for line in errors.splitlines() if line.startswith('history:')] == [
      "history: ['abc']", "history: ['hij']"]  # the stopped question is not asked again
  assert b'[stopped' in b''.join(shown)


# llm.chat over a stand-in model (tests/test_engine.py's) that writes ' ga' whatever it is asked and
# never ends a turn: each reply runs to --max_new_tokens, or to what the context leaves.
_CHAT_LONG_REPLIES = '''
import sys, types
sys.path.insert(0, sys.argv[2])
from llm import chat, cli, inference
import test_engine

def load(workdir):
  run = _load(workdir)
  word = run.tokenizer.encode('ga ga')[-1]  # ' ga'
  engine = test_engine._scripted_engine(run.tokenizer, [0], [word] * 400, {})
  return types.SimpleNamespace(config=run.config, tokenizer=run.tokenizer, engine=lambda tools: engine)

_load, inference.load = inference.load, load
sys.argv = ['llm.chat', '--workdir=' + sys.argv[1], '--max_new_tokens=60', '--temperature=0']
cli.run(chat.main, 'llm.chat')
'''


def test_a_long_chat_still_leaves_each_reply_max_new_tokens(run_dir, python_env):
  """The stand-in's context is 160 tokens: after two 60-token replies the history leaves about 20
  free, and the third reply would be cut there unless the oldest exchange is forgotten."""
  out = subprocess.run([sys.executable, '-c', _CHAT_LONG_REPLIES, str(run_dir[0]), os.path.dirname(__file__)],
                       env=python_env, input='abc\nabc\nabc\n', capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and 'Traceback' not in out.stderr, out.stderr
  replies = [reply.split('\n')[0] for reply in out.stdout.split('assistant> ')[1:]]
  assert [reply.split() for reply in replies] == [['ga'] * 60] * 3, out.stdout
  assert out.stdout.count('[cut: the reply reached its limit of 60 tokens') == 3, out.stdout  # not read as whole
