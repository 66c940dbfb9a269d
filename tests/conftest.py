"""Shared fixtures: small videos written on the fly (never committed media).

``make_video`` writes a clip whose frame ``i`` is uniformly grey at ``FRAME_STEP * i``,
so a test can tell from the pixels which frame a decoder returned
(``frame_numbers.decoded_frame_numbers``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from frame_numbers import numbered_frames


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing reaches a model hub in a test, whatever the shell sets."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_video("clip.mp4", num_frames=32, fps=8.0, size=32, codec=None, **kwargs)``.

    ``frames`` overrides the numbered frames; other keyword arguments go to
    :func:`llava_star.media.encode.write_video` (``options``, ``container_options``).
    """
    from llava_star.media.encode import write_video

    def make(
        name: str = "clip.mp4",
        *,
        num_frames: int = 32,
        fps: float = 8.0,
        size: int = 32,
        frames: np.ndarray | None = None,
        codec: str | None = None,
        **kwargs: object,
    ) -> Path:
        pixels = numbered_frames(num_frames, size) if frames is None else frames
        return write_video(tmp_path / name, pixels, fps=fps, codec=codec, **kwargs)

    return make


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory):
    """A small synthetic dataset shared by the whole session (12 videos, seed 0): read it, don't write to it.

    Returns :class:`llava_star.datasets.synthetic.SyntheticDataset`; its ``root`` is the video root.
    """
    from llava_star.datasets.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), num_videos=12, seed=0)


@pytest.fixture(scope="session")
def train_json(synthetic_dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LLaVA JSON exported (``llava-star export``) from generation shards of the synthetic
    dataset whose answers state the class labels: 12 records of colour, shape and motion
    direction. Its folder holds the shards under ``gen/``, to export again with a mix."""
    from llava_star.records import Generation, JsonlAppender, read_samples
    from llava_star.stages.export import main as export_main

    root = tmp_path_factory.mktemp("export")
    samples = [s for s in read_samples(synthetic_dataset.train) if s.task in ("colour", "shape", "motion_direction")]
    with JsonlAppender(root / "gen" / "generations.rank00000-of-00001.jsonl") as shard:
        for index, sample in enumerate(samples):
            answer = f"The {sample.task.replace('_', ' ')} is {sample.labels[0].value}."
            shard.write(Generation(sample, answer, index % 3 == 0, True, (), 1, "tiny"))
    assert export_main([str(root / "gen"), "-o", str(root / "train.json")]) == 0
    return root / "train.json"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Video-LLaVA built from a config (random weights, a tokenizer trained here),
    shared by the whole session: load it, train into other directories, never write into it."""
    from llava_star.models.tiny import build_tiny_model

    return build_tiny_model("video_llava", tmp_path_factory.mktemp("tiny") / "video_llava")
