"""llm.files on a full disk: the file it could not write is named, and nothing is left half done."""
import errno

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
