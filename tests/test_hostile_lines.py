"""Samples-file lines are validated at the boundary (issue 27): every hostile line is a
RecordError naming the file and line, never a traceback, a hang or an exhausted node."""

from __future__ import annotations

import json
import os
import time

import pytest

from llava_star.errors import RecordError, VideoError
from llava_star.io import MAX_INTEGER_DIGITS, MAX_LINE_BYTES, MAX_NESTING, read_jsonl
from llava_star.media.video import resolve_video_path
from llava_star.records import MAX_QUESTION_CHARS, check_unique_ids, read_samples

GOOD = {
    "id": "k700/0",
    "video": "abseiling/a.mp4",
    "question": "What is the person doing?",
    "labels": [{"type": "class", "value": "abseiling"}],
    "source": "kinetics700",
    "task": "action",
}


def _samples(tmp_path, *lines: str | bytes):
    path = tmp_path / "samples.jsonl"
    good = json.dumps(GOOD).encode()
    with open(path, "wb") as handle:
        handle.write(good + b"\n")
        handle.writelines((line.encode() if isinstance(line, str) else line) + b"\n" for line in lines)
    return path


def _line(**changes) -> str:
    return json.dumps({**GOOD, "id": "k700/1", **changes})


HOSTILE = [
    ("nan in meta", '{"id": "x", "meta": {"fps": NaN}}', "NaN"),
    ("infinity", '{"id": "x", "start": Infinity}', "Infinity"),
    ("400-digit integer", '{"id": "x", "meta": {"n": ' + "9" * 400 + "}}", "400 digits"),
    ("5000-digit integer", '{"id": "x", "meta": {"n": ' + "9" * 5000 + "}}", "5000 digits"),
    ("float out of range", '{"id": "x", "start": 1e400}', "out of range"),
    ("nesting 200,000 deep", '{"id": "x", "meta": ' + "[" * 200_000 + "]" * 200_000 + "}", "nested deeper"),
    (
        "nesting past the bound",
        '{"id": "x", "meta": ' + "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1) + "}",
        "nested",
    ),
    ("200 KB question", _line(question="why " * 50_000), f"more than {MAX_QUESTION_CHARS:,}"),
    ("NUL in the video path", _line(video="a\u0000b.mp4"), "NUL byte"),
    ("integer id", _line(id=7), "id: expected a string, got int 7"),
    ("line over the bound", '{"id": "x", "question": "' + "a" * MAX_LINE_BYTES + '"}', "longer than"),
]


@pytest.mark.parametrize("line, reason", [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE])
def test_a_hostile_line_is_an_error_naming_file_and_line(tmp_path, line, reason):
    path = _samples(tmp_path, line)
    started = time.monotonic()
    with pytest.raises(RecordError) as caught:
        list(read_samples(path))
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert message.startswith(f"{path}:2: ") and reason in message, message
    assert len(message) < 2_000  # the error quotes no megabytes


def test_a_50_mb_line_is_refused_without_reading_it_whole(tmp_path):
    path = _samples(tmp_path, b'{"id": "x", "question": "' + b"a" * (50 * 1024 * 1024))
    with pytest.raises(RecordError, match=r"samples\.jsonl:2: a line longer than"):
        list(read_samples(path))


def test_a_malformed_last_line_of_a_samples_file_is_an_error_not_a_warning(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"id": "k700/1", "vid')
    with pytest.raises(RecordError, match=r"samples\.jsonl:2: not valid JSON"):
        list(read_samples(path))


def test_a_generation_shard_still_skips_a_torn_tail(tmp_path):
    path = tmp_path / "shard.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b", "ans')
    assert list(read_jsonl(path)) == [{"id": "a"}]


def test_duplicate_ids_are_an_error_naming_both_lines(tmp_path):
    path = _samples(tmp_path, _line(), json.dumps(GOOD))
    with pytest.raises(RecordError, match=r"samples\.jsonl:3: id 'k700/0' is already the id of line 1"):
        list(read_samples(path))


def test_numbers_within_the_bounds_are_read(tmp_path):
    big = int("9" * MAX_INTEGER_DIGITS)
    nested = "[" * (MAX_NESTING - 2) + "]" * (MAX_NESTING - 2)
    path = _samples(tmp_path, _line(meta={"n": big, "x": -1.5e300, "deep": json.loads(nested)}, start=1.5))
    samples = list(read_samples(path))
    assert samples[1].meta["n"] == big and samples[1].start == 1.5


def test_a_symlink_loop_is_a_video_error(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    os.symlink(root / "loop", root / "loop")
    with pytest.raises(VideoError, match=r"'loop/x\.mp4': cannot resolve"):
        resolve_video_path(root, "loop/x.mp4")


def test_check_unique_ids_names_both_lines_and_leaves_bad_lines_to_the_reader(tmp_path):
    path = _samples(tmp_path, "not json", _line(id="k700/2"), json.dumps(GOOD))
    with pytest.raises(RecordError, match=r"samples\.jsonl:4: id 'k700/0' is already the id of line 1"):
        check_unique_ids(path)
    check_unique_ids(path, limit=3)  # the duplicate is past the limit
