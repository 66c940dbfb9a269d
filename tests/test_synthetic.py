"""Synthetic videos: files and splits, determinism, and labels that match the pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llava_star import cli
from llava_star.datasets import synthetic
from llava_star.datasets.synthetic import (
    COLOURS,
    SCENES,
    SyntheticConfig,
    draw_blink,
    draw_group,
    draw_moving,
    make_synthetic_dataset,
)
from llava_star.errors import ConfigError
from llava_star.media.video import read_frames, resolve_video_path
from llava_star.records import read_samples

PALETTE = np.array(list(COLOURS.values()), dtype=float)


def _lit(frame: np.ndarray) -> np.ndarray:
    """Pixels of shapes: anything clearly brighter than the black background."""
    return frame.max(axis=-1) > 100


def _nearest_colour(pixels: np.ndarray) -> str:
    distances = ((pixels[:, None, :].astype(float) - PALETTE[None]) ** 2).sum(axis=-1)
    votes = np.bincount(distances.argmin(axis=1), minlength=len(PALETTE))
    return list(COLOURS)[int(votes.argmax())]


def _centroid(frame: np.ndarray) -> np.ndarray:
    rows, columns = np.nonzero(_lit(frame))
    return np.array([columns.mean(), rows.mean()])


def _box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, columns = np.nonzero(mask)
    size = mask.shape[0]
    return (columns.min() / size, rows.min() / size, (columns.max() + 1) / size, (rows.max() + 1) / size)


def _iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _by_task(samples):
    grouped = {}
    for sample in samples:
        grouped.setdefault(sample.task, []).append(sample)
    return grouped


def test_writes_videos_samples_and_a_split_by_video(synthetic_dataset):
    root = synthetic_dataset.root
    assert sorted(p.name for p in (root / "videos").iterdir()) == [f"synthetic-{i:05d}.mp4" for i in range(12)]
    samples = list(read_samples(synthetic_dataset.samples))
    train, test = list(read_samples(synthetic_dataset.train)), list(read_samples(synthetic_dataset.test))
    assert len(samples) == synthetic_dataset.num_samples == 6 * 3 + 3 * 2 + 3 * 1
    assert sorted(s.id for s in train + test) == sorted(s.id for s in samples)
    assert not {s.video for s in train} & {s.video for s in test}
    assert {s.meta["split"] for s in train} == {"train"} and {s.meta["split"] for s in test} == {"test"}
    # every scene kind is on both sides
    assert {s.meta["scene"] for s in test} == {s.meta["scene"] for s in train} == set(SCENES)
    assert set(_by_task(samples)) == {
        "colour",
        "shape",
        "motion_direction",
        "counting",
        "grounding",
        "temporal_localization",
    }
    for sample in samples:
        assert sample.source == "synthetic" and resolve_video_path(root, sample.video).is_file()
        assert str(sample.labels[0].value) not in sample.question
    summary = json.loads(synthetic_dataset.summary.read_text())
    assert summary["num_videos"] == 12 and summary["config"]["size"] == 32
    assert sum(summary["samples"]["test"].values()) == len(test)


def test_same_seed_same_dataset_other_seed_another(synthetic_dataset, tmp_path):
    again = make_synthetic_dataset(tmp_path / "again", num_videos=12, seed=0)
    assert again.samples.read_bytes() == synthetic_dataset.samples.read_bytes()
    video = "videos/synthetic-00005.mp4"
    assert np.array_equal(
        read_frames(again.root / video, 16).array, read_frames(synthetic_dataset.root / video, 16).array
    )
    other = make_synthetic_dataset(tmp_path / "other", num_videos=12, seed=1)
    assert other.samples.read_bytes() != synthetic_dataset.samples.read_bytes()


def test_colour_shape_and_motion_labels_match_the_decoded_pixels(synthetic_dataset):
    tasks = _by_task(read_samples(synthetic_dataset.samples))
    for task, check in [("colour", "colour"), ("motion_direction", "direction")]:
        assert tasks[task], task
        for sample in tasks[task]:
            frames = read_frames(synthetic_dataset.root / sample.video, 8).array
            value = sample.labels[0].value
            if check == "colour":
                # the colour is in every sampled frame, so a model sees it whatever it samples
                assert all(_nearest_colour(frame[_lit(frame)]) == value for frame in frames), sample.id
            else:
                dx, dy = _centroid(frames[-1]) - _centroid(frames[0])
                moved = {"left": -dx, "right": dx, "up": -dy, "down": dy}
                assert max(moved, key=moved.get) == value and moved[value] >= 6, (sample.id, dx, dy)


@pytest.mark.parametrize("seed", range(6))
def test_drawn_shapes_are_told_apart_by_how_much_of_their_box_they_fill(seed):
    scene = draw_moving(np.random.default_rng(seed), SyntheticConfig())
    shape = next(t.label.value for t in scene.tasks if t.task == "shape")
    mask = scene.frames[0].max(axis=-1) > 0
    x0, y0, x1, y1 = (round(v * 32) for v in _box_of(mask))
    fill = mask.sum() / ((x1 - x0) * (y1 - y0))
    assert {"square": fill == 1.0, "circle": 0.7 < fill < 0.9, "triangle": 0.45 < fill < 0.65}[shape], fill


@pytest.mark.parametrize("seed", range(8))
def test_full_travel_crosses_from_edge_to_edge(seed):
    """travel=1.0 (the demo's): the shape starts against one edge and ends against the other."""
    config = SyntheticConfig(travel=1.0)
    scene = draw_moving(np.random.default_rng(seed), config)
    direction = next(t.label.value for t in scene.tasks if t.task == "motion_direction")
    first, last = (_box_of(_lit(frame)) for frame in scene.frames[[0, -1]])
    axis = 0 if direction in ("left", "right") else 1
    start, end = (0.0, 1.0) if direction in ("right", "down") else (1.0, 0.0)
    edge = {0.0: lambda box: box[axis], 1.0: lambda box: box[axis + 2]}
    assert edge[start](first) == start and edge[end](last) == end, (direction, first, last)


def test_count_and_box_labels_match_the_decoded_pixels(synthetic_dataset):
    tasks = _by_task(read_samples(synthetic_dataset.samples))
    for counting, grounding in zip(tasks["counting"], tasks["grounding"]):
        assert counting.video == grounding.video
        frames = read_frames(synthetic_dataset.root / counting.video, 4).array
        frame = frames[0]
        lit = _lit(frame)
        distances = ((frame[..., None, :].astype(float) - PALETTE) ** 2).sum(axis=-1)
        nearest = np.where(lit, distances.argmin(axis=-1), -1)
        colours_seen = [c for c in range(len(PALETTE)) if (nearest == c).sum() >= 12]
        assert len(colours_seen) == counting.labels[0].value, counting.id
        colour = grounding.labels[0].name.split()[0]
        found = _box_of(nearest == list(COLOURS).index(colour))
        assert _iou(found, grounding.labels[0].value) >= 0.7, (grounding.id, found)


def test_time_range_labels_match_when_the_shape_is_on_screen(synthetic_dataset):
    tasks = _by_task(read_samples(synthetic_dataset.samples))
    for sample in tasks["temporal_localization"]:
        frames = read_frames(synthetic_dataset.root / sample.video, 16)  # every frame of the clip
        visible = frames.indices[[bool(_lit(frame).any()) for frame in frames.array]]
        start, end = sample.labels[0].value
        assert (start, end) == (visible.min() / frames.fps, (visible.max() + 1) / frames.fps), sample.id
        assert sample.labels[0].duration == frames.duration == 2.0


def test_scenes_fit_other_sizes():
    config = SyntheticConfig(size=16, num_frames=6, fps=3.0)
    rng = np.random.default_rng(0)
    for draw in (draw_moving, draw_group, draw_blink):
        for _ in range(20):
            scene = draw(rng, config)
            assert scene.frames.shape == (6, 16, 16, 3)


def test_cli_writes_the_dataset(tmp_path):
    assert cli.main(["synthetic", "-o", str(tmp_path / "out"), "--num-videos", "4", "--seed", "3"]) == 0
    assert len(list(read_samples(tmp_path / "out" / "samples.jsonl"))) == 3 + 2 + 3 + 1
    assert len(list((tmp_path / "out" / "videos").glob("*.mp4"))) == 4


@pytest.mark.parametrize(
    "argv, key",
    [(["--num-videos", "0"], "num_videos"), (["--size", "15"], "size"), (["--test-fraction", "1"], "test_fraction")],
)
def test_bad_options_are_config_errors_naming_the_key(tmp_path, argv, key):
    with pytest.raises(ConfigError, match=key):
        synthetic.main(["-o", str(tmp_path), *argv])
    assert cli.main(["synthetic", "-o", str(tmp_path), *argv]) == 2


def test_travel_outside_zero_to_one_is_a_config_error():
    with pytest.raises(ConfigError, match="^travel: "):
        SyntheticConfig(travel=1.5)
