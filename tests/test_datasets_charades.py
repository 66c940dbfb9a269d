import random
import shutil
from pathlib import Path

import pytest

from llava_star.datasets import get_adapter
from llava_star.datasets.adapter import Found, PrepareRequest, Skipped
from llava_star.datasets.charades import parse_actions
from llava_star.errors import AnnotationError

DATA = Path(__file__).parent / "data"
HEADER = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"


def run(dataset, annotations, video_root):
    request = PrepareRequest(dataset, Path(annotations), Path(video_root), rng=random.Random(0))
    return list(get_adapter(dataset)(request))


def samples(results):
    return {r.sample.id: r.sample for r in results if isinstance(r, Found)}


def test_real_rows_become_time_ranges_and_captions(tmp_path):
    results = run("charades", DATA / "charades_v1_test_sample.csv", tmp_path)
    found = samples(results)
    cooking = found["B82GJ:c147"]
    assert cooking.video == "B82GJ.mp4" and cooking.task == "temporal_localization"
    assert cooking.labels[0].to_dict() == {
        "type": "time_range",
        "value": [0.0, 19.9],
        "name": "Someone is cooking something",
        "duration": 24.42,
    }
    assert "cooking something" in cooking.question
    # the STAR cross-check: 6H78U c015 (holding a phone) 0-12.9 s of a 34.46 s video
    assert found["6H78U:c015"].labels[0].value == (0.0, 12.9)
    assert found["6H78U:c015"].labels[0].duration == 34.46
    # c004 and c071 are annotated twice in 6H78U: no single answer, so skipped
    assert "6H78U:c004" not in found and "6H78U:c071" not in found
    skipped = [r.reason for r in results if isinstance(r, Skipped)]
    assert skipped == ["action annotated more than once in the video"] * 4
    time_ranges = [s for s in found.values() if s.task == "temporal_localization"]
    assert len(time_ranges) == 5 + 5 + 4 + 12
    caption = found["YSKX3:caption"]
    assert caption.labels[0].to_dict() == {
        "type": "text",
        "name": "description",
        "value": "A person looks under a mattress and pats the bed.  This person picks up a pillow, and throws it on the bed.",
    }
    assert len(caption.meta["descriptions"]) == 2


def test_ends_are_clamped_to_the_length(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(HEADER + "ABCDE,S,Room,5,6,Yes,script,bed,a person sleeps,c134 2.00 40.00;c135 50.00 60.00,30.00\n")
    results = run("charades", path, tmp_path)
    assert samples(results)["ABCDE:c134"].labels[0].value == (2.0, 30.0)
    assert [r.reason for r in results if isinstance(r, Skipped)] == ["action starts after the end of the video"]


def test_class_names_come_from_the_dataset_file_when_present(tmp_path):
    shutil.copy(DATA / "charades_classes_excerpt.txt", tmp_path / "Charades_v1_classes.txt")
    path = tmp_path / "c.csv"
    path.write_text(HEADER + "ABCDE,S,Room,5,6,Yes,script,clothes,a person,c002 1.00 4.00,10.0\n")
    assert samples(run("charades", path, tmp_path))["ABCDE:c002"].labels[0].name == "Taking some clothes from somewhere"
    path.write_text(HEADER + "ABCDE,S,Room,5,6,Yes,script,clothes,a person,c140 1.00 4.00,10.0\n")
    with pytest.raises(AnnotationError, match=r"c\.csv:2: actions: unknown class 'c140'"):
        run("charades", path, tmp_path)


@pytest.mark.parametrize(
    "row, message",
    [
        ("ABCDE,S,Room,5,6,Yes,s,o,d,c134 2.0,30\n", r"c\.csv:2: actions: expected 'cNNN start end', got 'c134 2\.0'"),
        ("ABCDE,S,Room,5,6,Yes,s,o,d,c134 9.0 2.0,30\n", "ends before it starts"),
        ("ABCDE,S,Room,5,6,Yes,s,o,d,c134 1.0 2.0,long\n", r"c\.csv:2: length: expected seconds"),
        ("ABCDE,S,Room,5,6,Yes,s,o,d,c134 1.0 2.0\n", r"c\.csv:2: expected 11 fields"),
    ],
)
def test_malformed_rows_name_the_line(tmp_path, row, message):
    path = tmp_path / "c.csv"
    path.write_text(HEADER + row)
    with pytest.raises(AnnotationError, match=message):
        run("charades", path, tmp_path)


def test_empty_actions_give_only_a_caption(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(HEADER + "ABCDE,S,Room,5,6,Yes,s,o,a person stands,,30\n")
    assert list(samples(run("charades", path, tmp_path))) == ["ABCDE:caption"]
    assert parse_actions("", "x") == []


def test_charades_sta_lines(tmp_path):
    results = run("charades_sta", DATA / "charades_sta_test_sample.txt", tmp_path)
    found = [r.sample for r in results]
    assert len(found) == 7
    first = found[0]
    assert (first.id, first.video) == ("3MSZA:1", "3MSZA.mp4")
    assert first.labels[0].to_dict() == {"type": "time_range", "value": [24.3, 30.4], "name": "person turn a light on"}
    assert '"person turn a light on"' in first.question
    assert found[3].labels[0].value == (0.0, 3.4)


@pytest.mark.parametrize(
    "line", ["3MSZA 24.3##person turn a light on.", "3MSZA 24.3 30.4 person", "3MSZA 30.4 24.3##x."]
)
def test_charades_sta_malformed_lines(tmp_path, line):
    path = tmp_path / "sta.txt"
    path.write_text("VXJS4 0.0 3.4##a person walks through the doorway.\n" + line + "\n")
    with pytest.raises(AnnotationError, match=r"sta\.txt:2: "):
        run("charades_sta", path, tmp_path)


def test_charades_sta_takes_durations_from_the_charades_csv_beside_it(tmp_path):
    shutil.copy(DATA / "charades_sta_test_sample.txt", tmp_path / "charades_sta_test.txt")
    (tmp_path / "Charades_v1_test.csv").write_text(
        HEADER + "3MSZA,S,Room,5,6,Yes,s,o,d,,28.5\nKVXJ9,S,Room,5,6,Yes,s,o,d,,0.5\n"
    )
    results = run("charades_sta", tmp_path / "charades_sta_test.txt", tmp_path)
    light = results[0].sample.labels[0]
    assert (light.value, light.duration) == ((24.3, 28.5), 28.5)
    assert results[1].sample.labels[0].duration is None  # AMT7R is not in the CSV
    assert [r.reason for r in results if isinstance(r, Skipped)] == ["moment starts after the end of the video"]
