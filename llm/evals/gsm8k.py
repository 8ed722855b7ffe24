"""GSM8K test problems, calculator on: gsm8k_pass1_tools (mean over K samples) and
gsm8k_pass<K>_tools, K samples per problem at temperature 1.0 (llm/evals/pass_at_k.py)."""
from llm.data import gsm8k as gsm8k_data
from llm.evals import heldout, pass_at_k
from llm.rl import tasks as rl_tasks

DEFAULT_COUNT = 1319  # the whole test split
SAMPLES = 4
TEMPERATURE = 1.0
MAX_NEW_TOKENS = 256


def evaluate(ctx) -> dict:
  problems = heldout.gsm8k_test(ctx.data_dir(gsm8k_data.FOLDER), ctx.count(DEFAULT_COUNT))
  result = pass_at_k.pass_at_k(ctx, problems, lambda text, p: rl_tasks.answers_match(text, p.answer), SAMPLES,
                               TEMPERATURE, MAX_NEW_TOKENS)
  return {'gsm8k_problems': len(problems), 'gsm8k_pass1_tools': result['pass_at_1'],
          f'gsm8k_pass{SAMPLES}_tools': result[f'pass_at_{SAMPLES}']}
