"""Print one SFT conversation as the model trains on it, to check the loss mask by eye:

    python -m llm.data.show --source=gsm8k --index=0 --tokenizer=PATH.model [--tokens]
    python -m llm.data.show --source=identity --config=configs/sft_tools.py --tokenizer=BASE/tokenizer.model
    python -m llm.data.show --source=identity --workdir=SFT_RUN --tokenizer=SFT_RUN/tokenizer.model
    python -m llm.data.show --source=honesty_search --honesty_labels=WORLD/labels.jsonl --tokenizer=...

Text the assistant produces (trained, mask 1) prints plain; everything else (mask 0: bos, role
tokens, user text, tool results) prints dim on a terminal and inside [[ ]] otherwise. Special
tokens print by name. --tokens lists every token with its id and mask instead.
"""
import itertools
import sys
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from llm import chat_template, cli
from llm.data import conversations, sources
from llm.honesty import sft as honesty_sft, world
from llm.tokenizer import SPECIAL_TOKENS, load_any

_SOURCE = flags.DEFINE_string('source', 'gsm8k', 'A name in llm.data.conversations.SOURCES.')
_INDEX = flags.DEFINE_integer('index', 0, 'Which conversation of the source, counting from 0.', lower_bound=0)
_TOKENIZER = flags.DEFINE_string('tokenizer', None, "A run's tokenizer file (tokenizer.model, or tokenizer.hf.json).",
                                 required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'Data dir ("" = $LLM_DATA_DIR, ./data, ../shared/data).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the generated sources.')
_MAX_TOKENS = flags.DEFINE_integer('max_tokens', 0, 'Fit the conversation into this many tokens first (0 = no).',
                                  lower_bound=0)
_TOKENS = flags.DEFINE_bool('tokens', False, 'One line per token (position, id, mask, piece).')
# identity states the facts of the SFT run it trains (llm.evals.identity.run_facts of its config): the
# tools among them are those its mixture teaches, which only the SFT's config tells, not its base run's.
_CONFIG = config_flags.DEFINE_config_file('config', None, 'For --source=identity: the SFT config whose conversations '
                                          'to show (configs/sft_tools.py: they name the tools its mixture teaches).',
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string('workdir', '', 'For --source=identity, instead of --config: a run whose config.json '
                               'states the facts (an SFT run: the tools its mixture taught; a base run: only the '
                               'calculator, as an SFT of no other tool source states them).')
_HONESTY_LABELS = flags.DEFINE_string('honesty_labels', '', 'For the honesty_* sources: the labelled set they ask '
                                      "(WORLD/labels.jsonl, as SFT's --config.sft.honesty_labels).")
_HONESTY_REPLY = flags.DEFINE_enum('honesty_reply', 'sentence', world.REPLY_STYLES,
                                   "For the honesty_* sources: how answers are worded (SFT's config.sft.honesty_reply).")

_DIM, _RESET = '\033[2m', '\033[0m'


def spans(tokenizer, ids: list[int], mask: list[int]) -> list[tuple[str, int]]:
  """(text, mask) runs: consecutive ordinary tokens of equal mask decoded together (so characters
  split over byte tokens come out whole), each special token alone under its own name."""
  specials = {tokenizer.bos_id} | {tokenizer.special_id(name) for name in SPECIAL_TOKENS}
  runs, pending, pending_mask = [], [], None

  def flush():
    if pending:
      runs.append((tokenizer.decode(pending), pending_mask))
      pending.clear()

  for token, trained in zip(ids, mask):
    if token in specials or trained != pending_mask:
      flush()
    if token in specials:
      runs.append((tokenizer.id_to_piece(token), trained))
    else:
      pending.append(token)
    pending_mask = trained
  flush()
  return runs


def format_spans(runs: list[tuple[str, int]], color: bool) -> str:
  """Joined runs, each stretch of untrained text dimmed (color) or bracketed in [[ ]]."""
  out = []
  for trained, group in itertools.groupby(runs, key=lambda run: run[1]):
    text = ''.join(text for text, _ in group)
    out.append(text if trained else (f'{_DIM}{text}{_RESET}' if color else f'[[{text}]]'))
  return ''.join(out)


def identity_facts(tokenizer) -> conversations.IdentityFacts:
  """What the identity source states about the run of --config or --workdir, as its SFT writes it."""
  from llm import inference, model as model_lib  # pylint: disable=import-outside-toplevel
  from llm.evals import identity  # pylint: disable=import-outside-toplevel
  # inference.RunError (a ValueError): no run in --workdir
  config = _CONFIG.value if _CONFIG.value is not None else inference.read_config(_WORKDIR.value)
  return identity.run_facts(config, model_lib.ModelConfig.from_config(config.model, tokenizer.vocab_size))


def main(argv):
  del argv
  name = _SOURCE.value
  if name not in conversations.SOURCES:
    raise ValueError(f'--source={name!r} is unknown; use one of {sorted(conversations.SOURCES)}')
  if name == 'identity' and (_CONFIG.value is None) == (not _WORKDIR.value):
    raise ValueError("--source=identity states the facts of the SFT run it trains (size, context, data, tools): give "
                     'one of --config=SFT_CONFIG (e.g. configs/sft_tools.py) and --workdir=RUN (an SFT run)')
  if name in honesty_sft.SOURCES and not Path(_HONESTY_LABELS.value).is_file():
    raise ValueError(f'--source={name} asks the facts of a labelled set, and --honesty_labels={_HONESTY_LABELS.value!r} '
                     'is no file: give WORLD/labels.jsonl (python -m llm.honesty.interrogate writes it)')
  if not Path(_TOKENIZER.value).is_file():
    raise ValueError(f'--tokenizer={_TOKENIZER.value} is not a file; give a run\'s tokenizer file, DIR/tokenizer.model '
                     '(or DIR/tokenizer.hf.json of an imported model)')
  tokenizer = load_any(_TOKENIZER.value)
  data_dir = sources.find_data_dir(_DATA_DIR.value, flag='--data_dir')
  facts = identity_facts(tokenizer) if name == 'identity' else None
  source = conversations.bound_source(name, facts, _HONESTY_LABELS.value, _HONESTY_REPLY.value)
  stream = source(data_dir, _SEED.value)
  conversation = next(itertools.islice(stream, _INDEX.value, None), None)
  if conversation is None:
    raise ValueError(f'--index={_INDEX.value}: source {name} has fewer conversations; give a smaller index')
  if _MAX_TOKENS.value:
    conversation = conversations.fit(conversation, tokenizer, _MAX_TOKENS.value)
    if conversation is None:
      print(f'conversation {_INDEX.value} does not fit in {_MAX_TOKENS.value} tokens')
      return
  ids, mask = chat_template.render(tokenizer, conversation)
  print(f'{name}[{_INDEX.value}]: {len(ids)} tokens, {sum(mask)} trained')
  if _TOKENS.value:
    for position, (token, trained) in enumerate(zip(ids, mask)):
      print(f'{position:5d} {token:6d} {trained} {tokenizer.id_to_piece(token)!r}')
  else:
    print(format_spans(spans(tokenizer, ids, mask), color=sys.stdout.isatty()))


if __name__ == '__main__':
  cli.run(main, 'llm.data.show', config=True)
