"""What SFT is for, measured at the end of the run by the chat suite's evaluators (llm/evals),
on the run's own held-out conversations:

- well_formed_rate: held-out prompts answered with an assistant turn that ends in <|end|>;
- arith_tool_call_rate, arith_acc_tool, arith_acc_no_tool, arith_copy_acc: held-out 2- and
  3-digit arithmetic word problems, with the calculator and without it;
- phrasing_*: as many (sft.eval_arithmetic) in phrasings the generator never uses
  (llm/evals/arithmetic_phrasing.py), none when that is 0;
- base_fewshot_arith_acc: the pretrained model on the same problems, prompted few-shot.

Greedy decoding throughout, so the numbers are repeatable.
"""
from llm.evals import Context, arithmetic, arithmetic_phrasing, fewshot_arithmetic, heldout, well_formed


def evaluate(config, setup, params, data, base_params) -> dict:
  """params: the SFT model; base_params: the pretrained model it started from."""
  ctx = Context.from_setup(config, setup, params, data.tokenizer)
  sc = config.sft
  problems = heldout.arithmetic(sc.eval_arithmetic, config.seed, heldout.training_questions(config))
  base = Context.from_setup(config, setup, base_params, data.tokenizer)
  # a run that asks no arithmetic (sft.eval_arithmetic=0: honesty, gold) is not asked it in other words either
  phrasing = arithmetic_phrasing.measure(ctx, sc.eval_arithmetic) if sc.eval_arithmetic else {}
  return {**well_formed.rates(ctx, data.heldout, sc.eval_prompts), **arithmetic.measure(ctx, problems), **phrasing,
          'base_fewshot_arith_acc': fewshot_arithmetic.accuracy(base, problems)}
