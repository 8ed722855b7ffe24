"""pass@1 and pass@k on problems with checkable answers (llm.rl.tasks.Problem), tools on, fixed
sampler settings and seeds, so two checkpoints are measured alike: k samples per problem at a
fixed temperature; pass@1 is the mean over all samples, pass@k the share of problems with any
right one. GRPO's periodic evaluation and the rl and chat suites call this one function."""
import numpy as np

from llm import chat_template
from llm.evals.context import assistant_text


def pass_at_k(ctx, problems: list, verify, samples: int, temperature: float, max_new_tokens: int) -> dict:
  """{'pass_at_1': ..., f'pass_at_{samples}': ...}; verify(text, problem) -> bool."""
  tok = ctx.tokenizer
  prompts = [chat_template.render_prompt(tok, p.prompt_messages) for p in problems]
  rows = [p for p in prompts for _ in range(samples)]
  outs = ctx.generate(rows, max_new_tokens, tools=True, temperature=temperature, seed=list(range(len(rows))),
                      stop_ids=chat_template.turn_stop_ids(tok))
  correct = np.array([c is not None and verify(assistant_text(tok, c), problems[i // samples])
                      for i, c in enumerate(outs)]).reshape(len(problems), samples)
  return {'pass_at_1': float(correct.mean()), f'pass_at_{samples}': float(correct.any(1).mean())}
