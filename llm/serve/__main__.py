"""python -m llm.serve --workdir=DIR [--host=127.0.0.1] [--port=8000] [--search_folder=...] [--python_tool]
[--nowarmup]"""
import errno
import logging
import socket
import sys
import time
from pathlib import Path

from absl import flags

from llm import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory (an SFT model for chat).', required=True)
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on (loopback by default).')
_PORT = flags.DEFINE_integer('port', 8000, 'Port to listen on.', lower_bound=1, upper_bound=65535)
_SLOTS = flags.DEFINE_integer('slots', 32, 'Requests decoded together at most (rows of the KV cache).')
_QUEUE = flags.DEFINE_integer('queue', 64, 'Requests that may wait for a slot beyond the free ones; past that a 429.')
_STEPS = flags.DEFINE_integer('steps_per_call', 8, 'Decode steps between visits to the host (streaming grain).')
_MAX_MESSAGES = flags.DEFINE_integer('max_messages', 64, 'Messages one chat request may hold.', lower_bound=1)
_SEARCH = flags.DEFINE_string('search_folder', None, 'Folder of .txt/.md files for the search tool.')
_PYTHON = flags.DEFINE_bool('python_tool', False, 'Offer the python tool (model-written code, run in llm/sandbox).')
_WARMUP = flags.DEFINE_bool('warmup', True, 'Compile every batch size and prompt-length shape before serving, '
                            'so no request waits on a compilation (--nowarmup: start at once).')


def _listen(host: str, port: int) -> socket.socket:
  """The server's socket, bound as uvicorn binds it (SO_REUSEADDR), before the model loads and
  compiles: a port in use is told at once, not after the warm-up."""
  sock = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind((host, port))
  except OSError as e:
    sock.close()
    if e.errno == errno.EADDRINUSE:
      sys.exit(f'llm.serve: port {port} on {host} is in use: stop what listens there or pick another --port')
    sys.exit(f'llm.serve: cannot listen on port {port} of {host}: {e.strerror or e} (check --host and --port)')
  return sock


def main(argv):
  del argv
  if min(_SLOTS.value, _QUEUE.value, _STEPS.value) < 1:
    sys.exit('llm.serve: --slots, --queue and --steps_per_call must be >= 1')
  sock = _listen(_HOST.value, _PORT.value)
  try:
    api, batcher = _load()
  except KeyboardInterrupt:  # the batcher's thread has not started: nothing to stop
    sys.exit('llm.serve: interrupted while loading and compiling the model; nothing was served')
  logging.getLogger('llm.serve').info('serving %s on http://%s:%d', _WORKDIR.value, _HOST.value, _PORT.value)
  try:
    _server(api).run(sockets=[sock])
  except KeyboardInterrupt:  # uvicorn passes on the Ctrl-C it shut down for (uvicorn.run drops it too)
    pass
  finally:  # a second Ctrl-C ends uvicorn without the app's shutdown, where the batcher is closed
    batcher.close()


def _server(api):
  """uvicorn's server for the app. The first Ctrl-C with requests under way says that it waits for
  them (uvicorn's own line is INFO, below the warnings it logs); a second one ends it in one line:
  the requests it then stops waiting for are cancelled as its loop closes, which uvicorn would log
  each with a traceback."""
  import uvicorn

  class Server(uvicorn.Server):

    def handle_exit(self, sig, frame):
      under_way = 0 if self.should_exit else len(self.server_state.tasks)  # a task per request in flight
      super().handle_exit(sig, frame)
      if under_way:
        print(f'llm.serve: finishing {under_way} request{"s" * (under_way != 1)} under way; Ctrl-C again to stop '
              'at once', file=sys.stderr, flush=True)
      if self.force_exit and not logging.getLogger('uvicorn.error').disabled:
        logging.getLogger('uvicorn.error').disabled = True
        print('llm.serve: stopping without waiting for the requests under way', file=sys.stderr, flush=True)

  return Server(uvicorn.Config(api, log_level='warning'))


def _load():
  """The app over the run's batcher (warmed up unless --nowarmup), and that batcher."""
  from llm import inference, tools
  from llm.serve.app import create_app, has_chat_tokens
  from llm.serve.batcher import Batcher
  try:
    run = inference.load(_WORKDIR.value)
  except inference.RunError as e:
    sys.exit(f'llm.serve: {e}')
  chat = has_chat_tokens(run.tokenizer)  # else a base model: plain completions, no tools
  if not chat and (_SEARCH.value or _PYTHON.value):
    sys.exit('llm.serve: --search_folder and --python_tool need the chat tokens, which this model was imported '
             'without (--chat_tokens=false): leave them out')
  engine = run.engine(tools=tools.make_registry(_SEARCH.value, _PYTHON.value) if chat else None)
  batcher = Batcher(engine, max_slots=_SLOTS.value, max_queue=_QUEUE.value, steps_per_call=_STEPS.value)
  if _WARMUP.value:
    start = time.perf_counter()
    batcher.warm_up()
    logging.getLogger('llm.serve').info('compiled every shape in %.1f s', time.perf_counter() - start)
  api = create_app(batcher, run.tokenizer, Path(_WORKDIR.value).resolve().name, max_messages=_MAX_MESSAGES.value)
  return api, batcher


if __name__ == '__main__':
  cli.run(main, 'llm.serve')
