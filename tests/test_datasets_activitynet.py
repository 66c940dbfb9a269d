import json
import random
from pathlib import Path

import pytest

from llava_star.datasets import get_adapter
from llava_star.datasets.adapter import PrepareRequest, Skipped
from llava_star.errors import AnnotationError

DATA = Path(__file__).parent / "data"


def run(annotations, video_root):
    request = PrepareRequest("activitynet_captions", Path(annotations), Path(video_root), rng=random.Random(0))
    return list(get_adapter("activitynet_captions")(request))


def test_real_entries_become_one_time_range_per_sentence(tmp_path):
    (tmp_path / "bXdq2zI1Ms0.mp4").touch()  # one video stored without the v_ prefix
    samples = [r.sample for r in run(DATA / "activitynet_captions_val_1_sample.json", tmp_path)]
    assert len(samples) == 2 + 3 + 8
    coach = samples[1]
    assert coach.id == "v_uqiMw7tQ1Cc:2"
    assert coach.labels[0].to_dict() == {
        "type": "time_range",
        "value": [13.79, 54.32],
        "duration": 55.15,
        "name": "The coach helps the guy in red with the proper body placement and lifting technique",
    }
    assert samples[2].video == "bXdq2zI1Ms0.mp4" and samples[0].video == "v_uqiMw7tQ1Cc.mp4"
    assert samples[2].labels[0].value == (0.0, 10.23)  # an int 0 start
    last = samples[-1]
    assert last.labels[0].value == (169.92, 175.17) and last.labels[0].duration == 175.17  # float noise rounded


def test_segments_past_the_end_are_clamped_or_skipped(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(
        json.dumps({"v_x": {"duration": 10.0, "timestamps": [[2, 12.5], [10.0, 11]], "sentences": [" A.", " B."]}})
    )
    results = run(path, tmp_path)
    assert results[0].sample.labels[0].value == (2.0, 10.0)
    assert isinstance(results[1], Skipped)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"duration": 10, "timestamps": [[1, 2]], "sentences": []}, "key 'v_x': expected lists"),
        ({"duration": -1, "timestamps": [], "sentences": []}, "key 'v_x': duration: expected seconds >= 0"),
        ({"duration": 10, "timestamps": [[1]], "sentences": ["a"]}, r"key 'v_x': \[0\]: expected \[start, end\]"),
        ({"duration": 10, "timestamps": [[5, 1]], "sentences": ["a"]}, r"\[0\]: end 1\.0 is before start 5\.0"),
    ],
)
def test_malformed_entries_name_the_key(tmp_path, entry, message):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"v_x": entry}))
    with pytest.raises(AnnotationError, match=message):
        run(path, tmp_path)
