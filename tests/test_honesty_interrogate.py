"""Interrogation (llm/honesty/interrogate.py) of a scripted model whose knowledge is known: facts seen
16 times or more are always answered right, facts seen 4 times on every other sample, the rest never."""
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from llm.honesty import interrogate, labels, world as world_lib
from test_evals import ScriptedChat, make_ctx, tok  # noqa: F401 (tok is a fixture)

FACTS = [f for f in world_lib.build(seed=2, people=10).facts if f.split == 'train']


def knows(prompt: str, seed: int, asked: list):
  """The scripted model: right per the rule above; otherwise a value of another fact."""
  fact = next(f for f in FACTS if prompt.endswith(f.prefix()) or any(f.question(i) in prompt for i in range(3)))
  asked.append(prompt)
  right = fact.exposure >= 16 or (fact.exposure == 4 and seed % 2 == 0)
  return fact.reply() if right else fact.reply().replace(fact.value, 'Zzyzx')


@pytest.mark.parametrize('threshold, known_from', [(0.5, 4), (0.75, 16)])
def test_labels_follow_the_share_of_right_answers(tok, threshold, known_from):
  asked = []
  ctx = ScriptedChat(tok, lambda prompt, tools, seed: knows(prompt, seed, asked))
  records = interrogate.label(ctx, FACTS, samples=4, temperature=1.0, threshold=threshold, mode='chat')
  assert [r['known'] for r in records] == [f.exposure >= known_from for f in FACTS]
  assert [r['accuracy'] for r in records] == [1.0 if f.exposure >= 16 else 0.5 if f.exposure == 4 else 0.0
                                              for f in FACTS]
  assert {(r['subject'], r['relation'], r['value'], r['exposure']) for r in records} == {
      (f.subject, f.relation, f.value, f.exposure) for f in FACTS}
  for phrasing in range(3):  # the four samples of a fact ask its three training phrasings
    assert sum(FACTS[0].question(phrasing) in p for p in asked[:4]) == (2 if phrasing == 0 else 1)


def test_a_pretrained_run_completes_the_answer_sentence(tok):
  asked = []
  ctx = ScriptedChat(tok, lambda prompt, tools, seed: knows(prompt, seed, asked).split(' ', 2)[2] + ' More text.')
  assert interrogate.mode_of(ctx, 'auto') == 'completion'  # tiny_config's task is pretrain
  records = interrogate.label(ctx, FACTS[:5], samples=2, threshold=0.5)
  assert all(p.endswith(f.prefix()) and '<|user|>' not in p for p, f in zip(asked[::2], FACTS))
  assert [r['known'] for r in records] == [f.exposure >= 4 for f in FACTS[:5]]
  assert all('More text' not in reply for r in records for reply in r['replies'])  # the first sentence only


def test_labels_round_trip_and_a_missing_file_names_the_fix(tmp_path):
  records = [{'subject': 'A B', 'known': True}, {'subject': 'C D', 'known': False}]
  labels.write(records, tmp_path / 'labels.jsonl')
  assert labels.read(tmp_path / 'labels.jsonl') == records
  with pytest.raises(FileNotFoundError, match='python -m llm.honesty.interrogate'):
    labels.read(tmp_path / 'nope.jsonl')


def test_the_command_refuses_a_folder_that_is_not_a_world(tmp_path, python_env):
  out = subprocess.run([sys.executable, '-m', 'llm.honesty.interrogate', f'--workdir={tmp_path}',
                        f'--world={tmp_path}'], cwd=ROOT, env=python_env, capture_output=True, text=True)
  assert out.returncode != 0 and 'is not a world' in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_the_command_refuses_an_out_that_is_a_folder_before_loading_the_run(tmp_path, python_env):
  """It failed on writing, after all the sampling, and left WORLD.tmp beside the folder."""
  world = tmp_path / 'world'
  world_lib.write(world_lib.build(seed=2, people=10), world)
  out = subprocess.run([sys.executable, '-m', 'llm.honesty.interrogate', f'--workdir={tmp_path / "no_run"}',
                        f'--world={world}', f'--out={world}'], cwd=ROOT, env=python_env, capture_output=True, text=True)
  assert out.returncode == 1 and 'Traceback' not in out.stderr, out.stderr
  assert out.stderr.strip().splitlines()[-1] == (
      f'llm.honesty.interrogate: --out={world} is a folder: give the file the labelled set is written to, e.g. '
      f'--out={world}/labels.jsonl')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['world']


def interrogate_command(workdir, world, out, python_env) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'llm.honesty.interrogate', f'--workdir={workdir}', f'--world={world}',
                         f'--out={out}', '--limit=2', '--samples=1'], cwd=ROOT, env=python_env, capture_output=True,
                        text=True)


def test_the_command_writes_its_labels_into_a_folder_not_made_yet(pretrained, tmp_path, python_env):
  world_lib.write(world_lib.build(seed=2, people=10), tmp_path / 'world')
  out = tmp_path / 'new' / 'folder' / 'labels.jsonl'
  proc = interrogate_command(pretrained, tmp_path / 'world', out, python_env)
  assert proc.returncode == 0, proc.stderr
  assert [r['subject'] for r in labels.read(out)] == [f.subject for f in FACTS[:2]]


def test_the_command_refuses_an_out_it_cannot_write_in_one_line(pretrained, tmp_path, python_env):
  world_lib.write(world_lib.build(seed=2, people=10), tmp_path / 'world')
  (tmp_path / 'a_file').write_text('')
  proc = interrogate_command(pretrained, tmp_path / 'world', tmp_path / 'a_file' / 'labels.jsonl', python_env)
  assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert proc.stderr.startswith('llm.honesty.interrogate: ') and 'a_file' in proc.stderr


class Bigram(nn.Module):
  """A stand-in model whose next token is a function of the current one: `follows` (id, next id)
  pairs, eos after any other token."""
  follows: tuple
  vocab: int
  eos: int

  def __call__(self, tokens_BxT, positions_BxT=None, cache=None, advance_B=None):
    table_V = np.full(self.vocab, self.eos)
    table_V[[a for a, _ in self.follows]] = [b for _, b in self.follows]
    logits_BxTxV = 30.0 * jax.nn.one_hot(jnp.asarray(table_V)[tokens_BxT], self.vocab)
    return logits_BxTxV, dict(cache, lengths=cache['lengths'] + advance_B)


def test_a_completion_that_ends_its_document_is_not_judged_on_the_next_one(tok):
  """A pretrained run ends a document with the next one's bos; what follows it is another document
  (which may well state the value), not this completion's answer."""
  def chain(fact):
    return [tok.encode(fact.prefix())[-1], tok.bos_id] + tok.encode(' ' + fact.value + '.')

  fact = next(f for f in FACTS if len(set(chain(f))) == len(chain(f)))  # a chain, not a loop
  ctx = make_ctx(tok, Bigram(tuple(zip(chain(fact), chain(fact)[1:])), tok.vocab_size, tok.eos_id))
  [record] = interrogate.label(ctx, [fact], samples=1, temperature=0.0, threshold=0.5)
  assert record['replies'] == [''] and not record['known']
