"""A full disk or an unwritable folder (issue 27) is an OutputError naming the file, and
what was written before stays: no raw OSError traceback, no half-written file."""

from __future__ import annotations

import errno
import json
import os

import pytest

from llava_star.errors import LlavaStarError, OutputError
from llava_star.io import JsonlAppender, read_jsonl, write_json_atomic


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_during_an_atomic_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"kept": 1})
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(OutputError, match=rf"{path}: cannot write: No space left on device") as caught:
        write_json_atomic(path, {"kept": 2})
    assert isinstance(caught.value, LlavaStarError)  # the CLI prints it without a traceback
    assert json.loads(path.read_text()) == {"kept": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no temporary left


def test_a_read_only_folder_names_the_file(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(OutputError, match=r"out\.json: cannot write: Read-only file system"):
        write_json_atomic(tmp_path / "out.json", {})


def test_a_full_disk_while_appending_names_the_shard_and_keeps_its_lines(tmp_path, monkeypatch):
    path = tmp_path / "generations.rank00000-of-00001.jsonl"
    with JsonlAppender(path) as out:
        out.write({"id": "a"})
    out = JsonlAppender(path)
    monkeypatch.setattr(os, "write", _no_space)
    with pytest.raises(OutputError, match=r"generations\.rank00000-of-00001\.jsonl: cannot write: No space"):
        out.write({"id": "b"})
    monkeypatch.undo()
    out.close()
    assert list(read_jsonl(path)) == [{"id": "a"}]
