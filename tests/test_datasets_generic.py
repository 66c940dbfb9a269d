import json
import random
from pathlib import Path

import pytest

from llava_star.datasets import get_adapter
from llava_star.datasets.adapter import Found, PrepareRequest, Skipped
from llava_star.datasets.generic import parse_mapping
from llava_star.errors import AnnotationError, ConfigError

CSV = """clip,species,behaviour,t0,t1,count,split
zoo/cam1_0001.mp4,otter,swimming,2.5,7.0,3,train
zoo/cam1_0002.mp4,otter,,1.0,2.0,1,train
zoo/cam2_0001.mp4,heron,eating,0,4,1,val
"""
MAPPING = """
video: clip
task: action_recognition
split: split
templates: ["What is the {animal} doing?", "Is the {animal} swimming or not?", "Which behaviour does the {animal} show?"]
slots: {animal: species}
labels:
  - {type: class, column: behaviour, name: behaviour, vocabulary: [swimming, eating, sleeping]}
  - {type: time_range, columns: [t0, t1]}
  - {type: number, column: count, name: count, tolerance: 0}
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def run(tmp_path, annotations, mapping_text, **options):
    mapping = write(tmp_path, "mapping.yaml", mapping_text)
    request = PrepareRequest("generic", annotations, tmp_path, mapping=mapping, rng=random.Random(0), **options)
    return list(get_adapter("generic")(request))


def test_csv_rows_with_the_readme_mapping(tmp_path):
    results = run(tmp_path, write(tmp_path, "clips.csv", CSV), MAPPING)
    sample = results[0].sample
    assert sample.id == "clips:2" and sample.video == "zoo/cam1_0001.mp4" and sample.source == "clips"
    assert [label.to_dict() for label in sample.labels] == [
        {"type": "class", "value": "swimming", "name": "behaviour", "vocabulary": ["swimming", "eating", "sleeping"]},
        {"type": "time_range", "value": [2.5, 7.0]},
        {"type": "number", "value": 3.0, "name": "count", "tolerance": 0},
    ]
    assert "otter" in sample.question
    assert [(r.reason, r.where.rsplit(":", 1)[-1]) for r in results if isinstance(r, Skipped)] == [
        ("empty label column 'behaviour'", "3")
    ]
    assert results[2].sample.labels[0].value == "eating"


def test_question_never_contains_the_class(tmp_path):
    annotations = write(tmp_path, "clips.csv", CSV)
    for seed in range(20):
        mapping = write(tmp_path, "mapping.yaml", MAPPING)
        request = PrepareRequest("generic", annotations, tmp_path, mapping=mapping, rng=random.Random(seed))
        sample = next(r.sample for r in get_adapter("generic")(request) if isinstance(r, Found))
        assert "swimming" not in sample.question


def test_split_filter(tmp_path):
    results = run(tmp_path, write(tmp_path, "clips.csv", CSV), MAPPING, split="validation")
    assert [r.sample.video for r in results] == ["zoo/cam2_0001.mp4"]


def test_jsonl_with_typed_values_and_packaged_templates(tmp_path):
    rows = [
        {
            "id": "a1",
            "path": "v/a1.mp4",
            "thing": "red squares",
            "n": 3,
            "box": [0.1, 0.2, 0.5, 0.6],
            "steps": ["enter", "jump", "exit"],
            "answer": True,
            "s": 1.0,
            "e": 3.5,
        },
        {
            "id": "a2",
            "path": "v/a2.mp4",
            "thing": "cars",
            "n": "2",
            "box": "[0, 0, 1, 1]",
            "steps": "enter;exit",
            "answer": "no",
            "s": None,
            "e": None,
        },
    ]
    annotations = write(tmp_path, "rows.jsonl", "\n".join(json.dumps(row) for row in rows) + "\n")
    mapping = """
video: path
id: id
start: s
end: e
task: counting
source: shapes
slots: {thing: thing}
labels:
  - {type: number, column: n, name: count}
  - {type: box, column: box}
  - {type: sequence, column: steps}
  - {type: yes_no, column: answer}
"""
    first, second = (r.sample for r in run(tmp_path, annotations, mapping))
    assert (first.id, first.start, first.end, first.source, first.task) == ("a1", 1.0, 3.5, "shapes", "counting")
    assert [label.value for label in first.labels] == [3.0, (0.1, 0.2, 0.5, 0.6), ("enter", "jump", "exit"), True]
    assert [label.value for label in second.labels] == [2.0, (0.0, 0.0, 1.0, 1.0), ("enter", "exit"), False]
    assert second.start is None
    assert "red squares" in first.question


def test_question_column_and_choice_options(tmp_path):
    annotations = write(tmp_path, "qa.csv", "video,q,a,opt_a,opt_b\nx.mp4,What is held?,B,A cup,A pen\n")
    mapping = """
video: video
task: multiple_choice
question: q
labels:
  - {type: choice, column: a, options_columns: {A: opt_a, B: opt_b}}
"""
    sample = run(tmp_path, annotations, mapping)[0].sample
    assert sample.question == "What is held?"
    assert sample.labels[0].to_dict() == {"type": "choice", "value": "B", "options": {"A": "A cup", "B": "A pen"}}


@pytest.mark.parametrize(
    "mapping, message",
    [
        ("video: v\ntask: caption\nlabels: [{type: text, column: c}]\ncolour: red\n", "mapping key 'colour': unknown"),
        (
            "video: v\ntask: caption\nlabels: [{type: colour, column: c}]\n",
            r"labels\[0\]\.type: unknown label type 'colour'",
        ),
        ("video: v\ntask: caption\nlabels: [{type: text, column: c, weight: 2}]\n", r"labels\[0\]\.weight: unknown"),
        (
            "video: v\ntask: caption\nlabels: [{type: number, columns: [a, b]}]\n",
            r"labels\[0\]\.columns: only time_range",
        ),
        ("video: v\ntask: caption\nlabels: [{type: box, columns: [a, b]}]\n", r"labels\[0\]\.columns"),
        (
            "video: v\ntask: caption\nlabels: [{type: text}]\n",
            r"labels\[0\]: give exactly one of 'column' or 'columns'",
        ),
        ("video: v\ntask: caption\nlabels: []\n", "mapping key 'labels': expected a non-empty list"),
        ("task: caption\nlabels: [{type: text, column: c}]\n", "mapping key 'video' is required"),
        (
            "video: v\ntask: counting\nlabels: [{type: number, column: c}]\n",
            r"the templates need \['thing'\], the mapping gives \[\]",
        ),
        ("video: v\ntask: judging\nlabels: [{type: number, column: c}]\n", "'judging' has no packaged templates"),
        ("- video\n", "expected a YAML mapping of keys"),
        ("video: !!python/object/apply:os.system [echo hi]\n", "not valid YAML"),
        ("video: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_mappings_name_the_key(tmp_path, mapping, message):
    with pytest.raises(ConfigError, match=message):
        run(tmp_path, write(tmp_path, "a.csv", "v,c\nx.mp4,1\n"), mapping)


@pytest.mark.parametrize(
    "csv_text, message",
    [
        (
            "clip,species,behaviour,t0,t1,count,split\nx.mp4,otter,swimming,two,7,3,train\n",
            r"clips\.csv:2: column 't0,t1': expected a number",
        ),
        (
            "clip,species,behaviour,t0,t1,count,split\nx.mp4,otter,swimming,7,2,3,train\n",
            r"clips\.csv:2: label t0\+t1: value: a time_range needs 0 <= start <= end",
        ),
        ("clip,species,behaviour,t0,t1,count,split\nx.mp4,otter,swimming,1,2,3\n", r"clips\.csv:2: expected 7 fields"),
        (
            "clip,animal,behaviour,t0,t1,count,split\nx.mp4,otter,swimming,1,2,3,train\n",
            r"clips\.csv:2: no column 'species'",
        ),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, csv_text, message):
    with pytest.raises(AnnotationError, match=message):
        run(tmp_path, write(tmp_path, "clips.csv", csv_text), MAPPING)


def test_bad_jsonl_lines_name_the_line(tmp_path):
    mapping = "video: v\ntask: caption\nlabels: [{type: text, column: c}]\n"
    with pytest.raises(AnnotationError, match=r"rows\.jsonl:2: not valid JSON"):
        run(tmp_path, write(tmp_path, "rows.jsonl", '{"v": "a.mp4", "c": "x"}\n{"v": \n'), mapping)
    with pytest.raises(AnnotationError, match=r"rows\.jsonl:1: expected a JSON object"):
        run(tmp_path, write(tmp_path, "rows.jsonl", '["a.mp4"]\n'), mapping)
    with pytest.raises(AnnotationError, match="expected a .csv, .tsv or .jsonl file"):
        run(tmp_path, write(tmp_path, "rows.xml", "<a/>"), mapping)


def test_parse_mapping_accepts_own_templates_for_any_task_name():
    mapping = parse_mapping(
        {
            "video": "v",
            "task": "dive_quality",
            "templates": ["How good is it?"],
            "labels": [{"type": "number", "column": "s"}],
        }
    )
    assert mapping.task == "dive_quality" and mapping.templates == ("How good is it?",)


def test_the_documented_example_runs_as_documented(tmp_path):
    readme = (Path(__file__).parents[1] / "docs" / "data.md").read_text()
    section = readme.split("### Any labeled table: the generic adapter", 1)[1]
    table = section.split("```text\n", 1)[1].split("```", 1)[0]
    mapping = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    sample = run(tmp_path, write(tmp_path, "clips.csv", table), mapping)[0].sample
    assert sample.to_dict() == {
        "id": "clips:2",
        "video": "zoo/cam1_0001.mp4",
        "question": "What is the otter doing?",
        "labels": [
            {
                "type": "class",
                "value": "swimming",
                "name": "behaviour",
                "vocabulary": ["swimming", "eating", "sleeping"],
            },
            {"type": "time_range", "value": [2.5, 7.0]},
            {"type": "number", "value": 3.0, "name": "count", "tolerance": 0},
        ],
        "source": "clips",
        "task": "action_recognition",
    }


def test_a_box_of_three_numbers_names_the_line(tmp_path):
    annotations = write(
        tmp_path, "rows.jsonl", '{"v": "a.mp4", "b": [0.1, 0.2, 0.3, 0.4]}\n{"v": "b.mp4", "b": [0.1, 0.2, 0.3]}\n'
    )
    mapping = "video: v\ntask: grounding\nslots: {thing: v}\nlabels: [{type: box, column: b}]\n"
    with pytest.raises(AnnotationError, match=r"rows\.jsonl:2: label b: value: a box label needs four numbers"):
        run(tmp_path, annotations, mapping)
