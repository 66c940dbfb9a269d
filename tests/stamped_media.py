"""Test media whose every frame says its own number (:func:`frame_numbers.stamped_frames`).

A 6 s video at 10 fps (frames 0-59), a clip doc about 2.0-3.5 s of it (frames 20-34), and a
FineDiving-style folder of 24 jpg frames numbered 100-123, read at 12 fps. Whatever a
decoder does to them (H.264, resizing, normalising), :func:`frame_numbers.read_stamps`
says which frames it returned, so a test can check they lie in the doc's range.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from frame_numbers import stamped_frames

VIDEO_FPS = 10
VIDEO_FRAMES = 60
CLIP = (2.0, 3.5)
CLIP_RANGE = range(20, 35)  # clip_bounds(60, 10.0, 2.0, 3.5)
FOLDER_FIRST = 100
FOLDER_RANGE = range(FOLDER_FIRST, FOLDER_FIRST + 24)


@dataclass(frozen=True)
class StampedMedia:
    videos: Path  # the video root
    samples: Path  # kinetics (whole video), star (the clip) and finediving (the folder) samples
    whole_range: range = range(VIDEO_FRAMES)
    clip_range: range = CLIP_RANGE
    folder_range: range = FOLDER_RANGE


def _samples() -> list[dict]:
    return [
        {
            "id": "k700-whole",
            "video": "kinetics/stamped.mp4",
            "question": "What is happening in this video?",
            "labels": [{"type": "class", "value": "yoga", "vocabulary": ["abseiling", "yoga"]}],
            "source": "kinetics700",
            "task": "action_recognition",
        },
        {
            "id": "star-clip",
            "video": "star/stamped.mp4",
            "start": CLIP[0],
            "end": CLIP[1],
            "question": "Which object was tidied up by the person?\n(A) The blanket. (B) The clothes.",
            "labels": [{"type": "choice", "value": "B", "options": {"A": "The blanket.", "B": "The clothes."}}],
            "source": "star",
            "task": "multiple_choice",
        },
        {
            "id": "fd-folder",
            "video": "FineDiving/dive0",
            "question": "What is the dive's score and difficulty?",
            "labels": [
                {"type": "number", "value": 75.6, "name": "score", "rel_tolerance": 0.05},
                {"type": "number", "value": 3.2, "name": "difficulty", "tolerance": 0.05},
            ],
            "source": "finediving",
            "task": "score",
        },
    ]


def make_stamped_media(root: Path, size: int = 128) -> StampedMedia:
    """Write the stamped video (twice: kinetics and star), the frame folder and the samples."""
    from PIL import Image

    from llava_star.media.encode import write_video

    videos = root / "videos"
    frames = stamped_frames(range(VIDEO_FRAMES), size)
    for name in ("kinetics", "star"):
        write_video(videos / name / "stamped.mp4", frames, fps=VIDEO_FPS)
    folder = videos / "FineDiving" / "dive0"
    folder.mkdir(parents=True)
    for number, image in zip(FOLDER_RANGE, stamped_frames(FOLDER_RANGE, size)):
        Image.fromarray(image).save(folder / f"{number - FOLDER_FIRST:05d}.jpg", quality=90)
    samples = root / "test.jsonl"
    samples.write_text("".join(json.dumps(sample) + "\n" for sample in _samples()), encoding="utf-8")
    return StampedMedia(videos, samples)
