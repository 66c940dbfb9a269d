"""Whole-file JSON inputs (training data, annotation files, generic JSONL rows) that nest
200,000 deep or hold a 5,000-digit integer are errors naming the file (issue 27), not a
RecursionError or ValueError traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from llava_star.datasets.adapter import load_json
from llava_star.datasets.generic import read_rows
from llava_star.errors import AnnotationError, RecordError
from llava_star.llava_json import load_record_list

DEEP = "[" * 200_000 + "]" * 200_000
HUGE = '[{"id": "a", "n": ' + "9" * 5000 + "}]"


@pytest.mark.parametrize("text, reason", [(DEEP, "nested too deeply"), (HUGE, "digits")])
def test_training_data(tmp_path: Path, text, reason):
    (tmp_path / "train.json").write_text(text)
    with pytest.raises(RecordError, match=rf"train\.json: .*{reason}"):
        load_record_list(tmp_path / "train.json")
    (tmp_path / "train.jsonl").write_text('{"id": "ok"}\n' + text + "\n")
    with pytest.raises(RecordError, match=rf"train\.jsonl:2: .*{reason}"):
        load_record_list(tmp_path / "train.jsonl")


@pytest.mark.parametrize("text, reason", [(DEEP, "nested too deeply"), (HUGE, "digits")])
def test_annotation_files(tmp_path: Path, text, reason):
    (tmp_path / "STAR_train.json").write_text(text)
    with pytest.raises(AnnotationError, match=rf"STAR_train\.json: .*{reason}"):
        load_json(tmp_path / "STAR_train.json")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"video": "a.mp4"}\n' + text.removeprefix("[").removesuffix("]") + "\n")
    with pytest.raises(AnnotationError, match=rf"rows\.jsonl:2: .*{reason}"):
        list(read_rows(rows))
