import random
import shutil
from pathlib import Path

import pytest

from llava_star.datasets import get_adapter
from llava_star.datasets.adapter import Found, PrepareRequest, Skipped
from llava_star.datasets.vocabularies import load_vocabulary
from llava_star.errors import AnnotationError

DATA = Path(__file__).parent / "data"


def run(annotations, video_root):
    request = PrepareRequest("ssv2", Path(annotations), Path(video_root), rng=random.Random(0))
    return list(get_adapter("ssv2")(request))


def classes(results):
    return {r.sample.id: r.sample.labels[0].value for r in results if isinstance(r, Found)}


def test_train_rows_become_bracket_free_templates(tmp_path):
    results = run(DATA / "ssv2_train_sample.json", tmp_path)
    assert classes(results) == {
        "78687": "Holding something next to something",
        "42326": "Spreading something onto something",
        "145274": "Moving something away from something",
        "131791": "Pretending to put something onto something",
    }
    first = results[0].sample
    assert first.video == "78687.webm"
    assert first.labels[0].to_dict() == {
        "type": "class",
        "value": "Holding something next to something",
        "name": "action",
        "vocabulary": "ssv2",
    }
    assert first.meta == {
        "caption": "holding potato next to vicks vaporub bottle",
        "objects": ["potato", "vicks vaporub bottle"],
    }
    assert first.task == "action_recognition" and first.source == "ssv2"


def test_validation_rows_including_a_capitalised_placeholder(tmp_path):
    assert classes(run(DATA / "ssv2_validation_sample.json", tmp_path)) == {
        "74225": "Spinning something that quickly stops spinning",
        "116154": "Showing something on top of something",
        "117478": "Moving something up",
        "36585": "Something falling like a feather or paper",
    }


def test_test_rows_take_classes_from_test_answers(tmp_path):
    shutil.copy(DATA / "ssv2_test_sample.json", tmp_path / "test.json")
    shutil.copy(DATA / "ssv2_test_answers_sample.csv", tmp_path / "test-answers.csv")
    results = run(tmp_path / "test.json", tmp_path)
    assert classes(results) == {
        "1420": "Throwing something",
        "211642": "Scooping something up with something",
        "215493": "Pretending to poke something",
    }
    assert [(r.where.rsplit(" ", 1)[-1], r.reason) for r in results if isinstance(r, Skipped)] == [
        ("166429", "no label (test split)")
    ]


def test_test_rows_without_answers_file_are_all_skipped(tmp_path):
    results = run(DATA / "ssv2_test_sample.json", tmp_path)
    assert len(results) == 4 and all(isinstance(r, Skipped) for r in results)


def test_label_ids_in_labels_json_match_the_packaged_order():
    import json

    labels = json.loads((DATA / "ssv2_labels_sample.json").read_text())
    vocabulary = load_vocabulary("ssv2")
    assert all(vocabulary[int(index)] == name for name, index in labels.items())  # ids are strings


def test_the_class_list_file_is_refused_with_a_hint(tmp_path):
    with pytest.raises(AnnotationError, match=r"labels\.json\); pass train\.json"):
        run(DATA / "ssv2_labels_sample.json", tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        (
            '[{"id": "1", "template": "Juggling [something] badly"}]',
            "id 1: 'Juggling something badly' is not one of the 174",
        ),
        ('[{"label": "x"}]', r"\[0\]: expected an object with an 'id'"),
        ('[{"id": "1", "template": 5}]', "id 1: template: expected a string"),
        ('[{"id": "1",}]', r"bad\.json:1:\d+: not valid JSON"),
    ],
)
def test_malformed_rows(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(AnnotationError, match=message):
        run(tmp_path / "bad.json", tmp_path)
