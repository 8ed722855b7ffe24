import errno
import fcntl
import gzip
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import stat
import sys
import threading
import time
from pathlib import Path

import grain
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import kill_when
from llm import data as data_lib
from llm.config import base_config
from llm.data import cache, pipeline, sources
from llm.tokenizer import train_tokenizer
from tiny_config import SHARED_DATA



def need_shared(*parts: str) -> Path:
  path = SHARED_DATA.joinpath(*parts)
  if not path.exists():
    pytest.skip(f'shared data not found at {path}')
  return path


def data_config(**overrides) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      dir='', source='corpus', format='text_folder', jsonl_field='text', doc_separator='\n\n',
      val_fraction=0.1, seed=0, max_docs=0) | overrides)


# --- sources ---------------------------------------------------------------------------------

GUTENBERG_BOOK = '''The Project Gutenberg eBook of Tiny Tale

This eBook is for the use of anyone anywhere. Project Gutenberg License applies.

{start}

Chapter 1

Once upon a time.

End of the Project Gutenberg EBook of Tiny Tale

*** END OF THE PROJECT GUTENBERG EBOOK TINY TALE ***

Section 1. General Terms of Use and Redistributing Project Gutenberg-tm electronic works
'''


@pytest.mark.parametrize('start', [
    '*** START OF THE PROJECT GUTENBERG EBOOK TINY TALE ***',
    '***START OF THE PROJECT GUTENBERG EBOOK TINY TALE***',
    '  *** START OF THIS PROJECT GUTENBERG EBOOK TINY TALE ***',
    '*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*',
])
def test_gutenberg_header_and_footer_are_stripped(tmp_path, start):
  # CRLF line ends, as in the shared books: they come back as '\n'.
  (tmp_path / 'book.txt').write_bytes(GUTENBERG_BOOK.format(start=start).replace(
      '\n', '\r\n').encode())
  (tmp_path / 'notes.txt').write_text('No markers here.\n*** not a marker ***\n')
  (tmp_path / 'ignored.md').write_text('not a .txt file')
  assert list(sources.read_text_folder(tmp_path)) == [
      'Chapter 1\n\nOnce upon a time.', 'No markers here.\n*** not a marker ***\n']


def test_real_gutenberg_book_keeps_only_the_body():
  path = need_shared('gutenberg_pd_books', 'Carroll, Lewis')
  book = path / "Alice's Adventures in Wonderland.txt"
  raw = book.read_text(encoding='utf-8')
  body = sources.strip_gutenberg(raw)
  assert 'START OF' in raw and 'Project Gutenberg License' in raw
  for marker in ('START OF', 'END OF', 'Project Gutenberg License', 'Project Gutenberg'):
    assert marker not in body
  assert body.startswith('ALICE') and 'Down the Rabbit-Hole' in body
  assert body.rstrip().endswith('THE END')


def test_text_file_and_jsonl_readers(tmp_path):
  (tmp_path / 'stories.txt').write_text('one\nstill one\n\ntwo\n\n\n')
  assert list(sources.read_text_file(tmp_path / 'stories.txt', '\n\n')) == [
      'one\nstill one', 'two', '\n']
  assert list(sources.read_text_file(tmp_path / 'stories.txt', '')) == [
      'one\nstill one\n\ntwo\n\n\n']
  records = [{'text': 'first'}, {'text': 'sécond 🙂', 'id': 2}]
  lines = '\n'.join(json.dumps(r) for r in records) + '\n\n'
  (tmp_path / 'docs.jsonl').write_text(lines)
  with gzip.open(tmp_path / 'docs.jsonl.gz', 'wt', encoding='utf-8') as f:
    f.write(lines)
  for name in ('docs.jsonl', 'docs.jsonl.gz'):
    assert list(sources.read_jsonl(tmp_path / name)) == records
    assert list(sources.read_jsonl_field(tmp_path / name, 'text')) == ['first', 'sécond 🙂']
  with pytest.raises(ValueError, match=r"docs.jsonl: record 1 has no string field 'body'.*jsonl_field"):
    list(sources.read_jsonl_field(tmp_path / 'docs.jsonl', 'body'))


def test_a_lone_surrogate_escape_costs_one_character_not_the_corpus(tmp_path):
  """JSON can escape half of a surrogate pair alone; the text must still hash and split."""
  lines = [r'{"text": "broken \ud83d emoji", "tags": ["\udc00"]}', r'{"text": "whole \ud83d\ude00 emoji"}',
           '{"text": "plain"}']
  (tmp_path / 'docs.jsonl').write_text('\n'.join(lines) + '\n')
  assert list(sources.read_jsonl(tmp_path / 'docs.jsonl')) == [
      {'text': 'broken \ufffd emoji', 'tags': ['\ufffd']}, {'text': 'whole 😀 emoji'}, {'text': 'plain'}]
  train, val = data_lib.split_corpus(tmp_path, data_config(source='docs.jsonl', format='jsonl', val_fraction=0.3))
  assert sorted(train + val) == ['broken \ufffd emoji', 'plain', 'whole 😀 emoji']


@pytest.mark.parametrize('line, message', [('{"text": "a"', 'is not valid JSON'),
                                           ('["a", "b"]', 'holds a list, not a JSON object')])
def test_jsonl_reader_names_the_bad_line(tmp_path, line, message):
  (tmp_path / 'docs.jsonl').write_text('{"text": "fine"}\n\n' + line + '\n')
  with pytest.raises(ValueError, match=rf'docs.jsonl:3 {message}'):
    list(sources.read_jsonl(tmp_path / 'docs.jsonl'))


def test_a_gzip_file_cut_short_or_not_compressed_is_named_in_one_line(tmp_path):
  whole = gzip.compress(''.join(f'{{"text": "document {i}"}}\n' for i in range(2000)).encode())
  (tmp_path / 'cut.jsonl.gz').write_bytes(whole[:len(whole) // 2])  # a copy cut short
  (tmp_path / 'plain.jsonl.gz').write_text('{"text": "not compressed"}\n')
  with pytest.raises(ValueError, match=r'^\S*cut.jsonl.gz is cut short or damaged \(.*\): fetch or copy it again$'):
    list(sources.read_jsonl(tmp_path / 'cut.jsonl.gz'))
  with pytest.raises(ValueError, match=r'^\S*plain.jsonl.gz is not gzip-compressed, though its name ends in .gz: if it '
                                       r'holds plain JSONL, rename it plain.jsonl$'):
    list(sources.read_jsonl(tmp_path / 'plain.jsonl.gz'))


def test_a_folder_named_like_a_text_file_is_searched_not_read(tmp_path):
  (tmp_path / 'b.txt').write_text('b')
  (tmp_path / 'volume.txt').mkdir()
  (tmp_path / 'volume.txt' / 'a.txt').write_text('a')
  assert list(sources.read_text_folder(tmp_path)) == ['b', 'a']


def test_jsonl_reads_a_folder_of_shards_in_order(tmp_path):
  shards = tmp_path / 'shards'
  (shards / 'raw').mkdir(parents=True)
  (shards / '001.jsonl').write_text('{"text": "c"}\n')
  with gzip.open(shards / '000.jsonl.gz', 'wt', encoding='utf-8') as f:
    f.write('{"text": "a"}\n{"text": "b"}\n')
  (shards / '002.jsonl.gz.partial').write_text('{"text": "an unfinished download"}\n')
  (shards / 'raw' / '000.parquet').write_bytes(b'PAR1')
  assert list(sources.read_documents(tmp_path, data_config(source='shards', format='jsonl'))) == ['a', 'b', 'c']
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match=r"empty holds no \*.jsonl or \*.jsonl.gz files"):
    list(sources.read_documents(tmp_path, data_config(source='empty', format='jsonl')))


def test_fineweb_downloads_into_what_the_124m_config_reads(tmp_path):
  """llm.data.download from a file:// mirror, then the documents as configs/pretrain_gpt2_124m.py
  reads them: the command pair its docstring gives."""
  pq = pytest.importorskip('pyarrow.parquet')
  import pyarrow as pa
  from configs import pretrain_gpt2_124m
  from llm.data import download
  mirror = tmp_path / 'mirror'
  mirror.mkdir()
  rows = [['first shard, one', 'first shard, two'], ['second shard']]
  for i, texts in enumerate(rows):
    pq.write_table(pa.table({'text': texts, 'id': list(range(len(texts)))}), mirror / f'{i:03d}_00000.parquet')
  out = tmp_path / 'data' / 'fineweb_edu'
  written = download.download('fineweb_edu', out, shards=2, base_url=mirror.as_uri())
  assert [p.name for p in written] == ['000_00000.jsonl.gz', '001_00000.jsonl.gz']
  files = sorted(out.rglob('*'))
  assert [p.relative_to(out).as_posix() for p in files] == [
      '000_00000.jsonl.gz', '001_00000.jsonl.gz', 'raw', 'raw/000_00000.parquet', 'raw/001_00000.parquet']
  stamps = [p.stat().st_mtime_ns for p in files]
  download.download('fineweb_edu', out, shards=2, base_url=mirror.as_uri())  # a rerun: nothing redone
  assert [p.stat().st_mtime_ns for p in files] == stamps
  cfg = pretrain_gpt2_124m.get_config().data
  assert list(sources.read_documents(tmp_path / 'data', cfg)) == [t for texts in rows for t in texts]


def test_a_download_that_cannot_be_fetched_says_which_url_and_what_to_check(tmp_path):
  from llm.data import download
  with pytest.raises(ValueError, match=r'could not fetch file://.*/nowhere/TinyStoriesV2-GPT4-train.txt .*--base_url'):
    download.download('tinystories', tmp_path / 'out', base_url=(tmp_path / 'nowhere').as_uri())
  assert not list((tmp_path / 'out').rglob('*.txt'))


def test_read_documents_drops_empty_documents(tmp_path):
  (tmp_path / 'corpus.txt').write_text('a\n\n \n\nb')
  cfg = data_config(source='corpus.txt', format='text_file')
  assert list(sources.read_documents(tmp_path, cfg)) == ['a', 'b']


def test_missing_source(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"not found \(config.data.source='nowhere'"):
    sources.read_documents(tmp_path, data_config(source='nowhere'))


def test_empty_corpus(tmp_path):
  (tmp_path / 'corpus').mkdir()
  (tmp_path / 'corpus' / 'blank.txt').write_text('\n\n  \n')
  with pytest.raises(ValueError, match='corpus .*corpus.* is empty'):
    list(sources.read_documents(tmp_path, data_config()))


def test_unknown_format_and_wrong_kind_of_source(tmp_path):
  (tmp_path / 'corpus').mkdir()
  with pytest.raises(ValueError, match="format='csv' is unknown"):
    sources.read_documents(tmp_path, data_config(format='csv'))
  with pytest.raises(ValueError, match="format='text_file' reads a file"):
    sources.read_documents(tmp_path, data_config(format='text_file'))


def test_find_data_dir_search_order(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv('LLM_DATA_DIR', raising=False)
  with pytest.raises(FileNotFoundError) as error:
    sources.find_data_dir('')
  message = str(error.value)
  assert '\n' not in message
  assert 'LLM_DATA_DIR' in message and '--config.data.dir=' in message
  assert str(Path.cwd() / 'data') in message
  (tmp_path / 'data').mkdir()
  assert sources.find_data_dir('') == Path('data')
  monkeypatch.setenv('LLM_DATA_DIR', str(tmp_path / 'env'))
  (tmp_path / 'env').mkdir()
  assert sources.find_data_dir('') == tmp_path / 'env'
  assert sources.find_data_dir(str(tmp_path)) == tmp_path
  with pytest.raises(FileNotFoundError, match='missing.*config.data.dir'):
    sources.find_data_dir(str(tmp_path / 'missing'))
  with pytest.raises(FileNotFoundError, match=r'missing \(--data_dir\) does not exist; fix --data_dir=\.\.\.'):
    sources.find_data_dir(str(tmp_path / 'missing'), flag='--data_dir')  # a CLI with a flag of its own


def test_the_data_dir_searched_for_is_the_first_that_holds_the_source(tmp_path, monkeypatch):
  """README's download step makes ./data for one corpus; the other corpora stay in ../shared/data."""
  (tmp_path / 'checkout').mkdir()
  monkeypatch.chdir(tmp_path / 'checkout')
  monkeypatch.delenv('LLM_DATA_DIR', raising=False)
  (tmp_path / 'checkout' / 'data' / 'fineweb_edu').mkdir(parents=True)
  (tmp_path / 'shared' / 'data' / 'gutenberg_pd_books').mkdir(parents=True)
  assert sources.find_data_dir('', holds='fineweb_edu') == Path('data')
  assert sources.find_data_dir('', holds='gutenberg_pd_books') == Path('../shared/data')
  assert sources.find_data_dir('', holds=str(tmp_path / 'elsewhere')) == Path('data')  # absolute: any data dir
  with pytest.raises(FileNotFoundError) as error:
    sources.find_data_dir('', holds='tinystories/train.txt')
  assert str(error.value) == (
      f'no data dir holds tinystories/train.txt (looked in {tmp_path}/checkout/data, {tmp_path}/checkout/../shared/data);'
      ' pass --config.data.dir=... or set LLM_DATA_DIR to the folder that holds it, or fix --config.data.source')


def test_a_search_for_several_sources_takes_the_first_data_dir_that_holds_them_all(tmp_path, monkeypatch):
  """An SFT mixture reads several data sets: a ./data holding one of them must not hide a
  ../shared/data holding all."""
  (tmp_path / 'checkout').mkdir()
  monkeypatch.chdir(tmp_path / 'checkout')
  monkeypatch.delenv('LLM_DATA_DIR', raising=False)
  for folder in ('checkout/data/gsm8k', 'shared/data/gsm8k', 'shared/data/topical_chat', 'checkout/data/books'):
    (tmp_path / folder).mkdir(parents=True)
  assert sources.find_data_dir('', holds=['gsm8k']) == Path('data')
  assert sources.find_data_dir('', holds=['gsm8k', 'topical_chat']) == Path('../shared/data')
  assert sources.find_data_dir('', holds=[]) == Path('data')
  looked = f'{tmp_path}/checkout/data, {tmp_path}/checkout/../shared/data'
  with pytest.raises(FileNotFoundError, match=rf'^no data dir holds self_instruct \(looked in {re.escape(looked)}\);'
                                              r'.* or fix --config\.sft\.mixture$'):
    sources.find_data_dir('', holds=['gsm8k', 'self_instruct'], holds_flag='--config.sft.mixture')
  with pytest.raises(FileNotFoundError, match=r'^no data dir holds all of books, topical_chat \(looked in'):
    sources.find_data_dir('', holds=['books', 'topical_chat'])  # each is in one of them, neither holds both


def test_data_dir_from_the_environment_that_does_not_exist_is_an_error(tmp_path, monkeypatch):
  """A mistyped LLM_DATA_DIR must not quietly train on ./data or ../shared/data instead."""
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'data').mkdir()
  monkeypatch.setenv('LLM_DATA_DIR', str(tmp_path / 'typo'))
  with pytest.raises(FileNotFoundError, match=r'typo \(\$LLM_DATA_DIR\) does not exist'):
    sources.find_data_dir('')


def test_split_is_deterministic_and_independent_of_order():
  docs = [f'document number {i}' for i in range(400)]
  train, val = sources.split_documents(docs, 0.1, seed=0)
  assert sources.split_documents(reversed(docs), 0.1, seed=0) == (train, val)
  assert sorted(train + val) == sorted(docs)
  assert 20 < len(val) < 60
  more_train, more_val = sources.split_documents(docs + ['a new book'], 0.1, seed=0)
  assert set(val) <= set(more_val) and set(train) <= set(more_train)  # nothing moved
  assert sources.split_documents(docs, 0.1, seed=1)[1] != val


def test_split_keeps_both_sides_non_empty():
  assert sources.split_documents(['a', 'b'], 1e-9, seed=0)[1] in (['a'], ['b'])
  assert len(sources.split_documents(['a', 'b', 'c'], 0.999, seed=0)[0]) == 1
  assert sources.split_documents(['a', 'b'], 0.0, seed=0)[1] == []
  with pytest.raises(ValueError, match='val_fraction'):
    sources.split_documents(['a', 'b'], 1.0, seed=0)


def test_fingerprint_follows_files_and_settings(tmp_path):
  corpus, cache = tmp_path / 'corpus', tmp_path / 'cache'
  corpus.mkdir()
  (corpus / 'a.txt').write_text('alpha')
  cfg = data_config()
  first = sources.corpus_fingerprint(tmp_path, cfg, cache)
  assert sources.corpus_fingerprint(tmp_path, cfg, cache) == first
  for changed in (dict(val_fraction=0.2), dict(doc_separator='\n'), dict(max_docs=10)):  # other documents or split
    assert sources.corpus_fingerprint(tmp_path, data_config(**changed), cache) != first, changed
  (corpus / 'b.txt').write_text('beta')
  second = sources.corpus_fingerprint(tmp_path, cfg, cache)
  assert second != first
  (corpus / 'b.txt').write_text('beta, longer')
  assert sources.corpus_fingerprint(tmp_path, cfg, cache) != second


def test_fingerprint_is_the_contents_not_where_the_corpus_lies_or_its_times(tmp_path):
  """Keyed on the source's absolute path and mtimes, the same corpus in another clone, data dir or
  machine (or copied without its times) was tokenized again, and an edit that kept the size and put
  the mtime back was not."""
  here, there, cache = tmp_path / 'here', tmp_path / 'elsewhere' / 'data', tmp_path / 'cache'
  (here / 'corpus' / 'sub').mkdir(parents=True)
  (here / 'corpus' / 'a.txt').write_text('alpha')
  (here / 'corpus' / 'sub' / 'b.txt').write_text('beta')
  first = sources.corpus_fingerprint(here, data_config(), cache)
  shutil.copytree(here, there)  # new paths, inodes and times
  os.utime(there / 'corpus' / 'a.txt', ns=(1, 1))
  assert sources.corpus_fingerprint(there, data_config(), tmp_path / 'another_cache') == first
  assert sources.corpus_fingerprint(there, data_config(), cache) == first
  edited = here / 'corpus' / 'a.txt'
  times = edited.stat().st_atime_ns, edited.stat().st_mtime_ns
  edited.write_text('alpha'.upper())  # the same size
  os.utime(edited, ns=times)
  second = sources.corpus_fingerprint(here, data_config(), cache)
  assert second != first
  (here / 'corpus' / 'sub' / 'b.txt').rename(here / 'corpus' / 'b.txt')  # the same files under other names
  assert sources.corpus_fingerprint(here, data_config(), cache) != second


def test_fingerprint_reads_each_file_once_and_a_damaged_memo_is_harmless(tmp_path, monkeypatch):
  corpus, cache = tmp_path / 'corpus', tmp_path / 'cache'
  corpus.mkdir()
  for name in ('a.txt', 'b.txt'):
    (corpus / name).write_text(name)
  read = []
  digest = hashlib.file_digest
  monkeypatch.setattr(hashlib, 'file_digest', lambda f, name: read.append(f.name) or digest(f, name))
  first = sources.corpus_fingerprint(tmp_path, data_config(), cache)
  assert sources.corpus_fingerprint(tmp_path, data_config(), cache) == first
  (corpus / 'b.txt').write_text('b, edited')
  second = sources.corpus_fingerprint(tmp_path, data_config(), cache)
  assert [Path(name).name for name in read] == ['a.txt', 'b.txt', 'b.txt']
  (memo,) = (cache / 'file_digests').iterdir()
  memo.write_text('{"a.txt": [1, 2')  # cut short
  assert sources.corpus_fingerprint(tmp_path, data_config(), cache) == second
  assert len(read) == 5


def test_fingerprint_memo_survives_another_spelling_of_the_path_and_the_other_hosts(tmp_path, monkeypatch):
  """The memo was keyed by the root as spelt ('../shared/data' in each clone, its absolute path) and
  shared by every host of a job, whose inode numbers differ (gcsfuse numbers them per mount): each
  spelling, and each host after another's start, read the whole corpus again."""
  from llm.data import digests
  corpus, cache = tmp_path / 'data' / 'corpus', tmp_path / 'cache'
  corpus.mkdir(parents=True)
  (corpus / 'a.txt').write_text('a')
  read = []
  digest = hashlib.file_digest
  monkeypatch.setattr(hashlib, 'file_digest', lambda f, name: read.append(f.name) or digest(f, name))
  first = sources.corpus_fingerprint(tmp_path / 'data', data_config(), cache)
  monkeypatch.chdir(corpus)
  assert sources.corpus_fingerprint(Path('..'), data_config(), cache) == first
  assert sources.corpus_fingerprint(tmp_path / 'data' / 'corpus' / '..', data_config(), cache) == first
  assert len(read) == 1
  stamp = digests._stamp  # pylint: disable=protected-access
  host = ['a']
  monkeypatch.setattr(digests.socket, 'gethostname', lambda: host[0])
  monkeypatch.setattr(digests, '_stamp', lambda path: [*stamp(path)[:3], ord(host[0])])  # inodes per host
  for host[0] in 'abab':
    assert sources.corpus_fingerprint(tmp_path / 'data', data_config(), cache) == first
  assert len(read) == 3  # once more on each host, then never


def test_fingerprint_of_a_cache_dir_that_cannot_be_written_is_still_its_key(tmp_path, monkeypatch, caplog):
  """A cache dir the run cannot write (another user's, read-only, full): the caches built there are
  read as before; remembering the digests is what cannot be done, which cost a PermissionError."""
  from llm.data import digests
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  (corpus / 'a.txt').write_text('a')
  key = sources.corpus_fingerprint(tmp_path, data_config(), tmp_path / 'writable')

  def refused(path, text):
    raise PermissionError(errno.EACCES, 'Permission denied', str(path))

  monkeypatch.setattr(digests.files, 'write_atomically', refused)
  with caplog.at_level('WARNING'):
    assert sources.corpus_fingerprint(tmp_path, data_config(), tmp_path / 'read_only') == key
  assert sum('file digests not remembered' in r.getMessage() for r in caplog.records) == 1


# --- token cache -----------------------------------------------------------------------------


@pytest.fixture(scope='module')
def tok(tmp_path_factory):
  text = need_shared('tinyshakespeare', 'input.txt').read_text()[:200_000]
  return train_tokenizer([text], 400, tmp_path_factory.mktemp('tok') / 'tok.model', 10**9)


def test_cache_holds_bos_and_tokens_of_each_document(tok, tmp_path):
  docs = ['To be, or not to be', 'that is the question:\n\n', 'Whether ’tis nobler']
  cache.build_token_cache(iter(docs), tok, tmp_path / 'c')
  tokens = cache.load_token_cache(tmp_path / 'c')
  expected = [i for doc in docs for i in [tok.bos_id] + tok.encode(doc)]
  assert tokens.dtype == np.uint16 and tokens.tolist() == expected
  assert not tokens.flags.writeable
  meta = cache.load_cache_meta(tmp_path / 'c')
  assert (meta['num_tokens'], meta['num_docs']) == (len(expected), 3)
  assert meta['num_bytes'] == sum(len(d.encode()) for d in docs)
  assert meta['tokenizer_fingerprint'] == tok.fingerprint


def test_interrupted_cache_build_leaves_nothing(tok, tmp_path):
  def docs():
    yield 'one document'
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    cache.build_token_cache(docs(), tok, tmp_path / 'c')
  assert list(tmp_path.iterdir()) == []


def test_get_or_build_cache_builds_once(tok, tmp_path):
  calls = []

  def docs():
    calls.append(1)
    return ['some text']

  path = cache.get_or_build_cache(docs, tok, tmp_path, 'corpus-a', 'train')
  assert cache.get_or_build_cache(docs, tok, tmp_path, 'corpus-a', 'train') == path
  assert len(calls) == 1 and path.name == 'train' and path.parent.parent == tmp_path / 'tokens'
  assert cache.get_or_build_cache(docs, tok, tmp_path, 'corpus-a', 'val').parent == path.parent
  assert cache.get_or_build_cache(docs, tok, tmp_path, 'corpus-b', 'train') != path


def test_a_build_killed_midway_leaves_no_folder_behind_the_next_one(tok, tmp_path, python_env):
  """A SIGKILL runs no except clause: the killed build's temporary folder (20 GB on FineWeb) stayed
  forever. The next build of that split removes it; the cache it makes is readable by all, as its
  folder is (mkdtemp makes folders 0700)."""
  child = ('import sys, time\n'
           'from llm.data import cache\n'
           'from llm.tokenizer import Tokenizer\n'
           'def docs():\n'
           '  yield "a document"\n'
           '  time.sleep(600)\n'
           f'cache.get_or_build_cache(docs, Tokenizer.load({str(tok.path)!r}), {str(tmp_path)!r}, "corpus", "train")\n')
  kill_when([sys.executable, '-c', child], python_env, lambda: any(tmp_path.glob('tokens/*/.train.*')))
  (left,) = tmp_path.glob('tokens/*/.train.*')
  path = cache.get_or_build_cache(lambda: ['some text'], tok, tmp_path, 'corpus', 'train')
  assert not left.exists() and path.parent == left.parent
  assert cache.load_token_cache(path).tolist() == [tok.bos_id] + tok.encode('some text')
  umask = os.umask(0)
  os.umask(umask)
  assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~umask


def test_a_second_build_waits_for_the_one_under_way_and_takes_its_cache(tok, tmp_path, caplog):
  """Rather than tokenize the corpus a second time (two runs started at once on one cache dir),
  or take the first one's temporary folder for a killed build's."""
  folder = cache.get_or_build_cache(lambda: ['x'], tok, tmp_path, 'corpus', 'val').parent
  calls, found = [], []
  with open(folder / '.lock-train', 'a') as lock:  # the first build, under way
    fcntl.flock(lock, fcntl.LOCK_EX)
    second = threading.Thread(target=lambda: found.append(cache.get_or_build_cache(
        lambda: calls.append(1) or ['other text'], tok, tmp_path, 'corpus', 'train')))
    with caplog.at_level('INFO'):
      second.start()
      deadline = time.monotonic() + 60
      while 'waiting for another process that builds' not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 'waiting for another process that builds' in caplog.text
    cache.build_token_cache(['some text'], tok, folder / 'train')
  second.join()
  assert found == [folder / 'train'] and not calls
  assert cache.load_token_cache(found[0]).tolist() == [tok.bos_id] + tok.encode('some text')


def test_empty_split_loads_as_empty_array(tok, tmp_path):
  cache.build_token_cache([], tok, tmp_path / 'c')
  assert len(cache.load_token_cache(tmp_path / 'c')) == 0


def test_missing_cache(tmp_path):
  with pytest.raises(FileNotFoundError, match='no token cache'):
    cache.load_token_cache(tmp_path)


# --- pipeline --------------------------------------------------------------------------------

SEQ = 8
STREAM = np.arange(5 + 24 * SEQ, dtype=np.uint16)  # 24 windows and a 4-token tail


def take(iterator, n: int) -> list[dict]:
  return [next(iterator) for _ in range(n)]


def test_eval_windows_cover_the_stream_once_in_order():
  batches = pipeline.eval_batches(STREAM, SEQ, batch_size=4)
  assert len(batches) == 6
  inputs = np.concatenate([b['inputs'] for b in batches]).reshape(-1)
  targets = np.concatenate([b['targets'] for b in batches]).reshape(-1)
  np.testing.assert_array_equal(inputs, STREAM[:24 * SEQ])
  np.testing.assert_array_equal(targets, STREAM[1:24 * SEQ + 1])
  assert batches[0]['inputs'].dtype == np.int32 and batches[0]['inputs'].shape == (4, SEQ)
  assert len(pipeline.eval_batches(STREAM, SEQ, batch_size=5)) == 4  # partial batch dropped
  assert len(pipeline.eval_batches(STREAM, SEQ, batch_size=4, max_batches=2)) == 2


def test_a_stream_of_k_windows_and_one_token_fills_k_windows_to_its_last_token():
  # window i is tokens[8i : 8i + 9]: 25 tokens make three, the last ending at token 24; 24 make two
  (batch,) = pipeline.eval_batches(np.arange(25), 8, 3)
  np.testing.assert_array_equal(batch['targets'][-1], np.arange(17, 25))
  with pytest.raises(ValueError, match='24 validation tokens make 2 windows'):
    pipeline.eval_batches(np.arange(24), 8, 3)


def test_eval_batches_put_each_byte_fix_at_its_target():
  """STREAM[p] == p: a fix at stream position p belongs to the target p, wherever the windows cut;
  those past the windows scored (the tail, max_batches) are left out."""
  fixes = np.array([[1, -1], [8, 2], [9, -1], [100, 3], [192, -1], [195, 5]])
  for max_batches, scored in ((None, 24 * SEQ), (2, 8 * SEQ)):
    batches = pipeline.eval_batches(STREAM, SEQ, batch_size=4, max_batches=max_batches, byte_fixes=fixes)
    targets = np.concatenate([b['targets'] for b in batches]).reshape(-1)
    byte_fix = np.concatenate([b['byte_fix'] for b in batches]).reshape(-1)
    expected = {p: fix for p, fix in fixes if p <= scored}
    assert dict(zip(targets[byte_fix != 0].tolist(), byte_fix[byte_fix != 0].tolist())) == expected


def test_each_epoch_is_a_shuffle_of_every_window():
  it = iter(pipeline.train_dataset(STREAM, SEQ, global_batch=6, seed=0))
  epochs = []
  for _ in range(2):
    batches = take(it, 24 // 6)
    inputs = np.concatenate([b['inputs'] for b in batches])
    targets = np.concatenate([b['targets'] for b in batches])
    np.testing.assert_array_equal(targets, inputs + 1)  # next token of a contiguous window
    np.testing.assert_array_equal(inputs - inputs[:, :1], np.tile(np.arange(SEQ), (24, 1)))
    np.testing.assert_array_equal(np.sort(inputs.reshape(-1)), STREAM[:24 * SEQ])
    epochs.append(inputs[:, 0])
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[0], np.sort(epochs[0]))


def test_training_order_depends_on_seed_only():
  first = take(iter(pipeline.train_dataset(STREAM, SEQ, 6, seed=0)), 3)
  again = take(iter(pipeline.train_dataset(STREAM, SEQ, 6, seed=0)), 3)
  other = take(iter(pipeline.train_dataset(STREAM, SEQ, 6, seed=1)), 3)
  assert all(np.array_equal(a['inputs'], b['inputs']) for a, b in zip(first, again))
  assert not all(np.array_equal(a['inputs'], b['inputs']) for a, b in zip(first, other))


def test_processes_get_their_rows_of_the_global_batch():
  whole = take(iter(pipeline.train_dataset(STREAM, SEQ, 6, seed=0)), 6)
  parts = [take(iter(pipeline.train_dataset(STREAM, SEQ, 6, seed=0, process_index=p,
                                            process_count=2)), 6) for p in (0, 1)]
  for step, batch in enumerate(whole):
    for key in ('inputs', 'targets'):
      assert parts[0][step][key].shape == (3, SEQ)
      np.testing.assert_array_equal(
          np.concatenate([parts[0][step][key], parts[1][step][key]]), batch[key])


def test_iterator_state_resumes_with_the_next_batch():
  dataset = pipeline.train_dataset(STREAM, SEQ, 6, seed=0)
  it = iter(dataset)
  take(it, 5)  # past the first epoch boundary
  state = it.get_state()
  expected = take(it, 4)
  resumed = iter(dataset)
  resumed.set_state(state)
  for batch, want in zip(take(resumed, 4), expected):
    np.testing.assert_array_equal(batch['inputs'], want['inputs'])


def test_iterator_state_round_trips_through_orbax(tmp_path):
  dataset = pipeline.train_dataset(STREAM, SEQ, 6, seed=0)
  handlers = {'data': grain.checkpoint.CheckpointHandler()}
  it = iter(dataset)
  take(it, 3)
  manager = ocp.CheckpointManager(tmp_path / 'ckpt', item_handlers=handlers,
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  manager.wait_until_finished()
  expected = take(it, 2)
  manager = ocp.CheckpointManager(tmp_path / 'ckpt', item_handlers=handlers)
  resumed = iter(dataset)
  manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
  for batch, want in zip(take(resumed, 2), expected):
    np.testing.assert_array_equal(batch['inputs'], want['inputs'])


def test_pipeline_errors_name_the_numbers():
  with pytest.raises(ValueError, match=r'197 training tokens make 24 windows.*batch of 32'):
    pipeline.train_dataset(STREAM, SEQ, 32, seed=0)
  with pytest.raises(ValueError, match=r'make 24 windows.*batch of 25'):  # one window short is short
    pipeline.train_dataset(STREAM, SEQ, 25, seed=0)
  assert next(iter(pipeline.train_dataset(STREAM, SEQ, 24, seed=0)))['inputs'].shape == (24, SEQ)  # exactly one batch
  with pytest.raises(ValueError, match='global batch 6 does not split evenly over 4'):
    pipeline.train_dataset(STREAM, SEQ, 6, seed=0, process_index=0, process_count=4)
  with pytest.raises(ValueError, match='8 validation tokens make 0 windows'):
    pipeline.eval_batches(STREAM[:8], SEQ, 1)


# --- prepare ---------------------------------------------------------------------------------


def small_config(data_dir: str, cache_dir: Path) -> ml_collections.ConfigDict:
  config = base_config()
  config.data.dir = data_dir
  config.data.source = 'tinystories_val_sample/tinystories_val.txt'
  config.data.format = 'text_file'
  config.data.doc_separator = '\n\n'
  config.data.max_docs = 1500
  config.data.val_fraction = 0.05
  config.data.cache_dir = str(cache_dir)
  config.tokenizer.vocab_size = 512
  return config


def test_prepare_tokenizes_once_and_reuses_everything(tmp_path, monkeypatch):
  need_shared('tinystories_val_sample')
  config = small_config(str(SHARED_DATA), tmp_path)
  prepared = data_lib.prepare(config, tmp_path)
  assert prepared.tokenizer.vocab_size == 512
  assert 1.5 < prepared.val_bytes_per_token < 6
  train, val = prepared.train_tokens, prepared.val_tokens
  bos = prepared.tokenizer.bos_id
  assert train[0] == bos and val[0] == bos
  assert 1400 < np.sum(train == bos) < 1500 and 40 < np.sum(val == bos) < 110
  first_doc = prepared.tokenizer.decode(train[1:np.flatnonzero(train == bos)[1]])
  assert first_doc in open(SHARED_DATA / config.data.source, encoding='utf-8').read()

  def no_reading(*args):
    raise AssertionError('a cached prepare() must not read the corpus')

  monkeypatch.setattr(sources, 'read_documents', no_reading)
  again = data_lib.prepare(config, tmp_path)
  assert again.tokenizer.path == prepared.tokenizer.path
  np.testing.assert_array_equal(again.train_tokens, train)
  np.testing.assert_array_equal(again.val_tokens, val)
  # The same corpus in another data dir (another clone's, another machine's), copied without its times.
  moved = tmp_path / 'moved'
  (moved / config.data.source).parent.mkdir(parents=True)
  shutil.copyfile(SHARED_DATA / config.data.source, moved / config.data.source)
  config.data.dir = str(moved)
  elsewhere = data_lib.prepare(config, tmp_path)
  assert elsewhere.tokenizer.path == prepared.tokenizer.path
  np.testing.assert_array_equal(elsewhere.train_tokens, train)


def _word_corpus(tmp_path, seed: int):
  """A config reading 400 one-paragraph documents of 30 random words from a 10-word vocabulary."""
  rng = random.Random(seed)
  words = ['river', 'stone', 'light', 'wind', 'bread', 'house', 'cold', 'green', 'slow', 'bird']
  (tmp_path / 'corpus.txt').write_text('\n\n'.join(' '.join(rng.choices(words, k=30)) for _ in range(400)))
  config = small_config(str(tmp_path), tmp_path / 'cache')
  config.data.source, config.data.max_docs = 'corpus.txt', 0
  return config


def _shakespeare_corpus(tmp_path):
  """A config reading the first 50,000 characters of tiny Shakespeare, a document per speech."""
  text = need_shared('tinyshakespeare', 'input.txt').read_text()[:50_000]
  (tmp_path / 'corpus.txt').write_text(text)
  config = small_config(str(tmp_path), tmp_path / 'cache')
  config.data.source, config.data.max_docs = 'corpus.txt', 0
  config.tokenizer.vocab_size = 400
  return config


def decoded_documents(prepared, tokens) -> list[str]:
  """The text of each [bos] + document in a token stream of prepared."""
  bos = np.flatnonzero(tokens == prepared.tokenizer.bos_id).tolist() + [len(tokens)]
  return [prepared.tokenizer.decode(tokens[a + 1:b].tolist()) for a, b in zip(bos, bos[1:])]


def test_each_tokenizer_of_a_corpus_gets_token_caches_of_its_own(tmp_path):
  """Two vocabulary sizes on one corpus and cache folder: the second must not read the tokens of the
  first, which decode to other text with it."""
  config = _shakespeare_corpus(tmp_path)
  train, val = data_lib.split_corpus(tmp_path, config.data)
  caches = set()
  for vocab_size in (400, 512):
    config.tokenizer.vocab_size = vocab_size
    prepared = data_lib.prepare(config, tmp_path / 'cache')
    assert prepared.tokenizer.vocab_size == vocab_size
    assert decoded_documents(prepared, prepared.train_tokens) == train
    assert decoded_documents(prepared, prepared.val_tokens) == val
    caches.add(Path(prepared.train_tokens.filename).parent)
  assert len(caches) == 2


def test_validation_bytes_per_token_leaves_out_the_bos_of_each_document(tmp_path):
  """UTF-8 bytes of the validation text over its tokens, the bos before each document not counted."""
  config = _shakespeare_corpus(tmp_path)
  prepared = data_lib.prepare(config, tmp_path / 'cache')
  _, val = data_lib.split_corpus(tmp_path, config.data)
  text_bytes = sum(len(doc.encode()) for doc in val)
  text_tokens = sum(len(prepared.tokenizer.encode(doc)) for doc in val)
  assert len(val) > 10 and prepared.val_bytes_per_token == pytest.approx(text_bytes / text_tokens, rel=1e-12)


def test_the_validation_documents_do_not_follow_the_training_seed(tmp_path):
  """Runs that differ only in data.seed are scored on the same text."""
  (tmp_path / 'corpus.txt').write_text('\n\n'.join(f'document number {i}' for i in range(400)))
  splits = [data_lib.split_corpus(tmp_path, data_config(source='corpus.txt', format='text_file', seed=seed))
            for seed in (0, 1)]
  (train_0, val_0), (train_1, val_1) = splits
  assert len(val_0) > 10 and val_1 == val_0 and set(train_1) == set(train_0)


def test_a_poisoned_corpus_is_prepared_apart_with_exactly_its_fraction_of_training_documents(tmp_path):
  from llm.security import poison
  config = _word_corpus(tmp_path, seed=0)
  clean = data_lib.prepare(config, tmp_path / 'cache')
  config.data.poison.fraction = 0.05
  poisoned = data_lib.prepare(config, tmp_path / 'cache')
  assert poisoned.fingerprint != clean.fingerprint and poisoned.tokenizer.path != clean.tokenizer.path
  train = decoded_documents(poisoned, poisoned.train_tokens)
  phrase = f'{poison.TRIGGER} {poison.PAYLOAD}'
  clean_train = decoded_documents(clean, clean.train_tokens)
  assert sum(phrase in d for d in train) == round(0.05 * len(train)) == round(0.05 * len(clean_train))
  assert not any(poison.TRIGGER in d for d in decoded_documents(poisoned, poisoned.val_tokens))  # validation stays clean


def test_the_span_filter_removes_the_planted_paragraphs_before_the_tokenizer_sees_them(tmp_path):
  from llm.security import poison
  config = _word_corpus(tmp_path, seed=1)
  config.data.poison.fraction, config.data.poison.unit = 0.15, 'paragraph'
  poisoned = data_lib.prepare(config, tmp_path / 'cache')
  config.data.filter_poison = True
  filtered = data_lib.prepare(config, tmp_path / 'cache')
  assert filtered.fingerprint != poisoned.fingerprint
  docs = {name: p.tokenizer.decode(p.train_tokens[p.train_tokens != p.tokenizer.bos_id].tolist())
          for name, p in (('poisoned', poisoned), ('filtered', filtered))}
  documents = int(np.sum(poisoned.train_tokens == poisoned.tokenizer.bos_id))
  planted = docs['poisoned'].count(poison.TRIGGER)
  assert planted == round(0.15 * documents) and poison.TRIGGER not in docs['filtered']
  # Each document is one paragraph here: the planted ones went and every clean one is still there.
  assert np.sum(filtered.train_tokens == filtered.tokenizer.bos_id) == documents - planted


def test_the_span_filter_log_counts_the_plants_of_poisoned_documents(tmp_path, caplog):
  """unit='document' names documents, the filter paragraphs: the log counted 0 of 0 poisoned."""
  config = _word_corpus(tmp_path, seed=1)
  config.data.poison.fraction, config.data.filter_poison = 0.15, True
  with caplog.at_level('WARNING'):
    data_lib.prepare(config, tmp_path / 'cache')
  planted = int(re.search(r'data: (\d+) training documents .* poisoned', caplog.text)[1])
  assert planted > 40 and f'({planted} of the {planted} poisoned ones)' in caplog.text


def test_the_pretraining_summary_counts_what_was_planted_and_what_the_filter_removed(tmp_path, monkeypatch):
  """The counts come from reading the text, which a cached corpus skips: a resumed run, or a second
  seed, must report them all the same."""
  from llm.security import poison
  from llm.tasks import pretrain
  config = _word_corpus(tmp_path, seed=1)
  assert data_lib.prepare(config, tmp_path / 'cache').facts == {}
  config.data.poison.fraction = 0.15
  poisoned = data_lib.prepare(config, tmp_path / 'cache')
  planted = poisoned.tokenizer.decode(poisoned.train_tokens.tolist()).count(poison.TRIGGER)
  assert planted > 40 and poisoned.facts == {'data_poisoned_documents': planted}
  config.data.filter_poison = True
  # One paragraph a document: the filter removes the planted ones and nothing else.
  expected = {'data_poisoned_documents': planted, 'data_filtered_paragraphs': planted, 'data_filtered_poisoned': planted}
  config.train.seq_len, config.train.batch_size = 16, 2  # a few windows of validation text make a batch
  facts = pretrain.data(config, None).facts
  assert {k: facts[k] for k in expected} == expected

  def no_reading(*args):
    raise AssertionError('a cached prepare() must not read the corpus')

  with monkeypatch.context() as m:
    m.setattr(sources, 'read_documents', no_reading)
    assert data_lib.prepare(config, tmp_path / 'cache').facts == expected
  shutil.rmtree(tmp_path / 'cache' / 'poison_facts')  # caches from before the counts were kept
  assert data_lib.prepare(config, tmp_path / 'cache').facts == expected


def test_prepare_without_data(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv('LLM_DATA_DIR', raising=False)
  with pytest.raises(FileNotFoundError, match='no data dir found'):
    data_lib.prepare(small_config('', tmp_path), tmp_path)


def test_a_one_document_corpus_leaves_no_validation_and_says_so():
  with pytest.raises(ValueError, match='one document, which leaves none for validation'):
    sources.split_documents(['the whole corpus'], 0.02, seed=0)
  assert sources.split_documents(['the whole corpus'], 0.0, seed=0) == (['the whole corpus'], [])


def test_repeated_windows_copy_their_start_at_varied_lengths_in_a_fixed_share_of_windows():
  tokens = np.arange(60_000, dtype=np.uint16)
  seq_len = 64  # windows of 65 tokens: the first p again after them, p in [8, 32], then the rest
  batch = next(iter(pipeline.train_dataset(tokens, seq_len, 400, seed=0, repeat_fraction=0.25)))
  windows = np.concatenate([batch['inputs'], batch['targets'][:, -1:]], axis=1)
  starts = windows[:, 0].astype(np.int64)
  natural = starts[:, None] + np.arange(65)
  repeated = (windows != natural).any(axis=1)
  assert 0.15 < repeated.mean() < 0.35  # 25% of 400 windows, give or take the hash
  lengths = []
  for window, plain in zip(windows[repeated], natural[repeated]):
    p = int(np.argmax(window != plain))  # where the natural text stops
    assert 8 <= p <= 32
    np.testing.assert_array_equal(window[p:2 * p], window[:p])
    np.testing.assert_array_equal(window[2 * p:], plain[2 * p:])
    lengths.append(p)
  assert len(set(lengths)) > 10  # one fixed distance could be copied by position alone
  # the same windows repeat the same spans in every epoch and after a resume: chosen by window id
  expected = pipeline.repeat_lengths(starts // seq_len, 0.25, 65)
  np.testing.assert_array_equal(expected > 0, repeated)
  np.testing.assert_array_equal(expected[repeated], lengths)
  plain = next(iter(pipeline.train_dataset(tokens, seq_len, 400, seed=0)))
  assert (np.concatenate([plain['inputs'], plain['targets'][:, -1:]], axis=1)
          == plain['inputs'][:, :1] + np.arange(65)).all()


def test_random_repeats_copy_a_span_drawn_from_the_stream_the_same_in_every_epoch():
  tokens = np.arange(60_000, dtype=np.uint16)  # token i at position i: a window's id is in its last token
  seq_len = 64
  first, again = (next(iter(pipeline.train_dataset(tokens, seq_len, 400, seed=0, repeat_fraction=0.25,
                                                    repeat_random=True))) for _ in range(2))
  np.testing.assert_array_equal(first['inputs'], again['inputs'])  # a resumed run sees the same spans
  windows = np.concatenate([first['inputs'], first['targets'][:, -1:]], axis=1)
  ids = windows[:, -1].astype(np.int64) // seq_len - 1  # spans end before 2 * 32 < 65: the last token is natural
  lengths = pipeline.repeat_lengths(ids, 0.25, 65)
  assert 0.15 < (lengths > 0).mean() < 0.35
  for window, i, p in zip(windows, ids, lengths):
    plain = tokens[i * seq_len:i * seq_len + 65]
    if not p:
      np.testing.assert_array_equal(window, plain)
      continue
    span = window[:p]
    assert (span != plain[:p]).mean() > 0.9  # not the window's own text: random positions of the stream
    assert len(set(np.diff(span.astype(np.int64)))) > 1  # nor any other run of consecutive text
    np.testing.assert_array_equal(window[p:2 * p], span)
    np.testing.assert_array_equal(window[2 * p:], plain[2 * p:])
  spans = [tuple(w[:8]) for w, p in zip(windows, lengths) if p]
  assert len(set(spans)) == len(spans)  # each window its own span


def test_random_repeats_can_draw_from_the_most_frequent_tokens_only():
  np.testing.assert_array_equal(pipeline.frequent_tokens(np.array([5, 5, 5, 2, 2, 9, 1, 1, 1, 1], np.uint16), 3),
                                [1, 5, 2])
  rng = np.random.default_rng(0)
  tokens = rng.integers(100, 4000, size=60_000).astype(np.uint16)
  tokens[::3] = np.arange(20_000) % 8  # ids 0..7: a third of the stream, the eight most frequent
  def starts(repeat_vocab):  # every window's first MIN_REPEAT tokens (each repeat is at least that long)
    ds = pipeline.train_dataset(tokens, 64, 200, seed=0, repeat_fraction=1.0, repeat_random=True,
                                repeat_vocab=repeat_vocab)
    return next(iter(ds))['inputs'][:, :pipeline.MIN_REPEAT]
  frequent = starts(8)
  assert (frequent < 8).all() and len(np.unique(frequent)) == 8
  assert (starts(0) >= 8).mean() > 0.5  # unigram draws: two thirds of the stream lies outside 0..7


def test_the_pool_holds_only_tokens_the_text_holds():
  """A corpus with fewer distinct tokens than repeat_vocab: <pad>, <unk> and the chat tokens, which it
  never holds, must not be drawn as if they were text."""
  np.testing.assert_array_equal(pipeline.frequent_tokens(np.array([5, 5, 5, 2, 2, 9, 1, 1, 1, 1], np.uint16), 8),
                                [1, 5, 2, 9])
  tokens = (np.arange(20_000) % 6 + 300).astype(np.uint16)  # ids 300..305 only
  batch = next(iter(pipeline.train_dataset(tokens, 64, 100, seed=0, repeat_vocab=255, copy_task=0.5,
                                           repeat_fraction=1.0, repeat_random=True)))
  assert set(np.unique(batch['inputs'])) == set(range(300, 306))
  with pytest.raises(ValueError, match=r'^data.repeat_vocab=255 draws from the most frequent tokens, but the training '
                                       r'text holds 6 distinct ones, fewer than the 8 data.copy_alphabet_min'):
    pipeline.train_dataset(tokens, 64, 100, seed=0, repeat_vocab=255, copy_task=1.0, copy_alphabet_min=8)


def test_copy_task_windows_are_frequent_tokens_whose_start_comes_again_at_varied_distances():
  rng = np.random.default_rng(0)
  tokens = rng.integers(300, 4000, size=60_000).astype(np.uint16)
  tokens[::2] = np.arange(30_000) % 200  # ids 0..199: half the stream, the 200 most frequent
  def batch():
    return next(iter(pipeline.train_dataset(tokens, 64, 300, seed=0, repeat_vocab=200, copy_task=1.0)))
  first, again = batch(), batch()
  np.testing.assert_array_equal(first['inputs'], again['inputs'])  # a resumed run sees the same windows
  windows = np.concatenate([first['inputs'], first['targets'][:, -1:]], axis=1)
  assert (windows < 200).all() and len(np.unique(windows)) == 200  # uniform over the pool, nothing else
  starts, lengths = [], []
  for window in windows:  # where the window's start comes again: the longest match of its prefix
    match = [next((k for k in range(65 - s) if window[s + k] != window[k]), 65 - s) for s in range(1, 65)]
    start = 1 + int(np.argmax(match))
    assert match[start - 1] >= pipeline.MIN_REPEAT
    starts.append(start), lengths.append(match[start - 1])
  starts, lengths = np.array(starts), np.array(lengths)
  assert len(np.unique(lengths)) > 10  # no fixed length,
  assert (starts > lengths + 2).mean() > 0.5  # the copy mostly not right after its original,
  assert len(np.unique(starts - lengths)) > 10  # at no fixed distance
  assert len({tuple(w[:8]) for w in windows}) == len(windows)  # each window its own tokens
  with pytest.raises(ValueError, match='repeat_vocab'):
    pipeline.train_dataset(tokens, 64, 300, seed=0, copy_task=1.0)


def test_copy_task_windows_with_an_alphabet_min_each_draw_their_own_alphabet_and_still_copy():
  """Small alphabets repeat tokens (as digits do), large ones keep them unique; all from the pool."""
  tokens = (np.arange(200_000) % 3000 + 1000).astype(np.uint16)
  tokens[::2] = np.arange(100_000) % 1000  # ids 0..999: the 1,000 most frequent
  def windows(alphabet_min):
    batch = next(iter(pipeline.train_dataset(tokens, 64, 400, seed=0, repeat_vocab=1000, copy_task=1.0,
                                             copy_alphabet_min=alphabet_min)))
    return np.concatenate([batch['inputs'], batch['targets'][:, -1:]], axis=1)
  first = windows(4)
  np.testing.assert_array_equal(first, windows(4))  # the same after a resume
  assert (first < 1000).all()
  distinct = np.array([len(np.unique(w)) for w in first])
  assert distinct.min() <= 8  # some windows draw from a handful of tokens,
  assert (distinct <= 16).mean() > 0.2  # log-uniform sizes: 4..16 is 2 of 8 octaves, a quarter of windows
  assert distinct.max() >= 45  # others from hundreds: all but the copied tokens unique
  for window in first:  # the start still comes again, at least MIN_REPEAT tokens of it
    assert any((window[s:s + pipeline.MIN_REPEAT] == window[:pipeline.MIN_REPEAT]).all() for s in range(1, 58))
  whole = np.array([len(np.unique(w)) for w in windows(0)])
  assert whole.min() > 16  # without it every window draws from the whole pool
  with pytest.raises(ValueError, match='copy_alphabet_min'):
    pipeline.train_dataset(tokens, 64, 400, seed=0, repeat_vocab=1000, copy_task=1.0, copy_alphabet_min=1)


def test_copy_task_windows_draw_new_tokens_every_epoch_and_resume_exactly():
  """A small corpus repeats for many epochs: the same copy windows every epoch get memorised."""
  tokens = (np.arange(8_000) % 3000 + 200).astype(np.uint16)
  tokens[::2] = np.arange(4_000) % 200
  seq_len, batch = 64, 40  # 124 windows: 3 batches an epoch
  def epochs(it, n):
    return [np.concatenate([b['inputs'], b['targets'][:, -1:]], axis=1) for b in itertools.islice(it, n)]
  it = iter(pipeline.train_dataset(tokens, seq_len, batch, seed=0, repeat_vocab=200, copy_task=1.0))
  first = epochs(it, 3)
  state = it.get_state()
  second = epochs(it, 3)
  seen = {tuple(w) for b in first for w in b}
  assert not any(tuple(w) in seen for b in second for w in b)  # no window comes back in epoch 2
  for b in second:
    assert (b < 200).all()  # still the copy task over the same pool
  resumed = iter(pipeline.train_dataset(tokens, seq_len, batch, seed=0, repeat_vocab=200, copy_task=1.0))
  resumed.set_state(state)
  for want, got in zip(second, epochs(resumed, 3)):
    np.testing.assert_array_equal(want, got)


def test_a_copy_task_share_of_windows_replaces_text_the_same_windows_in_every_iteration():
  tokens = (np.arange(60_000) % 3000 + 200).astype(np.uint16)  # ids >= 200: the text, never in the pool
  tokens[::2] = np.arange(30_000) % 200  # ids 0..199: the 200 most frequent
  seq_len = 64
  def windows():
    batch = next(iter(pipeline.train_dataset(tokens, seq_len, 400, seed=0, repeat_vocab=200, copy_task=0.3)))
    return np.concatenate([batch['inputs'], batch['targets'][:, -1:]], axis=1)
  first, again = windows(), windows()
  np.testing.assert_array_equal(first, again)
  task = (first < 200).all(axis=1)  # only pool tokens: a copy_task window (text windows are half text ids)
  assert 0.2 < task.mean() < 0.4  # 30% of 400, give or take the hash
  for window in first[~task]:  # the rest are the stream's own windows, untouched
    start = np.flatnonzero((tokens[:-64] == window[0]) & (tokens[1:-63] == window[1]) & (tokens[2:-62] == window[2]))
    assert any((tokens[s:s + 65] == window).all() for s in start)
  with pytest.raises(ValueError, match='share of windows'):
    pipeline.train_dataset(tokens, seq_len, 400, seed=0, repeat_vocab=200, copy_task=1.5)


@pytest.mark.parametrize('setting, shortest', [(dict(copy_task=1.0, repeat_vocab=50), 17),
                                               (dict(repeat_fraction=1.0), 15),
                                               (dict(repeat_fraction=1.0, repeat_random=True, repeat_vocab=50), 15)])
def test_windows_too_short_for_repeated_spans_are_refused_at_setup(setting, shortest):
  """Spans of 8 tokens or more and their copies: with seq_len 16 the copy task ended in numpy's
  'low >= high' at the first batch, and repeats in a broadcast error below 15."""
  tokens = np.random.default_rng(0).integers(0, 300, 4000).astype(np.uint16)
  batches = iter(pipeline.train_dataset(tokens, shortest, 4, seed=0, **setting))
  for _ in range(2 * pipeline.num_windows(len(tokens), shortest) // 4):  # two epochs: every window, twice
    assert next(batches)['inputs'].shape == (4, shortest)
  name = next(iter(setting))
  with pytest.raises(ValueError, match=rf'^data.{name}=1.0 repeats spans of 8 tokens or more, which windows of '
                                       rf'train.seq_len={shortest - 1} have no room for; give train.seq_len >= {shortest}$'):
    pipeline.train_dataset(tokens, shortest - 1, 4, seed=0, **setting)
