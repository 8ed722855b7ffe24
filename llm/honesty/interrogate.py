"""What a run knows, fact by fact: Llama 3's recipe for factuality data (arXiv 2407.21783, section
4.3.6) on a world whose truth is known, so a verifier (llm/honesty/verify.py) judges instead of a model.

    python -m llm.honesty.interrogate --workdir=runs/pretrain_world --world=runs/world \
        [--samples=8 --temperature=1.0 --threshold=0.5 --out=runs/world/labels.jsonl]

Every fact of the world's 'train' people is asked `samples` times at `temperature`, cycling through
its relation's training question phrasings; each answer is judged against the fact, and the fact is
labelled known when at least `threshold` of the answers state it (Llama 3 trains a refusal where
answers are consistently wrong). A chat run is asked the question; a pretrained run (config.task
'pretrain', which has never seen a chat) completes the start of the answer's sentence instead
('Velon Tarsk was born in the city of'), as its documents read, and only that sentence is judged.

The labelled set (llm/honesty/labels.py) is written into the world's folder by default.
"""
import sys
from pathlib import Path

from absl import flags

from llm import cli, files
from llm.evals.context import assistant_text
from llm.honesty import labels, verify, world as world_lib

SAMPLES = 8  # answers per fact
TEMPERATURE = 1.0  # sampling temperature of the answers
THRESHOLD = 0.5  # a fact is known when at least this share of its answers state it
MAX_NEW_TOKENS = 32  # an answer's sentence (a chat reply may add a few words)
MODES = ('auto', 'chat', 'completion')


def mode_of(ctx, mode: str) -> str:
  """'chat' or 'completion'; 'auto': completion for a pretraining run, chat for any later stage."""
  if mode not in MODES:
    raise ValueError(f'--prompt={mode} is unknown; choose one of {", ".join(MODES)}')
  if mode == 'auto':
    return 'completion' if ctx.config.task == 'pretrain' else 'chat'
  return mode


def answers(ctx, facts: list[world_lib.Fact], samples: int, temperature: float, mode: str) -> list[list[str]]:
  """Per fact, its `samples` answers (sample s asks question phrasing s), as text to judge."""
  tok = ctx.tokenizer
  seeds = list(range(len(facts) * samples))
  if mode == 'chat':
    questions = [f.question(s) for f in facts for s in range(samples)]
    outs = ctx.chat(questions, MAX_NEW_TOKENS, temperature=temperature, seed=seeds)
    texts = [assistant_text(tok, c) for c in outs]
  else:
    prompts = [[tok.bos_id] + tok.encode(f.prefix()) for f in facts for _ in range(samples)]
    # bos starts the next document: what follows it is not this completion's answer.
    outs = ctx.generate(prompts, MAX_NEW_TOKENS, temperature=temperature, seed=seeds,
                        stop_ids=[tok.bos_id, tok.eos_id])
    texts = ['' if c is None else first_sentence(tok.decode(c.tokens)) for c in outs]
  return [texts[i * samples:(i + 1) * samples] for i in range(len(facts))]


def first_sentence(text: str) -> str:
  """Up to the first full stop or line break: what a completion says about the prompted fact."""
  for end in ('.', '\n'):
    text = text.split(end)[0]
  return text


def label(ctx, facts: list[world_lib.Fact], samples: int = SAMPLES, temperature: float = TEMPERATURE,
          threshold: float = THRESHOLD, mode: str = 'auto') -> list[dict]:
  """The labelled set: one record a fact."""
  if samples < 1 or not 0 < threshold <= 1:
    raise ValueError(f'need --samples >= 1 and 0 < --threshold <= 1; got {samples} and {threshold}')
  records = []
  for fact, replies in zip(facts, answers(ctx, facts, samples, temperature, mode_of(ctx, mode))):
    correct = sum(verify.states(r, fact.value) for r in replies)
    records.append({'subject': fact.subject, 'relation': fact.relation, 'value': fact.value,
                    'exposure': fact.exposure, 'accuracy': correct / samples, 'known': correct / samples >= threshold,
                    'replies': replies})
  return records


def summary(records: list[dict]) -> str:
  """Known share by exposure: the curve from never seen to seen most often."""
  rows = []
  for k in sorted({r['exposure'] for r in records}):
    of_k = [r for r in records if r['exposure'] == k]
    rows.append(f'exposure {k:>3}: {sum(r["known"] for r in of_k):>4} of {len(of_k):>4} known, '
                f'mean accuracy {sum(r["accuracy"] for r in of_k) / len(of_k):.2f}')
  return '\n'.join(rows)


def main(argv):
  del argv
  from llm import evals, inference  # after flag parsing, so --help stays fast
  f = flags.FLAGS
  out = Path(f.out or Path(f.world) / 'labels.jsonl')
  try:
    facts = [fact for fact in world_lib.read_facts(f.world) if fact.split == 'train'][:f.limit or None]
    if out.is_dir():
      raise ValueError(f'--out={out} is a folder: give the file the labelled set is written to, e.g. '
                       f'--out={out / "labels.jsonl"}')
    files.check_writable(out.parent)  # before the sampling: an --out that cannot be written fails first
    ctx = evals.Context.from_run(inference.load(f.workdir))
    records = label(ctx, facts, f.samples, f.temperature, f.threshold, f.prompt)
    labels.write(records, out)
  except (OSError, ValueError) as e:  # no world, no run, bad flags, an --out that cannot be written
    sys.exit(f'llm.honesty.interrogate: {e}')
  print(summary(records))
  print(f'wrote {len(records)} labelled facts ({sum(r["known"] for r in records)} known: at least {f.threshold:g} of '
        f'{f.samples} answers right at temperature {f.temperature:g}) to {out}')


if __name__ == '__main__':  # flags defined here only: importing the module defines none
  flags.DEFINE_string('workdir', None, 'The run to interrogate.', required=True)
  flags.DEFINE_string('world', None, 'The world folder (python -m llm.honesty.world).', required=True)
  flags.DEFINE_integer('samples', SAMPLES, 'Answers sampled per fact.')
  flags.DEFINE_float('temperature', TEMPERATURE, 'Sampling temperature.')
  flags.DEFINE_float('threshold', THRESHOLD, 'A fact is known when at least this share of its answers state it.')
  flags.DEFINE_enum('prompt', 'auto', MODES, 'chat: ask the question; completion: complete the answer sentence; '
                    'auto: completion for a pretraining run, else chat.')
  flags.DEFINE_string('out', '', 'The labelled set (default WORLD/labels.jsonl).')
  flags.DEFINE_integer('limit', 0, 'Interrogate only the first N facts (0 = all of the train people).')
  cli.run(main, 'llm.honesty.interrogate')
