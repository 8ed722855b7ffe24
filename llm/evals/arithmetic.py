"""A chat model on held-out arithmetic word problems (llm/evals/heldout.py), greedy:

- arith_acc_tool: with the calculator; arith_acc_no_tool: without any tool;
- arith_tool_call_rate: share of problems (calculator on) where the model called a tool;
- arith_copy_acc: share of its tool calls whose operands all appear in the question (a call
  with a number the question does not hold copied or invented it wrongly).
"""
import re

from llm.data import conversations
from llm.evals import heldout
from llm.evals.context import assistant_text, mean, tool_calls

DEFAULT_COUNT = 200
MAX_NEW_TOKENS = 64
_NUMBER = re.compile(r'\d+(?:\.\d+)?')


def operands_copied(call: str, question: str) -> bool:
  """Whether every number in a tool call ('calculator: 12 * 4') is a number of the question."""
  numbers = set(_NUMBER.findall(question.replace(',', '')))
  return all(n in numbers for n in _NUMBER.findall(call.partition(':')[2].replace(',', '')))


def measure(ctx, problems: list[tuple[str, str]]) -> dict:
  questions, gold = [q for q, _ in problems], [a for _, a in problems]
  tok = ctx.tokenizer
  tooled = ctx.chat(questions, MAX_NEW_TOKENS, tools=True)
  plain = ctx.chat(questions, MAX_NEW_TOKENS, tools=False)
  right = lambda outs: mean(conversations.extract_answer(assistant_text(tok, c)) == a for c, a in zip(outs, gold))
  calls = [(call, q) for c, q in zip(tooled, questions) for call in tool_calls(tok, c)]
  return {'arith_problems': len(problems), 'arith_acc_tool': right(tooled), 'arith_acc_no_tool': right(plain),
          'arith_tool_call_rate': mean(c is not None and c.tool_calls > 0 for c in tooled),
          'arith_copy_acc': mean(operands_copied(call, q) for call, q in calls)}


def evaluate(ctx) -> dict:
  return measure(ctx, heldout.arithmetic(ctx.count(DEFAULT_COUNT), ctx.config.seed,
                                         heldout.training_questions(ctx.config)))
