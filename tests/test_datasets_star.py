import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest

from llava_star.datasets import get_adapter
from llava_star.datasets.adapter import Found, PrepareRequest, Skipped
from llava_star.datasets.star import (
    VideoInfo,
    action_in_every_keyframe,
    normalized_box,
    probe_video,
)
from llava_star.errors import AnnotationError

DATA = Path(__file__).parent / "data"
RECORD = json.loads((DATA / "star_val_sample.json").read_text())[0]


def run(annotations, video_root):
    request = PrepareRequest("star", Path(annotations), Path(video_root), rng=random.Random(0))
    return list(get_adapter("star")(request))


def by_task(results):
    return {r.sample.task: r.sample for r in results if isinstance(r, Found)}


def write_mp4(path: Path, width=640, height=480, frames=6, fps=30) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        image = np.zeros((height, width, 3), np.uint8)
        for _ in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_real_record_with_a_placeholder_video(tmp_path):
    (tmp_path / "6H78U.mp4").touch()
    results = run(DATA / "star_val_sample.json", tmp_path)
    samples = by_task(results)
    choice = samples["multiple_choice"]
    assert choice.id == "Interaction_T1_13"
    assert choice.video == "6H78U.mp4"
    assert (choice.start, choice.end) == (11.1, 19.6)
    assert choice.labels[0].to_dict() == {
        "type": "choice",
        "value": "C",
        "name": "answer",
        "options": {"A": "The closet/cabinet.", "B": "The blanket.", "C": "The clothes.", "D": "The table."},
    }
    assert "Which object was tidied up by the person?" in choice.question
    assert "(C) The clothes." in choice.question  # options are listed, the answer key is not given
    when = samples["temporal_localization"]
    assert when.labels[0].to_dict() == {"type": "time_range", "value": [11.1, 19.6], "name": "action"}
    assert '"tidy some clothes"' in when.question  # a004, the action in every keyframe
    assert when.start is None  # asked on the whole video
    assert [r.reason for r in results if isinstance(r, Skipped)] == [
        "video cannot be probed (size and frame rate unknown)"
    ]


def test_real_record_with_a_decodable_video_gets_a_normalized_box(tmp_path):
    write_mp4(tmp_path / "6H78U.mp4")
    samples = by_task(run(DATA / "star_val_sample.json", tmp_path))
    box = samples["grounding"]
    # o019 "clothes" is boxed in both keyframes; the middle one of the two is 000339
    assert box.labels[0].type == "box" and box.labels[0].name == "clothes"
    assert box.labels[0].value == pytest.approx((139.1 / 640, 162.63 / 480, 197.93 / 640, 211.75 / 480), abs=1e-6)
    assert box.meta["keyframe"] == "000339"
    assert box.meta["keyframe_seconds"] == pytest.approx(339 / 30)
    assert box.start == pytest.approx(339 / 30 - 0.5) and box.end == pytest.approx(339 / 30 + 0.5)
    assert "clothes" in box.question
    # the 0.2 s test video ends long before the 11.1 s clip: no time range can be asked
    assert "temporal_localization" not in samples


def test_probe_reads_the_header(tmp_path):
    info = probe_video(write_mp4(tmp_path / "v.mp4", width=64, height=48, frames=3, fps=10))
    assert (info.width, info.height, info.fps) == (64, 48, 10.0)
    assert info.duration == pytest.approx(0.3, abs=0.05)
    (tmp_path / "empty.mp4").touch()
    assert probe_video(tmp_path / "empty.mp4") is None


def test_normalized_box():
    info = VideoInfo(640, 480, 30.0, None)
    assert normalized_box([0, 0, 640, 480], info, "x") == (0.0, 0.0, 1.0, 1.0)
    assert normalized_box([-1, 0, 641, 480], info, "x") == (0.0, 0.0, 1.0, 1.0)  # a pixel past the edge
    with pytest.raises(AnnotationError, match="here: box .* is not x1 < x2"):
        normalized_box([100, 10, 50, 20], info, "here")
    with pytest.raises(AnnotationError, match="outside the 640x480 frame"):
        normalized_box([10, 10, 900, 20], info, "here")


def test_action_in_every_keyframe():
    keyframes = [(1, {"actions": ["a002", "a004"]}), (2, {"actions": ["a004", "a001"]})]
    assert action_in_every_keyframe(keyframes) == "a004"
    assert action_in_every_keyframe([(1, {"actions": ["a002"]}), (2, {"actions": ["a004"]})]) is None
    assert action_in_every_keyframe([]) is None


def write_records(tmp_path, records):
    path = tmp_path / "STAR_test.json"
    path.write_text(json.dumps(records))
    return path


def test_test_split_without_answer_gives_no_choice_sample(tmp_path):
    record = copy.deepcopy(RECORD)
    del record["answer"]
    results = run(write_records(tmp_path, [record]), tmp_path)
    reasons = [r.reason for r in results if isinstance(r, Skipped)]
    assert "no answer (test split)" in reasons
    assert "multiple_choice" not in by_task(results)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.update(answer="The sofa."), r"Interaction_T1_13: answer 'The sofa\.' is not one of the choices"),
        (lambda r: r.update(end=5.0), r"Interaction_T1_13: end 5\.0 is not after start 11\.1"),
        (lambda r: r.update(choices=r["choices"][:1]), r"Interaction_T1_13: choices: expected a list of 2-8"),
        (
            lambda r: r["situations"]["000198"].update(bbox=[[1, 2, 3]]),
            r"situations\['000198'\]: bbox and bbox_labels differ",
        ),
        (
            lambda r: r["situations"]["000198"]["bbox"].__setitem__(0, [1, 2, 3]),
            r"situations\['000198'\]\.bbox: expected \[x1, y1, x2, y2\]",
        ),
        (lambda r: r.pop("video_id"), r"\[0\]: video_id: expected a non-empty string"),
        (
            lambda r: (
                r["situations"]["000198"].update(actions=["a004", "a999"])
                or r["situations"]["000339"].update(actions=["a999"])
            ),
            "unknown action id 'a999'",
        ),
    ],
)
def test_malformed_records_name_the_question(tmp_path, change, message):
    record = copy.deepcopy(RECORD)
    change(record)
    with pytest.raises(AnnotationError, match=message):
        run(write_records(tmp_path, [record]), tmp_path)


def test_not_a_list_is_refused(tmp_path):
    with pytest.raises(AnnotationError, match="expected a JSON list of STAR records"):
        run(write_records(tmp_path, {"a": 1}), tmp_path)
