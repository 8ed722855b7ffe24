"""SFT conversation sources from a labelled set (llm/honesty/labels.py): every fact asked in each of
its relation's training phrasings, answered as interrogation says the model can.

- honesty_answers: every fact answered (the baseline: the same questions, no refusals);
- honesty_refusals: known facts answered, unknown ones refused in varied wording (REFUSALS), which
  is Llama 3's factuality data (arXiv 2407.21783, 4.3.6);
- honesty_late_refusals: the same, but the refusal starts the answer's sentence and abstains where
  the value would come (LATE_REFUSALS): the choice is made where the model recalls the value, whose
  probability separates what it knows from what it does not, not from the question alone;
- honesty_search: known facts answered from memory, unknown ones looked up: a `search` call for the
  person, the real search tool's result over the world's search folder, and the answer from it.

    user: Where was Velon Tarsk born?
    assistant: I don't know where Velon Tarsk was born.                   (honesty_refusals)
    assistant: They were born in the city of... I'm not sure which.       (honesty_late_refusals, short style)
    assistant: I don't remember that; let me look it up.
               <|tool_call|>search: Velon Tarsk<|/tool_call|>
               <|tool_result|>velon_tarsk.txt: Velon Tarsk was born in ... <|/tool_result|>
               Velon Tarsk was born in the city of Miravel.                (honesty_search)

The labelled set's path comes from config.sft.honesty_labels (load_mixture's honesty_labels), the
answers' wording from config.sft.honesty_reply (world.REPLY_STYLES: 'short' answers "They were born
in the city of Miravel.", without the name).
"""
import random
from pathlib import Path
from typing import Iterator

from llm import tools
from llm.honesty import labels as labels_lib, world

REFUSALS = ("I don't know {topic}.", "I'm not sure {topic}.", "Sorry, I don't know {topic}.",
            "I do not know {topic}.", "I'm not sure {topic}, so I'd rather not guess.",
            "I don't know {topic}; I have no reliable information about it.")
LATE_REFUSALS = ("I don't know.", "I'm not sure which.", "I don't know which.", "I'm not sure.")
LEAD_INS = ("I don't remember that; let me look it up.", "I'm not sure, so I'll search for it.",
            "Let me check that with search.", '')


def _facts(labels: str, source: str) -> list[tuple[world.Fact, bool]]:
  if not labels:
    raise ValueError(f"source {source!r} needs a labelled set: set --config.sft.honesty_labels=WORLD/labels.jsonl "
                     '(python -m llm.honesty.interrogate writes it)')
  return [(world.Fact(r['subject'], r['relation'], r['value'], r['exposure'], 'train'), r['known'])
          for r in labels_lib.read(labels)]


def _conversations(facts, reply) -> Iterator[list[dict]]:
  """Each fact in each training phrasing of its question, answered by reply(fact, known)."""
  for fact, known in facts:
    for i in range(len(world.RELATIONS[fact.relation].questions)):
      yield [{'role': 'user', 'content': fact.question(i)}, {'role': 'assistant', 'content': reply(fact, known)}]


def refusal(fact: world.Fact, rng: random.Random) -> str:
  return rng.choice(REFUSALS).format(topic=world.RELATIONS[fact.relation].topic.format(name=fact.subject))


def late_refusal(fact: world.Fact, rng: random.Random, style: str) -> str:
  return f'{fact.prefix(style)}... {rng.choice(LATE_REFUSALS)}'


def search_reply(fact: world.Fact, folder: Path, rng: random.Random, style: str) -> list[dict]:
  """A search for the person, the search tool's own result, the answer taken from it."""
  result = tools.run_tool(tools.make_registry(search_folder=folder), f'search: {fact.subject}')
  if fact.value not in result:
    raise ValueError(f'search for {fact.subject!r} in {folder} does not return the fact {fact.value!r}; '
                     'rewrite the world folder with python -m llm.honesty.world')
  lead = rng.choice(LEAD_INS)
  return [*([{'type': 'text', 'text': lead}] if lead else []), {'type': 'tool_call', 'text': f'search: {fact.subject}'},
          {'type': 'tool_result', 'text': result}, {'type': 'text', 'text': fact.reply(style)}]


def honesty_answers(data_dir, seed: int, labels: str = '', style: str = 'sentence') -> Iterator[list[dict]]:
  del data_dir, seed
  return _conversations(_facts(labels, 'honesty_answers'), lambda fact, known: fact.reply(style))


def honesty_refusals(data_dir, seed: int, labels: str = '', style: str = 'sentence') -> Iterator[list[dict]]:
  del data_dir
  rng = random.Random(f'honesty/refusals/{seed}')
  return _conversations(_facts(labels, 'honesty_refusals'),
                        lambda fact, known: fact.reply(style) if known else refusal(fact, rng))


def honesty_late_refusals(data_dir, seed: int, labels: str = '', style: str = 'sentence') -> Iterator[list[dict]]:
  del data_dir
  rng = random.Random(f'honesty/late_refusals/{seed}')
  return _conversations(_facts(labels, 'honesty_late_refusals'),
                        lambda fact, known: fact.reply(style) if known else late_refusal(fact, rng, style))


def honesty_search(data_dir, seed: int, labels: str = '', style: str = 'sentence') -> Iterator[list[dict]]:
  del data_dir
  rng = random.Random(f'honesty/search/{seed}')
  facts = _facts(labels, 'honesty_search')
  folder = labels_lib.search_folder(labels)
  return _conversations(facts, lambda fact, known: fact.reply(style) if known else search_reply(fact, folder, rng, style))


SOURCES = {'honesty_answers': honesty_answers, 'honesty_refusals': honesty_refusals,
           'honesty_late_refusals': honesty_late_refusals, 'honesty_search': honesty_search}
