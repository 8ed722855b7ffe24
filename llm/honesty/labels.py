"""The labelled set: one JSON object a line, a fact of the world's 'train' people with what
interrogation found (llm/honesty/interrogate.py): subject, relation, value, exposure, accuracy (share
of sampled answers that state the value), known (accuracy at or above the threshold), replies.

It lives in its world's folder (WORLD/labels.jsonl by default): the search conversations of
llm/honesty/sft.py read the world's search folder beside it.
"""
import json
from pathlib import Path

from llm.data import sources


def write(records: list[dict], path: Path | str) -> None:
  """Written whole to a temporary file, then renamed: an interrupted run leaves the old labels."""
  path = Path(path)
  tmp = path.with_suffix('.tmp')
  tmp.write_text(''.join(json.dumps(r) + '\n' for r in records), encoding='utf-8')
  tmp.replace(path)


def read(path: Path | str) -> list[dict]:
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'labelled set {path} does not exist; write it with python -m llm.honesty.interrogate '
                            '--workdir=RUN --world=WORLD (or fix --config.sft.honesty_labels)')
  return list(sources.read_jsonl(path))


def search_folder(path: Path | str) -> Path:
  """The search folder of the world the labelled set at path belongs to."""
  folder = Path(path).parent / 'search'
  if not folder.is_dir():
    raise FileNotFoundError(f'no search folder {folder}: the labelled set {path} must sit in its world folder '
                            '(python -m llm.honesty.interrogate --out=WORLD/labels.jsonl)')
  return folder
