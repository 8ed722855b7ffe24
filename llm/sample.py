"""Continue a prompt with a trained model (completion and few-shot prompting):

    python -m llm.sample --workdir=DIR --prompt="Once upon a time"
    python -m llm.sample --workdir=DIR --prompt_file=few_shot.txt --temperature=0 --max_new_tokens=8
"""
import sys

from absl import flags

from llm import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory.', required=True)
_PROMPT = flags.DEFINE_string('prompt', '', 'Text to continue.')
_PROMPT_FILE = flags.DEFINE_string('prompt_file', None, 'Read the prompt from this file instead.')
_MAX_NEW = flags.DEFINE_integer('max_new_tokens', 200, 'Tokens to generate per sample.', lower_bound=1)
_TEMPERATURE = flags.DEFINE_float('temperature', 0.8, '0 = greedy.', lower_bound=0.0)
_TOP_K = flags.DEFINE_integer('top_k', 0, 'Keep the k most likely tokens (0 = all).', lower_bound=0)
_TOP_P = flags.DEFINE_float('top_p', 0.95, 'Nucleus sampling mass (1.0 = off, 0 = greedy).', lower_bound=0.0,
                            upper_bound=1.0)
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed (sample i uses seed + i, mod 2**32).', lower_bound=0,
                            upper_bound=2**32 - 1)
_NUM = flags.DEFINE_integer('num_samples', 1, 'Independent samples of the same prompt, decoded as one batch.',
                            lower_bound=1)
_STOP = flags.DEFINE_string('stop', '', 'Cut each sample at the first occurrence of this text (e.g. "\\n").')


def main(argv):
  del argv
  from llm import inference, terminal
  stop = terminal.unescape(_STOP.value, 'stop')  # a bad escape is told now, not after generating
  try:
    prompt = open(_PROMPT_FILE.value).read() if _PROMPT_FILE.value else _PROMPT.value
    run = inference.load(_WORKDIR.value)
  except (OSError, inference.RunError) as e:
    sys.exit(f'llm.sample: {e}')
  tok, engine = run.tokenizer, run.engine()
  prompt_ids, max_new, dropped = inference.fit_prompt([tok.bos_id] + tok.encode(prompt), engine.cache_len,
                                                      _MAX_NEW.value)
  if dropped:
    print(f'llm.sample: the prompt is {len(prompt_ids) + dropped} tokens and the context {engine.cache_len}: '
          f'keeping its last {len(prompt_ids) - 1} (and bos) to leave room for {max_new} new tokens',
          file=sys.stderr)
    prompt = tok.decode(prompt_ids)
  if max_new < _MAX_NEW.value:
    print(f'llm.sample: --max_new_tokens={_MAX_NEW.value} is more than the {engine.cache_len}-token context leaves '
          f'after the {len(prompt_ids)}-token prompt: generating at most {max_new}', file=sys.stderr)
  stream = None
  if _NUM.value == 1 and not _STOP.value:
    sys.stdout.write(prompt)
    stream = terminal.Printer(tok)
  # bos separates documents in training, so it ends a sample too.
  outs = engine.generate([prompt_ids] * _NUM.value, max_new, _TEMPERATURE.value, _TOP_K.value, _TOP_P.value,
                         seed=[(_SEED.value + i) % 2**32 for i in range(_NUM.value)],
                         stop_ids=[tok.bos_id, *tok.stop_ids], stream=stream)
  if stream:
    stream.flush()
    sys.stdout.write('\n')
    return
  for i, out in enumerate(outs):
    text = tok.decode(out.tokens)
    text = text.split(stop)[0] if stop else text
    print(f'--- sample {i}\n{prompt}{text}' if _NUM.value > 1 else prompt + text)


if __name__ == '__main__':
  cli.run(main, 'llm.sample')
