"""The python tool as the model calls it: registry, dispatch and sanitizing (llm/tools.py), and a
call run inside generation with its result force-fed (llm/inference/engine.py)."""
import os
import sys

import pytest

from conftest import tiny_config
from llm import chat_template, tools
from llm.evals import Context
from llm.sandbox import seccomp
from llm.tokenizer import SPECIAL_TOKENS
from test_engine import Scripted, _scripted_engine, tokenizer  # noqa: F401  (tokenizer is a fixture)
from test_model import init, small_config

pytestmark = pytest.mark.skipif(sys.platform != 'linux' or os.uname().machine not in seccomp.SYSCALLS,
                                reason='the sandbox runs on Linux x86_64 and aarch64 only')


def test_python_is_offered_only_when_asked_for():
  assert sorted(tools.make_registry()) == ['calculator']
  assert sorted(tools.make_registry(python_tool=True)) == ['calculator', 'python']


def test_run_tool_runs_python():
  registry = tools.make_registry(python_tool=True)
  assert tools.run_tool(registry, 'python: print(" strawberry".count("r"))') == '3'
  assert tools.run_tool(registry, 'python: x = 2\nx ** 10') == '1024'  # code may span lines
  assert tools.run_tool(registry, 'python:\n    x = 6\n    print(x * 7)\n') == '42'  # an indented block
  assert tools.run_tool(registry, 'python: print(*" banana".strip())') == 'b a n a n a'
  assert tools.run_tool(registry, 'python: 1 / 0').endswith('ZeroDivisionError: division by zero')
  assert tools.run_tool(tools.make_registry(), 'python: 1').startswith("error: unknown tool 'python'")


def test_python_output_cannot_forge_special_tokens_and_is_bounded():
  registry = tools.make_registry(python_tool=True)
  out = tools.run_tool(registry, f'python: print({"".join(SPECIAL_TOKENS)!r})')
  assert not any(token in out for token in SPECIAL_TOKENS) and out.replace('\u200b', '') == ''.join(SPECIAL_TOKENS)
  flood = tools.run_tool(registry, 'python: while True: print("A" * 100)')
  assert len(flood) <= tools.MAX_TOOL_OUTPUT_CHARS and flood.endswith('(the output limit)')


def test_engine_runs_a_python_call_and_force_feeds_its_result(tokenizer):  # noqa: F811
  sp = tokenizer.special_id
  prompt = chat_template.render_prompt(
      tokenizer, [{'role': 'user', 'content': 'How many times does the letter r appear in the word strawberry?'}])
  call = [sp('<|tool_call|>')] + tokenizer.encode('python: print(" strawberry".count("r"))') + [sp('<|/tool_call|>')]
  result = [sp('<|tool_result|>')] + tokenizer.encode('3') + [sp('<|/tool_result|>')]
  answer = tokenizer.encode('It appears 3 times.') + [sp('<|end|>')]
  # The script's tokens where the result goes are junk: the engine must override them.
  engine = _scripted_engine(tokenizer, prompt, call + [7] * len(result) + answer, tools.make_registry(python_tool=True))
  out = engine.generate([prompt], max_new_tokens=80, temperature=0.0)[0]
  assert out.tokens == call + result + answer
  assert out.forced == [False] * len(call) + [True] * len(result) + [False] * len(answer)
  assert out.tool_calls == 1 and out.finish_reason == 'stop'
  assert chat_template.parse_assistant(tokenizer, out.tokens)[:2] == [
      {'type': 'tool_call', 'text': 'python: print(" strawberry".count("r"))'}, {'type': 'tool_result', 'text': '3'}]


def test_eval_context_offers_python_only_when_asked_and_compiles_one_engine_for_both(tokenizer):  # noqa: F811
  sp = tokenizer.special_id
  question = 'How many times does the letter r appear in the word strawberry?'
  prompt = chat_template.render_prompt(tokenizer, [{'role': 'user', 'content': question}])
  call = [sp('<|tool_call|>')] + tokenizer.encode('python: print(" strawberry".count("r"))') + [sp('<|/tool_call|>')]
  setup, _ = init(small_config('gpt2', max_seq_len=160), vocab=tokenizer.vocab_size)
  script = [0] * (len(prompt) - 1) + call + [sp('<|end|>')] * 100  # after the result, it ends the turn
  ctx = Context(setup.model_cfg, {}, tokenizer, setup.mesh, setup.rules, tiny_config(),
                model=Scripted(tuple(script), tokenizer.vocab_size))
  results = {}
  for tools_arg in ('python', True):
    completion, = ctx.chat([question], 60, tools_arg)
    results[tools_arg] = chat_template.parse_assistant(tokenizer, completion.tokens)[1]['text']
  assert results['python'] == '3' and results[True].startswith("error: unknown tool 'python'")
  assert ctx.engine('python') is ctx.engine(True) is not ctx.engine(False)


def test_the_limit_that_stopped_the_code_is_what_the_model_reads_last(tokenizer):  # noqa: F811
  """A flood of output (escaped special-token strings grow when sanitized) and a CPU limit: the
  status line survives the cut by characters and the cut by tokens the engine feeds."""
  registry = tools.make_registry(python_tool=True)
  for code, status in (('while True: print("The answer is 12345")', '(the output limit)'),
                       ('print("<|" * 900)\nwhile True: pass', '(the CPU limit)')):
    text = tools.run_tool(registry, f'python: {code}')
    assert len(text) <= tools.MAX_TOOL_OUTPUT_CHARS and text.endswith(status)
    fed = chat_template.tool_result_ids(tokenizer, text)
    assert len(fed) <= chat_template.MAX_TOOL_RESULT_TOKENS
    assert tokenizer.decode(fed).endswith(status) and tools.TRUNCATED.strip() in tokenizer.decode(fed)
