"""Where the raw text lives and how it becomes documents: finding the data dir, reading text
folders / text files / jsonl, the train/val split, and a fingerprint that changes with the corpus."""
import gzip
import hashlib
import json
import os
import re
import zlib
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from absl import logging

from llm.data import digests

FORMATS = ('text_folder', 'text_file', 'jsonl')
# The fix for a data set missing from the data dir, in every program's own terms.
POINT_DATA_DIR = ('point the data dir (--config.data.dir; llm.data.show: --data_dir; or $LLM_DATA_DIR) at the folder '
                  'holding the shared data')
# Part of the corpus fingerprint: bump it when a change to the readers below alters the documents
# an unchanged corpus yields, so cached tokenizers and token caches are rebuilt.
READERS_VERSION = 1

# Project Gutenberg wraps each book in a licence header and footer. Newer files mark the body
# with '*** START OF ...' / '*** END OF ...' (the spacing varies); older ones end the header with
# '*END*THE SMALL PRINT...' and close the body with 'End of the Project Gutenberg ...', a line
# that the newer files also carry just before their end marker.
_GUTENBERG_START = re.compile(r'^[ \t]*(\*\*\*[ \t]*START OF|\*END\*?[ \t]*THE SMALL PRINT).*$',
                              re.M)
_GUTENBERG_END = re.compile(r'^[ \t]*(\*\*\*[ \t]*END OF|End of (the )?Project Gutenberg)',
                            re.M | re.I)
# JSON may escape half of a UTF-16 surrogate pair alone ("\ud83d"); json.loads keeps it as a
# character that no UTF-8 encoder (the split's hash, the tokenizer) takes.
_SURROGATE_ESCAPE = re.compile(r'\\u[dD][89a-fA-F]')
_LONE_SURROGATE = re.compile('[\ud800-\udfff]')


def find_data_dir(configured: str, flag: str = '--config.data.dir', holds: str | Sequence[str] = '',
                  holds_flag: str = '--config.data.source', made_by: str = '') -> Path:
  """configured (the value of `flag`) if set, else $LLM_DATA_DIR if set, else the first of ./data,
  ../shared/data that holds `holds` (a path under the data dir, such as config.data.source, or
  several, all of which it must hold; '' or an absolute path asks for nothing). An explicit setting
  that does not exist is an error, never a silent fallback; so is a search that finds `holds` in
  neither (a ./data made by llm.data.download for one corpus must not hide ../shared/data's others),
  which names holds_flag as a fix where a flag of the program set holds ('' where none did).
  made_by: the program that writes the configured dir given --out (config.data.made_by), named
  where it is missing. An explicit setting that does not hold `holds` is named with the same fixes
  as a search: else the reader's error would name holds_flag alone, which may be no flag of the
  program (llm.eval reads the run's config.data.source)."""
  wanted = [Path(h).expanduser() for h in ([holds] if isinstance(holds, str) else holds) if h]
  wanted = [w for w in wanted if not w.is_absolute()]  # an absolute one is found without a data dir
  if configured:
    path = Path(configured).expanduser()
    if not path.is_dir() and made_by:
      raise FileNotFoundError(f'data dir {path} ({flag}) does not exist; make it with {made_by} --out={path} '
                              f'(or fix {flag}=...)')
    if not path.is_dir():
      raise FileNotFoundError(f'data dir {path} ({flag}) does not exist; '
                              f'fix {flag}=... or set it to "" to search the defaults')
    return _holding(path, flag, wanted, f'set {flag}', holds_flag)
  if os.environ.get('LLM_DATA_DIR'):
    path = Path(os.environ['LLM_DATA_DIR']).expanduser()
    if not path.is_dir():
      raise FileNotFoundError(f'data dir {path} ($LLM_DATA_DIR) does not exist; fix LLM_DATA_DIR or unset it '
                              'to search ./data and ../shared/data')
    return _holding(path, '$LLM_DATA_DIR', wanted, 'set LLM_DATA_DIR', holds_flag)
  candidates = [Path(p) for p in ('data', '../shared/data')]
  for path in candidates:
    if path.is_dir() and all((path / w).exists() for w in wanted):
      return path
  looked = ', '.join(str(p.absolute()) for p in candidates)
  if wanted and any(p.is_dir() for p in candidates):
    missing = [str(w) for w in wanted if not any((p / w).exists() for p in candidates)]
    what = ', '.join(missing) if missing else 'all of ' + ', '.join(map(str, wanted))  # each in one dir, none in both
    raise FileNotFoundError(f'no data dir holds {what} (looked in {looked}); pass {flag}=... or set LLM_DATA_DIR '
                            f'to the folder that holds it{f", or fix {holds_flag}" if holds_flag else ""}')
  raise FileNotFoundError(f'no data dir found (looked in {looked}); pass {flag}=... or set LLM_DATA_DIR')


def _holding(path: Path, setting: str, wanted: list[Path], fix: str, holds_flag: str) -> Path:
  """path, the data dir `setting` names, if it holds everything wanted."""
  missing = [str(w) for w in wanted if not (path / w).exists()]
  if missing:
    raise FileNotFoundError(f'data dir {path} ({setting}) holds no {", ".join(missing)}; {fix} to the folder that '
                            f'holds it{f", or fix {holds_flag}" if holds_flag else ""}')
  return path


def strip_gutenberg(text: str) -> str:
  """The body of a Project Gutenberg book; text without the markers is returned whole."""
  start = _GUTENBERG_START.search(text)
  if not start:
    return text
  end = _GUTENBERG_END.search(text, start.end())
  return text[start.end():end.start() if end else len(text)].strip('\n')


def _read_text(path: Path) -> str:
  # The shared Gutenberg books are all UTF-8 with CRLF line ends; text mode turns CRLF into '\n'
  # (one token fewer per line), and errors='replace' keeps a stray latin-1 file readable.
  return path.read_text(encoding='utf-8', errors='replace')


def read_text_folder(path: Path) -> Iterator[str]:
  """Every *.txt file below path, in sorted order, one document each (Gutenberg licence removed);
  a folder named *.txt is searched like any other."""
  for file in sorted(Path(path).rglob('*.txt')):
    if file.is_file():
      yield strip_gutenberg(_read_text(file))


def read_text_file(path: Path, separator: str) -> Iterator[str]:
  """One file split into documents at separator (e.g. '\\n\\n'); '' = the whole file."""
  text = _read_text(Path(path))
  yield from text.split(separator) if separator else [text]


def _without_lone_surrogates(value):
  """value (a parsed JSON value) with each lone surrogate in its strings replaced by U+FFFD."""
  if isinstance(value, str):
    return _LONE_SURROGATE.sub('\ufffd', value)
  if isinstance(value, dict):
    return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_without_lone_surrogates(v) for v in value]
  return value


def read_jsonl(path: Path, last_line_may_be_cut: bool = False) -> Iterator[dict]:
  """The JSON object on each non-blank line of a .jsonl or .jsonl.gz file: the one JSONL reader
  of the pretraining corpora and the conversation, GSM8K and RL sources alike, and of the logs a
  run appends to (metrics.jsonl): for those, last_line_may_be_cut, a last line that is not JSON
  is skipped with a warning (a kill or a full disk cut it short); one before it is still refused."""
  path = Path(path)
  opener = gzip.open if path.suffix == '.gz' else open
  try:
    # errors='replace': a stray undecodable byte costs one character, not the whole corpus; so
    # does a lone surrogate escape.
    with opener(path, 'rt', encoding='utf-8', errors='replace') as lines:
      for line_number, line in enumerate(lines, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          if not last_line_may_be_cut:
            raise ValueError(f'{path}:{line_number} is not valid JSON ({e.msg}, column {e.colno}); a '
                             '.jsonl file holds one JSON object per line') from None
          if any(later.strip() for later in lines):
            raise ValueError(f'{path}:{line_number} is not valid JSON and not the last line ({e.msg}, column '
                             f'{e.colno}), so no kill or full disk cut it short: the file is damaged; repair or '
                             'remove that line') from None
          logging.warning('%s: skipping its last line, cut short by a kill or a full disk: %r', path, line[:80])
          return
        if not isinstance(record, dict):
          raise ValueError(f'{path}:{line_number} holds a {type(record).__name__}, not a JSON '
                           'object; a .jsonl file holds one JSON object per line')
        yield _without_lone_surrogates(record) if _SURROGATE_ESCAPE.search(line) else record
  except gzip.BadGzipFile:
    raise ValueError(f'{path} is not gzip-compressed, though its name ends in .gz: if it holds plain JSONL, rename it '
                     f'{path.with_suffix("").name}') from None
  except (EOFError, zlib.error) as e:
    raise ValueError(f'{path} is cut short or damaged ({e}): fetch or copy it again') from None


def jsonl_files(path: Path) -> list[Path]:
  """path itself if it is a file, else the *.jsonl and *.jsonl.gz files below it in sorted order
  (a folder of shards, as llm.data.download writes FineWeb-Edu)."""
  path = Path(path)
  if not path.is_dir():
    return [path]
  files = sorted(f for f in path.rglob('*') if f.is_file() and f.name.endswith(('.jsonl', '.jsonl.gz')))
  if not files:
    raise ValueError(f'{path} holds no *.jsonl or *.jsonl.gz files; config.data.format=\'jsonl\' reads one such '
                     'file or a folder of them')
  return files


def read_jsonl_field(path: Path, field: str) -> Iterator[str]:
  """The string `field` of each record of a .jsonl or .jsonl.gz file, or of every such file in a
  folder: one document each."""
  for file in jsonl_files(path):
    for number, record in enumerate(read_jsonl(file), 1):
      if not isinstance(record.get(field), str):
        raise ValueError(f'{file}: record {number} has no string field {field!r} (keys: '
                         f'{sorted(record)}); set --config.data.jsonl_field to one of them')
      yield record[field]


def require(path: Path, what: str) -> Path:
  """path, a file or folder of the data dir that holds `what` ("source 'hh_chosen'"), if it exists."""
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f'{path} ({what}) not found; {POINT_DATA_DIR}')
  return path


def source_path(data_dir: Path, cfg) -> Path:
  """The file or folder config.data.source names; an absolute source ignores data_dir."""
  path = Path(data_dir) / Path(cfg.source).expanduser()
  if not path.exists():
    raise FileNotFoundError(f'data source {path} not found (config.data.source={cfg.source!r} '
                            f'under data dir {data_dir}); fix --config.data.source=...')
  return path


def read_documents(data_dir: Path, cfg) -> Iterator[str]:
  """Non-empty documents of the source that cfg (config.data) describes.

  A missing source or an unknown format fails here; an empty corpus when iteration ends.
  """
  path = source_path(data_dir, cfg)
  wants = {'text_folder': 'folder', 'text_file': 'file'}.get(cfg.format)  # jsonl: a file or a folder
  if wants and (wants == 'folder') != path.is_dir():
    raise ValueError(f'config.data.format={cfg.format!r} reads a {wants}, but {path} is not one')
  if cfg.format == 'text_folder':
    docs = read_text_folder(path)
  elif cfg.format == 'text_file':
    docs = read_text_file(path, cfg.doc_separator)
  elif cfg.format == 'jsonl':
    docs = read_jsonl_field(path, cfg.jsonl_field)
  else:
    raise ValueError(f'config.data.format={cfg.format!r} is unknown; use one of {FORMATS}')
  return _non_empty(docs, f'corpus {path} (config.data.format={cfg.format!r})')


def _non_empty(docs: Iterable[str], corpus: str) -> Iterator[str]:
  count = 0
  for doc in docs:
    if doc.strip():
      count += 1
      yield doc
  if not count:
    raise ValueError(f'{corpus} is empty: it holds no non-empty documents; '
                     'check config.data.source and config.data.format')


def _split_hash(doc: str, seed: int) -> int:
  return int.from_bytes(hashlib.sha256(f'{seed}:{doc}'.encode()).digest()[:8], 'big')


def in_validation(doc: str, val_fraction: float, seed: int) -> bool:
  """Whether split_documents puts doc in val (when both sides hold others: it keeps them non-empty)."""
  return _split_hash(doc, seed) < val_fraction * 2**64


def split_documents(docs: Iterable[str], val_fraction: float,
                    seed: int) -> tuple[list[str], list[str]]:
  """(train, val): a document goes to val when the hash of (seed, its text) falls below
  val_fraction, so adding or reordering files never moves other documents across the split.

  Both lists are in hash order, which makes them independent of the input order and mixes the
  sources (the tokenizer's max_chars sample then spans the whole corpus, not its first files).
  """
  if not 0 <= val_fraction < 1:
    raise ValueError(f'config.data.val_fraction={val_fraction} must be in [0, 1)')
  threshold = val_fraction * 2**64
  ranked = sorted((_split_hash(doc, seed), doc) for doc in docs)
  if val_fraction > 0 and len(ranked) == 1:
    raise ValueError('the corpus is one document, which leaves none for validation: split it into documents '
                     "(data.format='text_file' with a data.doc_separator such as '\\n\\n') or add files")
  num_val = sum(h < threshold for h, _ in ranked)
  if val_fraction > 0 and len(ranked) >= 2:
    num_val = min(max(num_val, 1), len(ranked) - 1)  # both sides non-empty
  return [doc for _, doc in ranked[num_val:]], [doc for _, doc in ranked[:num_val]]


def corpus_fingerprint(data_dir: Path, cfg, cache_dir: Path) -> str:
  """Short hash of the source's content (each file's path under it and SHA-256, llm/data/digests.py)
  and of the settings that decide its documents and their split: caches keyed by it are rebuilt when
  any of these change, and found again for the same corpus at another path or on another machine."""
  path = source_path(data_dir, cfg)
  found = sorted(f for f in path.rglob('*') if f.is_file()) if path.is_dir() else [path]
  names = [str(f.relative_to(path)) for f in found] if path.is_dir() else ['']  # a file's name is no part of its documents
  settings = {name: cfg[name] for name in ('format', 'jsonl_field', 'doc_separator',
                                           'val_fraction', 'max_docs')}
  blob = json.dumps(dict(files=list(zip(names, digests.sha256s(path, found, cache_dir))), settings=settings,
                         readers=READERS_VERSION), sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]
