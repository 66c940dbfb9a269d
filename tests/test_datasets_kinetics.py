import random
from pathlib import Path

import pytest

from llava_star.datasets import get_adapter
from llava_star.datasets.adapter import Found, PrepareRequest, Skipped
from llava_star.datasets.kinetics import (
    choose_vocabulary,
    label_folder_names,
    read_rows,
)
from llava_star.datasets.vocabularies import load_vocabulary
from llava_star.errors import AnnotationError

DATA = Path(__file__).parent / "data"


def run(dataset, annotations, video_root, **options):
    request = PrepareRequest(dataset, Path(annotations), Path(video_root), rng=random.Random(0), **options)
    return list(get_adapter(dataset)(request))


def found(results):
    return [result.sample for result in results if isinstance(result, Found)]


@pytest.fixture
def clip_root(tmp_path):
    """Placeholder files at the real clip paths listed in kinetics_clip_filenames.txt."""
    root = tmp_path / "videos"
    for line in (DATA / "kinetics_clip_filenames.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            (root / line).parent.mkdir(parents=True, exist_ok=True)
            (root / line).touch()
    return root


K400_LABELS = [
    "abseiling",
    "air drumming",
    "answering questions",
    "applauding",
    "applying cream",
    "massaging person's head",
    "passing American football (in game)",
    "skiing (not slalom or crosscountry)",
]


def test_k400_csv_quoted_labels_become_class_labels(tmp_path):
    samples = found(run("kinetics400", DATA / "kinetics400_val_sample.csv", tmp_path))
    assert [s.labels[0].value for s in samples] == K400_LABELS
    first = samples[0]
    assert first.id == "-3B32lodo2M_000059_000069"
    assert first.video == "-3B32lodo2M_000059_000069.mp4"  # not on disk: the expected flat name
    assert first.task == "action_recognition" and first.source == "kinetics400"
    assert first.labels[0].to_dict() == {
        "type": "class",
        "value": "abseiling",
        "name": "action",
        "vocabulary": "kinetics400",
    }
    assert first.meta == {"youtube_id": "-3B32lodo2M", "time_start": 59, "time_end": 69, "split": "val"}
    assert first.start is None and first.end is None  # clips are already trimmed
    for sample in samples:
        assert sample.labels[0].value.lower() not in sample.question.lower()


def test_vocabulary_is_a_reference_not_a_copy(tmp_path):
    sample = found(run("kinetics700", DATA / "kinetics700_validate_sample.csv", tmp_path))[0]
    assert sample.labels[0].vocabulary == "kinetics700"
    assert len(str(sample.to_dict())) < 600


def test_k600_val_without_is_cc_and_auto_version(tmp_path):
    samples = found(run("kinetics", DATA / "kinetics600_val_sample.csv", tmp_path))
    assert [(s.meta["youtube_id"], s.labels[0].value) for s in samples] == [
        ("0wR5jVB-WPk", "abseiling"),
        ("3caPS4FHFF8", "abseiling"),
        ("08MqsEmN19s", "acting in play"),
        ("8EvN-TTHykY", "acting in play"),
        ("-7O581Lzrb4", "adjusting glasses"),
        ("--nQbRBEz2s", "air drumming"),
    ]
    # "acting in play" is not a Kinetics-400 class, so the smallest list that fits is K600
    assert {s.labels[0].vocabulary for s in samples} == {"kinetics600"}
    assert {s.source for s in samples} == {"kinetics600"}


def test_k600_test_without_label_column_is_skipped_and_counted(tmp_path):
    results = run("kinetics600", DATA / "kinetics600_test_sample.csv", tmp_path)
    assert len(results) == 4
    assert all(isinstance(r, Skipped) and r.reason == "no label (test split)" for r in results)
    assert results[0].where.endswith("kinetics600_test_sample.csv:2")


def test_k700_validate_split_answers_to_val(tmp_path):
    csv_samples = found(run("kinetics700", DATA / "kinetics700_validate_sample.csv", tmp_path, split="val"))
    assert [s.labels[0].value for s in csv_samples] == ["testifying", "washing feet", "air drumming"]
    assert found(run("kinetics700", DATA / "kinetics700_validate_sample.csv", tmp_path, split="train")) == []


def test_json_variant_matches_the_csv(tmp_path):
    json_samples = found(run("kinetics700", DATA / "kinetics700_validate_sample.json", tmp_path, split="validate"))
    csv_samples = found(run("kinetics700", DATA / "kinetics700_validate_sample.csv", tmp_path))
    assert [(s.id, s.labels[0].value) for s in json_samples] == [(s.id, s.labels[0].value) for s in csv_samples[:2]]
    assert json_samples[0].id == "---QUuC4vJs_000084_000094"


def test_real_clip_layouts_are_found(clip_root):
    k400 = {
        s.meta["youtube_id"]: s.video for s in found(run("kinetics", DATA / "kinetics400_val_sample.csv", clip_root))
    }
    assert k400["-3B32lodo2M"] == "abseiling/-3B32lodo2M_000059_000069.mp4"
    assert k400["_dbcJuKJQNs"] == "air_drumming/_dbcJuKJQNs_000040_000050.mp4"
    k600 = found(run("kinetics600", DATA / "kinetics600_val_sample.csv", clip_root))
    assert k600[0].video == "videos_val/abseiling/0wR5jVB-WPk_000417_000427.mp4"
    k700 = found(run("kinetics700", DATA / "kinetics700_validate_sample.json", clip_root))
    assert k700[0].video == "videos/---QUuC4vJs_000084_000094.mp4"


def test_class_folder_spellings_and_youtube_id_names(tmp_path):
    root = tmp_path / "videos"
    files = [
        "val/massaging_persons_head/_GTpqutxCK0_000088_000098.mp4",  # torchvision spelling
        "val/passing American football (in game)/_-srTyOqfXo_000002_000012.mp4",  # ActivityNet crawler
        "train/applauding/0Tq8uFakTbk_000000_000010.mp4",  # a copy in another split...
        "val/applauding/0Tq8uFakTbk_000000_000010.mp4",  # ...and the one the row means
        "val/applying_cream/-PBcrI7pXUM.mp4",  # kevinzakka: youtube id only
    ]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    videos = {
        s.meta["youtube_id"]: s.video for s in found(run("kinetics400", DATA / "kinetics400_val_sample.csv", root))
    }
    assert videos["_GTpqutxCK0"] == files[0]
    assert videos["_-srTyOqfXo"] == files[1]
    assert videos["0Tq8uFakTbk"] == files[3]
    assert videos["-PBcrI7pXUM"] == files[4]


def test_a_clip_listed_twice_is_skipped_once(tmp_path):
    path = tmp_path / "k.csv"
    path.write_text("label,youtube_id,time_start,time_end\nabseiling,abc,1,11\nabseiling,abc,1.0,11.0\n")
    results = run("kinetics400", path, tmp_path)
    assert [type(r).__name__ for r in results] == ["Found", "Skipped"]
    assert results[1].reason == "clip listed twice" and results[1].where.endswith("k.csv:3")


def test_label_folder_names():
    assert label_folder_names("skiing (not slalom or crosscountry)") == (
        "skiing (not slalom or crosscountry)",
        "skiing_(not_slalom_or_crosscountry)",
        "skiing_not_slalom_or_crosscountry",
    )
    assert label_folder_names("abseiling") == ("abseiling",)


def test_every_k400_sample_label_is_in_its_vocabulary():
    rows = read_rows(DATA / "kinetics400_val_sample.csv")
    assert choose_vocabulary("kinetics", rows) == "kinetics400"
    assert set(K400_LABELS) <= set(load_vocabulary("kinetics400"))


@pytest.mark.parametrize(
    "content, message",
    [
        ("label,youtube_id,time_start,time_end,split\nabseiling,abc,1,11\n", r"\.csv:2: expected 5 fields"),
        ("label,youtube_id,time_start,time_end\nabseiling,abc,one,11\n", r"\.csv:2: time_start: expected seconds"),
        ("label,youtube_id,time_start,time_end\nabseiling,abc,20,11\n", r"\.csv:2: time_end 11 is not after"),
        ("label,video,time_start,time_end\nabseiling,abc,1,11\n", r"missing column\(s\) \['youtube_id'\]"),
        ('label,youtube_id,time_start,time_end\n"abseiling,abc,1,11\n', r"\.csv:\d+: "),
        (
            "label,youtube_id,time_start,time_end\nflying a kite badly,abc,1,11\n",
            r"\.csv:2: label 'flying a kite badly'",
        ),
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=message):
        run("kinetics400", path, tmp_path)


def test_label_of_another_version_is_refused(tmp_path):
    # "acting in play" is Kinetics-600, so naming kinetics400 is a mistake worth stopping for
    with pytest.raises(
        AnnotationError, match=r"kinetics600_val_sample\.csv:4: label 'acting in play' is not a kinetics400"
    ):
        run("kinetics400", DATA / "kinetics600_val_sample.csv", tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"abc": {"annotations": {"label": "abseiling"}}}', r"key 'abc': annotations\.segment"),
        ('["abc"]', "expected an object keyed by YouTube id"),
        ('{"abc": {"annotations": {"label": "abseiling", "segment": [1, 11]},}', r"bad\.json:1:\d+: not valid JSON"),
    ],
)
def test_malformed_json_names_the_key(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=message):
        run("kinetics", path, tmp_path)
