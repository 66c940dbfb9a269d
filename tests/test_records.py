"""Records: validation with file:line errors, crash-safe appends, atomic writes."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from llava_star.datasets.vocabularies import load_vocabulary, resolve_vocabulary
from llava_star.errors import LabelError, RecordError
from llava_star.records import (
    Generation,
    JsonlAppender,
    Label,
    Sample,
    dumps_line,
    read_jsonl,
    read_samples,
    write_json_atomic,
    written_ids,
)

SAMPLE = {
    "id": "k700-0001",
    "video": "abseiling/0wR5jVB-WPk_000417_000427.mp4",
    "question": "What is the person doing?",
    "labels": [{"type": "class", "value": "abseiling", "vocabulary": "kinetics700"}],
    "source": "kinetics700",
    "task": "action_recognition",
}


@pytest.mark.parametrize(
    "label, field",
    [
        ({"type": "colour", "value": "red"}, "type"),
        ({"type": "number", "value": "three"}, "value"),
        ({"type": "time_range", "value": [5.0, 2.0]}, "value"),
        ({"type": "box", "value": [0, 0, 640, 480]}, "value"),
        ({"type": "yes_no", "value": "yes"}, "value"),
        ({"type": "choice", "value": "E", "options": {"A": "x", "B": "y"}}, "value"),
        ({"type": "choice", "value": "A"}, "options"),
        ({"type": "sequence", "value": []}, "value"),
        ({"type": "number", "value": 3, "tolerance": -1}, "tolerance"),
        ({"type": "box", "value": [0, 0, 1, 1], "box_format": "yxyx"}, "box_format"),
        ({"type": "class", "value": "x", "colour": "red"}, "unknown label field"),
    ],
)
def test_bad_labels_name_the_field(label, field):
    with pytest.raises(LabelError, match=field):
        Label.from_dict(label)


def test_label_round_trip_keeps_only_set_fields():
    data = {"type": "time_range", "value": [1.5, 4.0], "duration": 10.0, "min_iou": 0.5}
    label = Label.from_dict(data)
    assert label.value == (1.5, 4.0)
    assert label.to_dict() == data


def test_sample_and_generation_round_trip():
    sample = Sample.from_dict(SAMPLE)
    assert Sample.from_dict(sample.to_dict()) == sample
    generation = Generation(
        sample, "He is abseiling.", False, True, ({"type": "class", "passed": True, "reason": "ok"},), 1, "m"
    )
    line = generation.to_dict()
    assert line["answer"] == "He is abseiling." and line["id"] == SAMPLE["id"]
    assert Generation.from_dict(line) == generation


def test_parsed_records_equal_constructed_ones():
    """``from_dict`` fills the fields at once: the same values, in the same order, as the constructor."""
    label = Label.from_dict({"type": "class", "value": " red ", "synonyms": ["scarlet"], "vocabulary": ["red", "blue"]})
    built = Label("class", "red", synonyms=("scarlet",), vocabulary=("red", "blue"))
    assert label == built and hash(label) == hash(built) and repr(label) == repr(built)
    assert list(vars(label)) == [field.name for field in dataclasses.fields(Label)]
    sample = Sample.from_dict(SAMPLE)
    assert list(vars(sample)) == [field.name for field in dataclasses.fields(Sample)]
    assert sample == Sample(**vars(sample))
    with pytest.raises(dataclasses.FrozenInstanceError):
        label.value = "blue"


@pytest.mark.parametrize(
    "extra",
    [{}, {"start": 1.5, "end": 4.0, "meta": {"note": "naïve café ✓", "n": [1, 2]}}, {"question": 'Qu\'est-ce "là"?\n'}],
)
def test_generation_lines_read_back_as_written(extra, tmp_path):
    sample = Sample.from_dict(SAMPLE | extra)
    checks = ({"type": "class", "passed": False, "reason": "does not name 'abseiling' ✗"},)
    generation = Generation(sample, "Il fait du rappel.", True, False, checks, 2, "m")
    line = dumps_line(generation)
    with JsonlAppender(tmp_path / "g.jsonl") as appender:
        appender.write_lines([line, line])
    assert [Generation.from_dict(data) for data in read_jsonl(tmp_path / "g.jsonl")] == [generation, generation]


def test_reader_names_file_and_line(tmp_path):
    bad = dict(SAMPLE, id="b", labels=[{"type": "colour", "value": "red"}])
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps(SAMPLE) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(LabelError, match=r"samples.jsonl:3: id 'b': labels\[0\]\.type: unknown label type 'colour'"):
        list(read_samples(path))
    path.write_text(json.dumps(SAMPLE) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"samples.jsonl:2: not valid JSON"):
        list(read_samples(path))


def test_torn_last_line_is_skipped_then_repaired(tmp_path):
    path = tmp_path / "gen.jsonl"
    path.write_text(json.dumps(SAMPLE) + "\n" + json.dumps(dict(SAMPLE, id="x"))[:40])
    # an appended file (a shard) skips its torn tail; a samples file, written whole, does not
    assert [s.id for s in read_jsonl(path, Sample.from_dict)] == [SAMPLE["id"]]
    with pytest.raises(RecordError, match=r"gen\.jsonl:2: not valid JSON"):
        list(read_samples(path))
    with JsonlAppender(path) as out:
        out.write(dict(SAMPLE, id="y"))
    assert [s.id for s in read_samples(path)] == [SAMPLE["id"], "y"]


def test_whole_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "gen.jsonl"
    path.write_text(json.dumps(SAMPLE))
    assert written_ids([path]) == {SAMPLE["id"]}
    with JsonlAppender(path) as out:
        out.write(dict(SAMPLE, id="y"))
    assert written_ids([path]) == {SAMPLE["id"], "y"}


def test_killed_writer_leaves_only_whole_lines(tmp_path):
    path = tmp_path / "gen.jsonl"
    script = (
        "import sys, os, signal\n"
        "from llava_star.records import JsonlAppender\n"
        "out = JsonlAppender(sys.argv[1], fsync_every=1)\n"
        "for i in range(100000):\n"
        "    out.write({'id': str(i), 'pad': 'x' * 5000})\n"
        "    if i == 50: os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=False)
    ids = written_ids([path])
    assert ids == {str(i) for i in range(51)}


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "out.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"a": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["out.json"]


def test_vocabularies_by_reference():
    assert len(load_vocabulary("kinetics700")) == 700
    assert len(load_vocabulary("kinetics400")) == 400
    assert resolve_vocabulary(["a", "b"]) == ("a", "b")
    with pytest.raises(LabelError, match="unknown vocabulary 'nope'"):
        load_vocabulary("nope")


def test_vocabulary_file_reference(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("red\n\nblue\n")
    assert load_vocabulary(f"file:{path}") == ("red", "blue")


def test_import_has_no_heavy_side_effects():
    code = "import sys, llava_star, llava_star.records, llava_star.cli; print(sorted(m for m in ('torch','transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_atomic_write_gives_the_mode_open_would(tmp_path):
    """Not mkstemp's private 0600: a trainer running as another user reads train.json."""
    import stat

    from llava_star.records import write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "train.json", [])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "train.json").stat().st_mode) == 0o644
