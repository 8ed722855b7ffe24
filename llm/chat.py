"""Chat with a model in the terminal: python -m llm.chat --workdir=DIR

Turns are rendered with llm.chat_template (the same renderer SFT trains on); the assistant may
call tools (calculator, search when --search_folder is set, python with --python_tool), shown as
they run.
Commands: /reset starts over, /quit (or Ctrl-D, or Ctrl-C at the prompt) leaves. Ctrl-C during a
reply ends it, and the question it answered is dropped from the history.
"""
import sys

from absl import flags

from llm import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory (an SFT model).', required=True)
_SYSTEM = flags.DEFINE_string('system', '', 'Optional system message.')
_SEARCH = flags.DEFINE_string('search_folder', None, 'Folder of .txt/.md files for the search tool.')
_PYTHON = flags.DEFINE_bool('python_tool', False, 'Offer the python tool (model-written code, run in llm/sandbox).')
_TEMPERATURE = flags.DEFINE_float('temperature', 0.6, '0 = greedy.', lower_bound=0.0)
_TOP_P = flags.DEFINE_float('top_p', 0.9, 'Nucleus sampling mass (1.0 = off, 0 = greedy).', lower_bound=0.0, upper_bound=1.0)
_MAX_NEW = flags.DEFINE_integer('max_new_tokens', 256, 'Longest reply, in tokens: the oldest exchanges are '
                                  'forgotten to leave it room (at most half the context).', lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed (advanced every turn).', lower_bound=0,
                            upper_bound=2**32 - 1)


def main(argv):
  del argv
  from llm import chat_template, inference, terminal, tools
  try:
    run = inference.load(_WORKDIR.value)
  except inference.RunError as e:
    sys.exit(f'llm.chat: {e}')
  if run.config.task == 'pretrain':  # warned, not refused: a base model's chat is still worth a look
    print(f'llm.chat: {_WORKDIR.value} is a pretraining run (config.task=pretrain), never trained on the chat '
          "template's turns: its replies may not follow them. Chat with an SFT run of it (python -m llm.main "
          f'--config=configs/sft_small.py --config.init_from={_WORKDIR.value} --workdir=...), or continue text '
          'with python -m llm.sample', file=sys.stderr)
  tok, engine = run.tokenizer, run.engine(tools=tools.make_registry(_SEARCH.value, _PYTHON.value))
  system = [{'role': 'system', 'content': _SYSTEM.value}] if _SYSTEM.value else []
  messages, seed = list(system), _SEED.value
  print(f'chatting with {_WORKDIR.value} ({engine.cache_len}-token context); /reset, /quit')
  while True:
    try:
      line = input('\nyou> ').strip()
    except (EOFError, KeyboardInterrupt):
      break
    if line == '/quit':
      break
    if line == '/reset' or not line:
      messages = list(system) if line else messages
      continue
    try:  # the oldest exchanges are forgotten to leave the reply --max_new_tokens, or half the context
      asked, prompt = chat_template.fit_history(tok, messages + [{'role': 'user', 'content': line}], len(system),
                                                engine.cache_len, room=min(_MAX_NEW.value, engine.cache_len // 2))
    except ValueError as e:
      print(f'llm.chat: {e}')
      continue
    sys.stdout.write('assistant> ')
    printer = terminal.Printer(tok)
    try:
      out = engine.generate([prompt], min(_MAX_NEW.value, engine.cache_len - len(prompt)),
                            _TEMPERATURE.value, top_p=_TOP_P.value, seed=seed, stream=printer)[0]
    except KeyboardInterrupt:  # the history stays as it was: a half reply would be taken as the answer
      print('\n[stopped; the question is dropped]')
      continue
    finally:
      seed = (seed + 1) % 2**32  # the engine's seeds are uint32
    printer.flush()
    if out.finish_reason == 'length':  # else a reply cut short reads as a whole one
      print(f'\n[cut: the reply reached its limit of {len(out.tokens)} tokens (--max_new_tokens, or what the '
            'context leaves)]')
    messages = asked + [{'role': 'assistant', 'content': chat_template.parse_assistant(tok, out.tokens)}]
  print()


if __name__ == '__main__':
  cli.run(main, 'llm.chat')
