"""llm.files on a full disk: the file it could not write is named, and nothing is left half done."""
import errno
import os
import stat
import types

import pytest

import full_disk
from llm import files


def test_a_write_on_a_full_disk_names_the_file_and_leaves_the_old_one_and_no_temporary_file(tmp_path, monkeypatch):
  path = tmp_path / 'config.json'
  path.write_text('{"old": 1}\n')
  full_disk.fill(tmp_path, setattr=monkeypatch.setattr)
  with pytest.raises(OSError) as e:
    files.write_atomically(path, '{"new": 2}\n')
  assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(path))
  assert [p.name for p in tmp_path.iterdir()] == ['config.json'] and path.read_text() == '{"old": 1}\n'


def test_the_writability_check_finds_a_full_disk_and_names_the_folder(tmp_path, monkeypatch):
  """An empty file still fits on a full disk: an empty probe passed, and the run failed later."""
  full_disk.fill(tmp_path, setattr=monkeypatch.setattr)
  with pytest.raises(OSError) as e:
    files.check_writable(tmp_path / 'run')
  assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(tmp_path / 'run'))
  assert list((tmp_path / 'run').iterdir()) == []  # no probe left behind


def test_an_atomic_write_is_synced_to_the_disk_before_its_rename_and_the_rename_after(tmp_path, monkeypatch):
  """Without fsync a power cut soon after the rename can leave an empty file (a file system may
  commit the rename before the data), the very thing the rename is there to prevent; the rename
  itself is an entry in the folder, on the disk once the folder is synced."""
  calls = []
  real_fsync, real_replace = os.fsync, os.replace

  def fsync(descriptor):
    status = os.fstat(descriptor)
    calls.append('fsync the folder' if stat.S_ISDIR(status.st_mode) else f'fsync a file of {status.st_size} bytes')
    real_fsync(descriptor)

  def replace(source, target):
    calls.append(f'rename to {os.path.basename(target)}')
    real_replace(source, target)

  monkeypatch.setattr(os, 'fsync', fsync)
  monkeypatch.setattr(os, 'replace', replace)
  files.write_atomically(tmp_path / 'summary.json', '{"loss": 2.5}\n')
  assert calls == ['fsync a file of 14 bytes', 'rename to summary.json', 'fsync the folder']
  assert (tmp_path / 'summary.json').read_text() == '{"loss": 2.5}\n'


@pytest.mark.parametrize('reader', ['run config', 'scaling run', 'evaluated summary', 'token cache', 'host peaks',
                                    'launch record', 'kernel choices'])
def test_a_json_file_a_reader_cannot_parse_is_named(tmp_path, monkeypatch, reader):
  """Every reader of a run's or a cache's JSON names the broken file; json's own error named none
  ('Expecting value: line 1 column 1')."""
  from llm import hostinfo, init_from, inference, scaling
  from llm.data import cache
  from llm.evals import context
  from llm.kernels import cpu_attention
  import ml_collections
  names = {'run config': 'config.json', 'scaling run': 'summary.json', 'evaluated summary': 'summary.json',
           'token cache': 'meta.json', 'host peaks': 'host_peaks.json', 'launch record': 'init_from.json',
           'kernel choices': 'kernels/choices.json'}
  broken = tmp_path / names[reader]
  broken.parent.mkdir(exist_ok=True)
  monkeypatch.setattr(cpu_attention, 'choice_key', lambda kernel, shape: 'key')  # no kernel built for the test
  (tmp_path / 'config.json').write_text('{"task": "pretrain"}')
  broken.write_text('{"val_loss": 3.1,')  # cut short
  monkeypatch.setenv('LLM_CACHE_DIR', str(tmp_path))
  read = {'run config': lambda: inference.run.read_config(tmp_path),
          'scaling run': lambda: scaling.load_runs([tmp_path]),
          'evaluated summary': lambda: context.Context.from_run(types.SimpleNamespace(workdir=tmp_path)),
          'token cache': lambda: cache.load_cache_meta(tmp_path),
          'host peaks': lambda: hostinfo.cpu_peak_flops.__wrapped__(),
          'launch record': lambda: init_from.located(ml_collections.ConfigDict({'init_from': 'base'}), tmp_path),
          'kernel choices': lambda: cpu_attention._decide('causal', (1, 8, 2, 2, 16), lambda *shape: (1.0, 2.0))}
  with pytest.raises(ValueError, match=rf'^{broken} is not valid JSON \('):
    read[reader]()
