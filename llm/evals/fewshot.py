"""Few-shot prompting of a base model (in-context learning): solved examples, then a query; the
model's first line of greedy continuation is its answer. Shared by fewshot_arithmetic and
fewshot_translation."""
from llm.evals.context import fitted, mean


def first_lines(ctx, prompts: list[str], max_new_tokens: int) -> list[str | None]:
  """The first line each prompt's greedy continuation writes; None where the prompt does not fit."""
  tok = ctx.tokenizer
  ids = [[tok.bos_id] + p for p in tok.encode_batch(prompts)]
  # bos separates documents in pretraining, so it ends a continuation too.
  outs = ctx.generate(ids, max_new_tokens, temperature=0.0, stop_ids=[tok.bos_id, tok.eos_id])
  return [None if c is None else tok.decode(c.tokens).split('\n')[0].strip() for c in outs]


def prompt(shots: list[tuple[str, str]], query: str, template: str) -> str:
  """The shots and the query in template ('Question: {q}\\nAnswer: {a}'), the query's answer left open."""
  solved = ''.join(template.format(q=q, a=a) + '\n\n' for q, a in shots)
  return solved + template.format(q=query, a='').rstrip()


def accuracy(name: str, right: list[bool | None]) -> dict:
  """{name}_acc over the prompts that fit the context (right: None where one did not; NaN where
  none did, as context.mean has it) and {name}_fitted, how many did: a prompt that did not fit
  made no answer, right or wrong."""
  answered = fitted(right)
  return {f'{name}_acc': mean(answered), f'{name}_fitted': len(answered)}
