"""Running a trained model without its training machinery.

    run = inference.load('runs/pretrain_small')     # config, tokenizer, parameters only
    engine = run.engine(tools=tools.make_registry())
    engine.generate([ids], max_new_tokens=64, temperature=0.8)

run.py reads a run (parameters without optimizer state), engine.py generates (KV cache, tools),
sampling.py turns logits into tokens, prompt.py fits a prompt into the context.
"""
from llm.inference.engine import Completion, Engine, row_seeds
from llm.inference.prompt import fit_prompt
from llm.inference.run import Run, RunError, abstract_params, load, read_config, restore_params

__all__ = ['Completion', 'Engine', 'Run', 'RunError', 'abstract_params', 'fit_prompt', 'load', 'read_config',
           'restore_params', 'row_seeds']
