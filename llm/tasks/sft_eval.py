"""What SFT is for, measured with the engine at the end of the run:

- well_formed_rate: held-out prompts answered with an assistant turn that ends in <|end|>;
- arith_tool_call_rate, arith_accuracy_tool, arith_accuracy_no_tool: held-out 2- and 3-digit
  arithmetic word problems, with the calculator and without it;
- base_fewshot_accuracy: the pretrained model on the same problems, prompted few-shot.

Greedy decoding throughout, so the numbers are repeatable.
"""
import random

from llm import chat_template, inference, tools
from llm.data import conversations

_FEWSHOT = [('What is 23 + 45?', '68'), ('Compute 12 * 11.', '132'), ('What is 90 - 37?', '53')]


def arithmetic_heldout(count: int, seed: int) -> list[tuple[str, str]]:
  """(question, answer) pairs; a fixed seed far from the training generator's."""
  rng = random.Random(10_000 + seed)
  problems = []
  for i in range(count):
    question, _, answer = conversations.arithmetic_problem(rng, digits=2 + i % 2, ops=1 + (i // 2) % 2)
    problems.append((question, answer))
  return problems


def _first_exchange_prompt(tok, conversation):
  """The conversation up to (not including) its first assistant turn."""
  first = next(i for i, m in enumerate(conversation) if m['role'] == 'assistant')
  return chat_template.render_prompt(tok, conversation[:first])


def _answers(tok, completions) -> list[str | None]:
  texts = [''.join(p['text'] for p in chat_template.parse_assistant(tok, c.tokens) if p['type'] == 'text')
           for c in completions]
  return [conversations.extract_answer(t) for t in texts]


def _engine(setup, params, tok, **kwargs) -> inference.Engine:
  return inference.Engine(setup.model_cfg, params, tok, setup.mesh, rules=setup.rules, **kwargs)


def evaluate(config, setup, params, data, base_params) -> dict:
  """params: the SFT model; base_params: the pretrained model it started from."""
  tok, sc = data.tokenizer, config.sft
  end = tok.special_id('<|end|>')
  with_tools = _engine(setup, params, tok, tools=tools.make_registry())
  no_tools = _engine(setup, params, tok)
  room = lambda prompts: [with_tools.cache_len - len(p) for p in prompts]
  out = {}

  # Well-formed turns on held-out prompts of every source.
  formed, total = 0, 0
  for name, heldout in data.heldout.items():
    prompts = [_first_exchange_prompt(tok, c) for c in heldout[:sc.eval_prompts]]
    prompts = [p for p in prompts if len(p) < with_tools.cache_len - 16]
    if not prompts:
      continue
    outs = with_tools.generate(prompts, room(prompts), temperature=0.0, stop_ids=[end, tok.eos_id])
    ok = sum(c.finish_reason == 'stop' and c.tokens[-1] == end for c in outs)
    out[f'well_formed_rate_{name}'] = ok / len(outs)
    formed, total = formed + ok, total + len(outs)
  out['well_formed_rate'] = formed / max(total, 1)

  # Arithmetic with and without the calculator.
  problems = arithmetic_heldout(sc.eval_arithmetic, config.seed)
  prompt_of = lambda q: chat_template.render_prompt(tok, [{'role': 'user', 'content': q}])
  problems = [(q, a) for q, a in problems if len(prompt_of(q)) < with_tools.cache_len - 16]
  prompts, gold = [prompt_of(q) for q, _ in problems], [a for _, a in problems]
  out['arith_problems'] = len(problems)
  tooled = with_tools.generate(prompts, room(prompts), temperature=0.0, stop_ids=[end, tok.eos_id])
  plain = no_tools.generate(prompts, room(prompts), temperature=0.0, stop_ids=[end, tok.eos_id])
  out['arith_tool_call_rate'] = sum(c.tool_calls > 0 for c in tooled) / max(len(tooled), 1)
  out['arith_accuracy_tool'] = _accuracy(_answers(tok, tooled), gold)
  out['arith_accuracy_no_tool'] = _accuracy(_answers(tok, plain), gold)
  out['base_fewshot_accuracy'] = _base_fewshot(setup, base_params, tok, problems)
  return out


def _accuracy(answers, gold) -> float:
  return sum(a == g for a, g in zip(answers, gold)) / max(len(gold), 1)


def _base_fewshot(setup, base_params, tok, problems) -> float:
  """The pretrained model, before SFT, prompted with three solved examples."""
  engine = _engine(setup, base_params, tok)
  shots = ''.join(f'Question: {q}\nAnswer: {a}\n\n' for q, a in _FEWSHOT)
  prompts = [[tok.bos_id] + tok.encode(f'{shots}Question: {q}\nAnswer:') for q, _ in problems]
  # A prompt the context cannot hold with room to answer counts as a miss.
  fits = [i for i, p in enumerate(prompts) if len(p) + 12 <= engine.cache_len]
  outs = engine.generate([prompts[i] for i in fits], 12, temperature=0.0, stop_ids=[tok.bos_id, tok.eos_id])
  answers = [None] * len(problems)
  for i, c in zip(fits, outs):
    answers[i] = conversations.extract_answer(tok.decode(c.tokens).split('\n')[0])
  return _accuracy(answers, [a for _, a in problems])
