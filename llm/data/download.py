"""Fetch a large pretraining corpus on a connected machine, into the layout llm.data reads.

    python -m llm.data.download --dataset=fineweb_edu --out=data/fineweb_edu --shards=2   # 2 of 14, ~1.4B tokens
    python -m llm.data.download --dataset=tinystories --out=data/tinystories

Then train with --config.data.dir=data --config.data.source=fineweb_edu (format 'jsonl' reads the
folder's shards, field 'text'; configs/pretrain_gpt2_124m.py sets these), or
source=tinystories/train.txt (format 'text_file', separator '<|endoftext|>'). Downloads resume: finished files are skipped, partial ones are redone.
`--base_url` points at a mirror (or a file:// folder, which is how the tests run it).
"""
import gzip
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from absl import flags, logging

from llm import cli, files

DATASETS = {
    # FineWeb-Edu, 10B-token sample: parquet shards of ~2 GB, column 'text'.
    'fineweb_edu': dict(base_url='https://huggingface.co/datasets/HuggingFaceFW/fineweb-edu/resolve/main/sample/10BT',
                        files=[f'{i:03d}_00000.parquet' for i in range(14)]),
    # TinyStories V2 (GPT-4 stories), plain text with <|endoftext|> between stories.
    'tinystories': dict(base_url='https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main',
                        files=['TinyStoriesV2-GPT4-train.txt', 'TinyStoriesV2-GPT4-valid.txt']),
}


def fetch(url: str, dest: Path):
  """Downloads to dest via a .partial file, so an interrupted download never looks finished."""
  if dest.exists():
    logging.info('have %s', dest)
    return
  partial = dest.with_name(dest.name + '.partial')
  logging.info('fetching %s', url)
  try:
    response = urllib.request.urlopen(url)
  except urllib.error.URLError as e:  # HTTPError too: no network, a wrong --base_url, a moved file
    raise ValueError(f'could not fetch {url} ({e.reason}): check the network, or --base_url for a mirror') from None
  with response, partial.open('wb') as f:
    shutil.copyfileobj(response, f, length=1 << 20)
  partial.rename(dest)


def parquet_to_jsonl(parquet: Path, dest: Path, column: str = 'text'):
  """One gzip JSONL document per parquet row, the format llm.data's 'jsonl' reader takes."""
  try:
    import pyarrow.parquet as pq
  except ImportError as e:
    raise ImportError('reading parquet needs pyarrow: pip install pyarrow') from e
  partial = dest.with_name(dest.name + '.partial')
  with gzip.open(partial, 'wt', encoding='utf-8') as out:
    for batch in pq.ParquetFile(parquet).iter_batches(columns=[column]):
      for text in batch.column(column).to_pylist():
        out.write(json.dumps({'text': text}) + '\n')
  partial.rename(dest)


def download(dataset: str, out: Path, shards: int = 0, base_url: str | None = None) -> list[Path]:
  spec = DATASETS[dataset]
  out.mkdir(parents=True, exist_ok=True)
  names = spec['files'][:shards] if shards else spec['files']
  results = []
  for name in names:
    raw = out / 'raw' / name if name.endswith('.parquet') else out / _local_name(name)
    raw.parent.mkdir(parents=True, exist_ok=True)
    fetch(f'{base_url or spec["base_url"]}/{name}', raw)
    if name.endswith('.parquet'):
      jsonl = out / name.replace('.parquet', '.jsonl.gz')
      if not jsonl.exists():
        parquet_to_jsonl(raw, jsonl)
      results.append(jsonl)
    else:
      results.append(raw)
  return results


def _local_name(name: str) -> str:
  return {'TinyStoriesV2-GPT4-train.txt': 'train.txt', 'TinyStoriesV2-GPT4-valid.txt': 'valid.txt'}.get(name, name)


def main(argv):
  del argv
  f = flags.FLAGS
  files.check_writable(f.out)  # before the downloads
  for path in download(f.dataset, Path(f.out), f.shards, f.base_url):
    print(path)


if __name__ == '__main__':  # flags defined here only: importing the module (the tests do) defines none
  flags.DEFINE_enum('dataset', None, list(DATASETS), 'Which corpus.', required=True)
  flags.DEFINE_string('out', None, 'Destination folder.', required=True)
  flags.DEFINE_integer('shards', 0, 'Download only the first N files (0 = all).', lower_bound=0)
  flags.DEFINE_string('base_url', None, 'Override the source URL (mirror or file://).')
  cli.run(main, 'llm.data.download')
