import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest

from llava_star.datasets import get_adapter
from llava_star.datasets.adapter import Found, PrepareRequest, Skipped
from llava_star.datasets.finediving import load_pickle, step_synonyms
from llava_star.errors import AnnotationError

DATA = Path(__file__).parent / "data"
STRUCTURE = json.loads((DATA / "finediving_annotation_structure.json").read_text())
KEY = ("FINADivingWorldCup2021_Men3m_final_r1", 0)
JUDGES = [8.5, 8.5, 8.0, 8.0, 8.5, 8.0, 8.0]  # illustrative, as the structure file says


def real_entry() -> dict:
    """The fine-grained value of the structure file, as the pickle holds it (numpy arrays, int ids)."""
    value = STRUCTURE["equivalent_json_record"]["value"]
    return {
        "action_type": "307C",
        "sub-action_types": {int(k): v for k, v in value["sub-action_types"].items()},
        "judge_scores": JUDGES,
        "dive_score": value["dive_score"],
        "difficulty": value["difficulty"],
        "frames_labels": np.array(value["frames_labels"], dtype=np.int64),
        "steps_transit_frames": np.array(value["steps_transit_frames"], dtype=np.int64),
        "start_frame": value["start_frame"],
        "end_frame": value["end_frame"],
    }


def dump(path: Path, obj, protocol=pickle.HIGHEST_PROTOCOL) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.fixture
def release(tmp_path):
    """A FineDiving release laid out as downloaded: Annotations/ pickles and frame folders."""
    annotations = tmp_path / "Annotations"
    other = ("3mMenSpringboardFinal-EuropeanChampionships2021_2", 5)
    dump(
        annotations / "FineDiving_fine-grained_annotation.pkl",
        {KEY: real_entry(), other: real_entry() | {"dive_score": 70.0}},
    )
    dump(annotations / "Sub_action_Types_Table.pkl", STRUCTURE["Sub_action_Types_Table.pkl"]["contents_name_to_id"])
    dump(annotations / "train_split.pkl", [KEY])
    dump(annotations / "test_split.pkl", [other])
    frames = tmp_path / "FINADiving_MTL_256s"
    for number in range(489, 593):
        (frames / KEY[0] / "0").mkdir(parents=True, exist_ok=True)
        (frames / KEY[0] / "0" / f"{number:05d}.jpg").touch()
    return annotations, frames


def run(annotations, frames, **options):
    request = PrepareRequest("finediving", annotations, frames, rng=random.Random(0), **options)
    return list(get_adapter("finediving")(request))


def test_real_label_triple_becomes_score_difficulty_and_steps(release):
    annotations, frames = release
    results = run(annotations, frames, split="train")
    samples = {r.sample.task: r.sample for r in results if isinstance(r, Found)}
    assert set(samples) == {"score", "difficulty", "step_sequence"}
    score, difficulty, steps = samples["score"], samples["difficulty"], samples["step_sequence"]
    assert score.id == "FINADivingWorldCup2021_Men3m_final_r1_0:score"
    assert score.video == "FINADivingWorldCup2021_Men3m_final_r1/0"  # a frame folder is the video
    assert score.labels[0].to_dict() == {"type": "number", "value": 85.78, "name": "score", "rel_tolerance": 0.05}
    assert difficulty.labels[0].to_dict() == {"type": "number", "value": 3.5, "name": "difficulty", "tolerance": 0.05}
    assert steps.labels[0].value == ("Reverse", "3.5 Soms.Tuck", "Entry")
    assert steps.labels[0].type == "sequence"
    assert steps.labels[0].synonyms["3.5 Soms.Tuck"] == ("3.5 somersaults tuck", "3.5 somersaults tucked")
    assert score.meta["dive_number"] == "307C"
    assert score.meta["judge_scores"] == JUDGES
    assert score.meta["steps_transit_frames"] == [30, 80]  # numpy arrays come back as lists
    assert "85.78" not in score.question and "3.5" not in difficulty.question


def test_numpy_scalars_in_metadata_become_json_numbers(tmp_path):
    entry = real_entry() | {"judge_scores": [np.float32(8.5)] * 7, "start_frame": np.int64(489)}
    dump(tmp_path / "Annotations" / "FineDiving_fine-grained_annotation.pkl", {KEY: entry})
    sample = next(r.sample for r in run(tmp_path / "Annotations", tmp_path) if isinstance(r, Found))
    assert json.loads(json.dumps(sample.to_dict()))["meta"]["start_frame"] == 489
    assert sample.meta["judge_scores"] == [8.5] * 7


def test_split_files_select_keys(release):
    annotations, frames = release
    test_ids = {r.sample.id for r in run(annotations, frames, split="test") if isinstance(r, Found)}
    assert test_ids == {
        f"3mMenSpringboardFinal-EuropeanChampionships2021_2_5:{t}" for t in ("score", "difficulty", "steps")
    }
    assert len([r for r in run(annotations, frames) if isinstance(r, Found)]) == 6
    with pytest.raises(AnnotationError, match=r"--split val: no val_split\.pkl"):
        run(annotations, frames, split="val")


def test_annotation_file_or_folder(release):
    annotations, frames = release
    by_folder = [r.sample.to_dict() for r in run(annotations, frames) if isinstance(r, Found)]
    by_file = run(annotations / "FineDiving_fine-grained_annotation.pkl", frames)
    assert by_folder == [r.sample.to_dict() for r in by_file if isinstance(r, Found)]


def test_steps_keep_first_occurrence_order_and_use_the_table(tmp_path):
    # 37 (0.5 Som.Pike) sorts after 25 by id but happens before it; its name is only in the table
    entry = real_entry() | {
        "frames_labels": np.array([3, 3, 37, 37, 25, 25, 36]),
        "sub-action_types": {3: "Reverse", 25: "3.5 Soms.Tuck", 36: "Entry"},
    }
    annotations = tmp_path / "Annotations"
    dump(annotations / "FineDiving_fine-grained_annotation.pkl", {("14", 3): entry})
    dump(
        annotations / "Sub_action_Types_Table.pkl",
        {v: k for k, v in STRUCTURE["Sub_action_Types_Table.pkl"]["contents_name_to_id"].items()},
    )
    steps = [r.sample for r in run(annotations, tmp_path) if isinstance(r, Found) and r.sample.task == "step_sequence"]
    assert steps[0].labels[0].value == ("Reverse", "0.5 Som.Pike", "3.5 Soms.Tuck", "Entry")
    assert steps[0].video == "14/3"


def test_unknown_sub_action_id_skips_only_the_sequence(tmp_path):
    entry = real_entry() | {"frames_labels": np.array([3, 22, 36])}
    annotations = tmp_path / "Annotations"
    dump(annotations / "FineDiving_fine-grained_annotation.pkl", {KEY: entry})
    results = run(annotations, tmp_path)
    assert [r.sample.task for r in results if isinstance(r, Found)] == ["score", "difficulty"]
    assert [r.reason for r in results if isinstance(r, Skipped)] == ["sub-action id 22 has no name"]


def test_aqa_layout_and_protocol_2(tmp_path):
    frames_labels = np.array([3, 3, 25, 36])
    annotations = tmp_path / "Annotations"
    dump(annotations / "fine-grained_annotation_aqa.pkl", {KEY: ["307C", 85.78, 3.5, None, frames_labels]}, protocol=2)
    dump(
        annotations / "Sub_action_Types_Table.pkl",
        STRUCTURE["Sub_action_Types_Table.pkl"]["contents_name_to_id"],
        protocol=2,
    )
    samples = {r.sample.task: r.sample for r in run(annotations, tmp_path) if isinstance(r, Found)}
    assert samples["score"].labels[0].value == 85.78
    assert samples["difficulty"].labels[0].value == 3.5
    assert samples["step_sequence"].labels[0].value == ("Reverse", "3.5 Soms.Tuck", "Entry")


def test_reencoded_mp4_is_used_when_there_is_no_frame_folder(tmp_path):
    annotations = tmp_path / "Annotations"
    dump(annotations / "FineDiving_fine-grained_annotation.pkl", {("17", 8): real_entry()})
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "17_8.mp4").touch()
    sample = next(r.sample for r in run(annotations, tmp_path / "videos") if isinstance(r, Found))
    assert sample.video == "17_8.mp4"


class RunsAShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CallsEval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = dump(tmp_path / "evil.pkl", {KEY: RunsAShellCommand(marker)})
    with pytest.raises(AnnotationError, match=r"evil\.pkl: refusing to unpickle (posix|nt|os)\.system"):
        load_pickle(path)
    assert not marker.exists()
    evil = dump(tmp_path / "Annotations" / "FineDiving_fine-grained_annotation.pkl", {KEY: RunsAShellCommand(marker)})
    with pytest.raises(AnnotationError, match="refusing to unpickle"):
        run(evil.parent, tmp_path)
    assert not marker.exists()


def test_builtins_other_than_plain_types_are_refused(tmp_path):
    with pytest.raises(AnnotationError, match=r"refusing to unpickle builtins\.eval"):
        load_pickle(dump(tmp_path / "eval.pkl", [CallsEval()]))


def test_plain_data_and_numpy_arrays_load(tmp_path):
    data = {("a", 1): {"x": np.arange(3, dtype=np.int32), "y": np.float64(2.5), "z": {1, 2}, "w": (b"b", 1j)}}
    for protocol in (2, 4, 5):
        loaded = load_pickle(dump(tmp_path / f"p{protocol}.pkl", data, protocol=protocol))
        assert loaded[("a", 1)]["x"].tolist() == [0, 1, 2]
        assert loaded[("a", 1)]["y"] == 2.5


@pytest.mark.parametrize(
    "content, message",
    [
        ({"no-tuple": real_entry()}, r"key 'no-tuple': expected \(competition, index\)"),
        (
            {KEY: {"difficulty": 3.5, "frames_labels": [3]}},
            r"key \('FINADivingWorldCup2021_Men3m_final_r1', 0\): missing field 'dive_score'",
        ),
        ({KEY: real_entry() | {"dive_score": "high"}}, r"dive_score: expected a number, got 'high'"),
        ({KEY: real_entry() | {"frames_labels": ["a", "b"]}}, "frames_labels: expected a list of integer"),
        ({KEY: "307C"}, "expected a dict of fields or the AQA list"),
        ([KEY], r"expected a dict keyed by \(competition, index\)"),
    ],
)
def test_malformed_annotations_name_the_key(tmp_path, content, message):
    dump(tmp_path / "Annotations" / "FineDiving_fine-grained_annotation.pkl", content)
    with pytest.raises(AnnotationError, match=message):
        run(tmp_path / "Annotations", tmp_path)


def test_truncated_pickle_is_an_annotation_error(tmp_path):
    path = dump(tmp_path / "cut.pkl", {KEY: real_entry()})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(AnnotationError, match=r"cut\.pkl: not a readable pickle"):
        load_pickle(path)


def test_step_synonyms_spell_out_the_abbreviated_sub_actions():
    names = [name for name in STRUCTURE["Sub_action_Types_Table.pkl"]["contents_name_to_id"]]
    synonyms = step_synonyms(tuple(names))
    assert synonyms["0.5 Som.Pike"] == ["0.5 somersaults pike", "0.5 somersaults piked"]
    assert synonyms["Arm.Forward"] == ["armstand forward"]
    assert "enter water" in synonyms["Entry"]
    assert "2.5 Twists" not in synonyms  # the verifier reads "two and a half twists" itself
    assert all(name in synonyms for name in names if "Som" in name)
