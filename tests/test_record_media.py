"""A run whose every record was skipped is recognised (train then fails instead of exiting 0)."""

from __future__ import annotations

import json

from llava_star.training.record_media import every_record_failed


def _failures(path, ids):
    path.write_text("".join(json.dumps({"id": i, "video": f"{i}.mp4", "reason": "x"}) + "\n" for i in ids))
    return path


def test_every_record_failed(tmp_path):
    records = [{"id": "a"}, {"id": "b"}, {"id": 3}]
    assert every_record_failed(_failures(tmp_path / "all.jsonl", ["a", "b", "3", "a"]), records)
    assert not every_record_failed(_failures(tmp_path / "some.jsonl", ["a", "a", "3"]), records)
    assert not every_record_failed(tmp_path / "none.jsonl", records)  # no failures file: nothing failed
    assert not every_record_failed(None, records)
