"""Synthetic labeled videos: coloured shapes that move, blink and stand in groups.

Tests, benchmarks and the CPU demo need a labeled video dataset that is small, made on
the spot (no downloads, no committed media) and learnable by a ~200k-parameter model
looking at 32x32 frames. Each clip is one of three scenes drawn on a black background:

- ``moving``: one shape crosses the frame in a straight line, visible in every frame.
  Tasks ``colour``, ``shape``, ``motion_direction`` (class labels). The colour task is
  the one a tiny model learns: one flat colour from four far-apart ones, on every frame.
- ``group``: one to four still shapes of different colours. Tasks ``counting``
  (number, ``name="count"``) and ``grounding`` (box of one named shape, normalized xyxy).
- ``blink``: one still shape visible for part of the clip. Task
  ``temporal_localization`` (time_range in seconds, with the clip ``duration``).

Scenes cycle moving, group, moving, blink, so half the videos carry the colour task.

With ``prior_only=True`` each moving scene also carries the task ``background``: "What
colour is the background?", whose label is ``black`` for every clip. It is answerable
from the dataset's prior without looking at the video, the case the grounding check
(``generate --grounding-check``) exists to flag; the other tasks need the video.
The split into train and test is by video (all questions about a video fall on the
same side), stratified by scene. A sample line (``video`` is relative to the output
folder, which is the video root)::

    {"id": "synthetic-00000-colour", "video": "videos/synthetic-00000.mp4",
     "question": "What colour is the object in the video?",
     "labels": [{"type": "class", "value": "red", "name": "colour",
                 "vocabulary": ["red", "green", "blue", "yellow"]}],
     "source": "synthetic", "task": "colour", "meta": {"scene": "moving", "split": "train"}}

Everything is drawn from one seeded ``numpy.random.Generator`` (scenes, split) and one
seeded ``random.Random`` (question paraphrases): the same seed writes the same files.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from llava_star.datasets.questions import make_question
from llava_star.errors import ConfigError
from llava_star.records import Label, Sample, write_json_atomic, write_jsonl_atomic

logger = logging.getLogger(__name__)

SOURCE = "synthetic"
# Four colours far apart in RGB and in YUV (the codec keeps chroma at half resolution).
COLOURS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {"red": (230, 30, 30), "green": (30, 200, 40), "blue": (40, 70, 240), "yellow": (240, 220, 40)}
)
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
DIRECTION_SYNONYMS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "left": ("leftward", "leftwards", "to the left"),
        "right": ("rightward", "rightwards", "to the right"),
        "up": ("upward", "upwards", "to the top"),
        "down": ("downward", "downwards", "to the bottom"),
    }
)
# (dx, dy) per direction in image coordinates (y grows downwards)
_STEPS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
)
SCENE_CYCLE = ("moving", "group", "moving", "blink")
MAX_GROUP = 4  # shapes in a group scene: one per quadrant
BACKGROUND = (0, 0, 0)
BACKGROUND_COLOURS = ("black", "white", "grey")  # the background task's vocabulary; always black


@dataclass(frozen=True)
class SyntheticConfig:
    """How the clips look. Defaults: 32x32, 16 frames at 8 fps (2 s), a quarter for test."""

    size: int = 32
    num_frames: int = 16
    fps: float = 8.0
    test_fraction: float = 0.25
    prior_only: bool = False  # add the background task, answerable without the video
    # how far a moving shape travels, as a fraction of the room it has (frame side minus
    # shape side): 1.0 crosses from edge to edge; None: about a third of the frame side
    travel: float | None = None

    def __post_init__(self) -> None:
        if self.size < 16 or self.size % 2:
            raise ConfigError(f"size: expected an even number of pixels >= 16, got {self.size}")
        if self.num_frames < 4:
            raise ConfigError(f"num_frames: expected at least 4, got {self.num_frames}")
        if not self.fps > 0:
            raise ConfigError(f"fps: expected a positive rate, got {self.fps}")
        if self.travel is not None and not 0 < self.travel <= 1:
            raise ConfigError(f"travel: expected a fraction in (0, 1], got {self.travel}")
        if not 0 <= self.test_fraction < 1:
            raise ConfigError(f"test_fraction: expected a fraction in [0, 1), got {self.test_fraction}")

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    @property
    def shape_size(self) -> int:
        """Side of a lone shape: large enough to tell a circle from a square at 32 px."""
        return max(6, self.size * 5 // 16)


@dataclass(frozen=True)
class SceneTask:
    """One question to ask about a scene: the question task, its template slots, the label."""

    task: str
    label: Label
    slots: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Scene:
    """A drawn clip and the questions it answers."""

    kind: str
    frames: np.ndarray  # uint8 [T, H, W, 3]
    tasks: tuple[SceneTask, ...]


@dataclass(frozen=True)
class SyntheticDataset:
    """Where :func:`make_synthetic_dataset` put things; ``root`` is the video root."""

    root: Path
    samples: Path
    train: Path
    test: Path
    summary: Path
    num_videos: int
    num_samples: int


def shape_mask(shape: str, size: int) -> np.ndarray:
    """A filled ``shape`` in a ``size`` x ``size`` boolean mask (triangle points up).

    >>> shape_mask("triangle", 4).astype(int).tolist()
    [[0, 1, 1, 0], [0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    """
    rows, columns = np.mgrid[0:size, 0:size] + 0.5
    centre = size / 2
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "circle":
        return (rows - centre) ** 2 + (columns - centre) ** 2 <= centre**2
    if shape == "triangle":
        return np.abs(columns - centre) <= rows / 2 + 0.5
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


def _paint(frame: np.ndarray, shape: str, colour: str, x: int, y: int, size: int) -> None:
    frame[y : y + size, x : x + size][shape_mask(shape, size)] = COLOURS[colour]


def _blank(config: SyntheticConfig) -> np.ndarray:
    frames = np.empty((config.num_frames, config.size, config.size, 3), dtype=np.uint8)
    frames[:] = BACKGROUND
    return frames


def _class_label(value: str, name: str, vocabulary: tuple[str, ...], synonyms: tuple[str, ...] = ()) -> Label:
    return Label(type="class", value=value, name=name, vocabulary=vocabulary, synonyms=synonyms)


# the attributes every moving scene has, by task: its label's name, vocabulary and synonyms
ATTRIBUTES: Mapping[str, tuple[str, tuple[str, ...]]] = MappingProxyType(
    {"colour": ("colour", tuple(COLOURS)), "shape": ("shape", SHAPES), "motion_direction": ("direction", DIRECTIONS)}
)


def attribute_label(task: str, value: str) -> Label:
    """The class label of one attribute of a moving scene, as the dataset writes it."""
    name, vocabulary = ATTRIBUTES[task]
    return _class_label(
        value, name, vocabulary, DIRECTION_SYNONYMS.get(value, ()) if task == "motion_direction" else ()
    )


def false_claims(answer: str, asked: str, truth: Mapping[str, str]) -> list[str]:
    """The attributes other than the ``asked`` one that ``answer`` states a wrong value for.

    The synthetic world knows every attribute of a moving scene, so it can measure what a
    label-containment verifier lets through: an answer that names the right colour and
    the wrong shape passes a colour question. A wrong value counts when the verifier would
    pass it as a label (asserted, not negated, not hedged); ``truth`` maps task -> value.

    >>> truth = {"colour": "yellow", "shape": "circle", "motion_direction": "up"}
    >>> false_claims("A yellow square moves left.", "colour", truth)
    ['motion_direction=left', 'shape=square']
    >>> false_claims("A yellow circle moves upward.", "colour", truth)
    []
    """
    from llava_star.verify.core import verify

    claims = []
    for task in sorted(set(truth) - {asked}):
        for value in ATTRIBUTES[task][1]:
            if value != truth[task] and verify(answer, [attribute_label(task, value)]).passed:
                claims.append(f"{task}={value}")
    return claims


def truth_by_video(samples: Iterable[Sample]) -> dict[str, dict[str, str]]:
    """Every attribute of every moving scene, by video: task -> value.

    >>> truth_by_video([Sample("a-colour", "a.mp4", "q?", (Label("class", "red"),), "s", "colour")])
    {'a.mp4': {'colour': 'red'}}
    """
    truth: dict[str, dict[str, str]] = {}
    for sample in samples:
        if sample.task in ATTRIBUTES:
            truth.setdefault(sample.video, {})[sample.task] = str(sample.labels[0].value)
    return truth


def _pick(rng: np.random.Generator, options: tuple[str, ...] | Mapping[str, object]) -> str:
    names = tuple(options)
    return names[int(rng.integers(len(names)))]


def _start(rng: np.random.Generator, step: int, room: int, travel: int) -> int:
    """A start coordinate that leaves ``travel`` pixels of room in the direction of ``step``."""
    if step < 0:
        return int(rng.integers(travel, room + 1))
    if step > 0:
        return int(rng.integers(0, room - travel + 1))
    return int(rng.integers(0, room + 1))


def draw_moving(rng: np.random.Generator, config: SyntheticConfig) -> Scene:
    """One shape crossing about a third of the frame in a straight line."""
    colour, shape, direction = _pick(rng, COLOURS), _pick(rng, SHAPES), _pick(rng, DIRECTIONS)
    side = config.shape_size
    room = config.size - side  # highest top-left coordinate that keeps the shape inside
    travel = round(0.35 * config.size) if config.travel is None else round(config.travel * room)
    travel = max(4, min(travel, room))
    dx, dy = _STEPS[direction]
    x0, y0 = _start(rng, dx, room, travel), _start(rng, dy, room, travel)
    frames = _blank(config)
    for t in range(config.num_frames):
        progress = travel * t / (config.num_frames - 1)
        _paint(frames[t], shape, colour, x0 + round(dx * progress), y0 + round(dy * progress), side)
    tasks = tuple(
        SceneTask(task, attribute_label(task, value))
        for task, value in (("colour", colour), ("shape", shape), ("motion_direction", direction))
    )
    return Scene("moving", frames, tasks)


def draw_group(rng: np.random.Generator, config: SyntheticConfig) -> Scene:
    """One to four still shapes of different colours, one per quadrant."""
    count = int(rng.integers(1, MAX_GROUP + 1))
    cell = config.size // 2
    side = max(4, config.size // 4)
    quadrants = rng.permutation(MAX_GROUP)[:count]
    colours = [tuple(COLOURS)[i] for i in rng.permutation(len(COLOURS))[:count]]
    frames = _blank(config)
    boxes = []
    for quadrant, colour in zip(quadrants, colours):
        shape = _pick(rng, SHAPES)
        # a margin of one pixel keeps shapes in neighbouring quadrants apart
        x = int(quadrant % 2) * cell + int(rng.integers(1, cell - side))
        y = int(quadrant // 2) * cell + int(rng.integers(1, cell - side))
        _paint(frames[0], shape, colour, x, y, side)
        box = (x / config.size, y / config.size, (x + side) / config.size, (y + side) / config.size)
        boxes.append((f"{colour} {shape}", box))
    frames[1:] = frames[0]
    target, box = boxes[int(rng.integers(count))]
    tasks = (
        SceneTask("counting", Label(type="number", value=count, name="count", tolerance=0.0), {"thing": "shapes"}),
        SceneTask("grounding", Label(type="box", value=box, name=target, box_format="xyxy"), {"thing": target}),
    )
    return Scene("group", frames, tasks)


def draw_blink(rng: np.random.Generator, config: SyntheticConfig) -> Scene:
    """One still shape shown for a quarter to three quarters of the clip."""
    colour, shape = _pick(rng, COLOURS), _pick(rng, SHAPES)
    side = config.shape_size
    length = int(rng.integers(config.num_frames // 4, 3 * config.num_frames // 4 + 1))
    first = int(rng.integers(0, config.num_frames - length + 1))
    x, y = (int(v) for v in rng.integers(0, config.size - side + 1, size=2))
    frames = _blank(config)
    for t in range(first, first + length):
        _paint(frames[t], shape, colour, x, y, side)
    seconds = (first / config.fps, (first + length) / config.fps)
    label = Label(type="time_range", value=seconds, name="visible", duration=config.duration)
    event = f"the appearance of the {colour} {shape}"
    return Scene("blink", frames, (SceneTask("temporal_localization", label, {"event": event}),))


SCENES = MappingProxyType({"moving": draw_moving, "group": draw_group, "blink": draw_blink})


def held_out_videos(kinds: list[str], rng: np.random.Generator, test_fraction: float) -> set[int]:
    """Indices of the videos held out for test: ``test_fraction`` of each scene kind.

    >>> held = held_out_videos(["a", "a", "b", "b"], np.random.default_rng(0), 0.5)
    >>> len(held & {0, 1}), len(held & {2, 3})
    (1, 1)
    """
    held_out: set[int] = set()
    for kind in sorted(set(kinds)):
        members = [index for index, k in enumerate(kinds) if k == kind]
        count = round(len(members) * test_fraction)
        if test_fraction > 0 and len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        held_out.update(members[i] for i in rng.permutation(len(members))[:count])
    return held_out


def make_synthetic_dataset(
    out_dir: str | os.PathLike[str],
    *,
    num_videos: int = 64,
    seed: int = 0,
    config: SyntheticConfig | None = None,
) -> SyntheticDataset:
    """Draw ``num_videos`` clips, write them as mp4 and their samples as JSONL.

    Writes ``out_dir/videos/synthetic-NNNNN.mp4``, ``samples.jsonl`` (all),
    ``train.jsonl``, ``test.jsonl`` and ``synthetic.json`` (config and counts). Files
    are replaced whole, so a rerun over an interrupted one leaves a consistent folder.
    """
    from tqdm import tqdm

    from llava_star.media.encode import write_video

    if num_videos < 1:
        raise ConfigError(f"num_videos: expected at least 1, got {num_videos}")
    config = config or SyntheticConfig()
    root = Path(out_dir)
    scene_rng, question_rng = np.random.default_rng(seed), random.Random(seed)
    kinds = [SCENE_CYCLE[index % len(SCENE_CYCLE)] for index in range(num_videos)]
    held_out = held_out_videos(kinds, scene_rng, config.test_fraction)
    samples: list[Sample] = []
    for index, kind in enumerate(tqdm(kinds, desc="synthetic videos", unit="video", disable=None)):
        scene = SCENES[kind](scene_rng, config)
        name = f"{SOURCE}-{index:05d}"
        video = f"videos/{name}.mp4"
        partial = write_video(root / "videos" / f".{name}.partial.mp4", scene.frames, fps=config.fps)
        os.replace(partial, root / video)
        meta = {"scene": kind, "split": "test" if index in held_out else "train"}
        tasks = scene.tasks
        if config.prior_only and kind == "moving":
            tasks += (SceneTask("background", _class_label("black", "background colour", BACKGROUND_COLOURS)),)
        for item in tasks:
            question = make_question(item.task, question_rng, **item.slots)
            samples.append(Sample(f"{name}-{item.task}", video, question, (item.label,), SOURCE, item.task, meta=meta))
    splits = {split: [s for s in samples if s.meta["split"] == split] for split in ("train", "test")}
    paths = {"samples": root / "samples.jsonl", **{split: root / f"{split}.jsonl" for split in splits}}
    write_jsonl_atomic(paths["samples"], samples)
    for split, split_samples in splits.items():
        write_jsonl_atomic(paths[split], split_samples)
    summary = root / "synthetic.json"
    write_json_atomic(summary, _summary(num_videos, seed, config, splits, held_out))
    logger.info(
        "wrote %d videos and %d samples (%d train, %d test) to %s",
        num_videos,
        len(samples),
        len(splits["train"]),
        len(splits["test"]),
        root,
    )
    return SyntheticDataset(root, paths["samples"], paths["train"], paths["test"], summary, num_videos, len(samples))


def _summary(
    num_videos: int, seed: int, config: SyntheticConfig, splits: dict[str, list[Sample]], held_out: set[int]
) -> dict[str, object]:
    return {
        "num_videos": num_videos,
        "seed": seed,
        "config": asdict(config),
        "test_videos": len(held_out),
        "samples": {split: dict(sorted(Counter(s.task for s in items).items())) for split, items in splits.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llava-star synthetic",
        description="Write synthetic labeled videos (coloured shapes) and their samples.",
    )
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder (also the video root)")
    parser.add_argument("--num-videos", type=int, default=64, help="number of clips (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, default=SyntheticConfig.size, help="frame side in pixels (default 32)")
    parser.add_argument("--num-frames", type=int, default=SyntheticConfig.num_frames, help="frames a clip (default 16)")
    parser.add_argument("--fps", type=float, default=SyntheticConfig.fps, help="frame rate (default 8)")
    parser.add_argument(
        "--test-fraction", type=float, default=SyntheticConfig.test_fraction, help="videos held out (default 0.25)"
    )
    parser.add_argument(
        "--prior-only",
        action="store_true",
        help="add a question answerable without the video (the background colour, black in every clip)",
    )
    args = parser.parse_args(argv)
    config = SyntheticConfig(
        size=args.size,
        num_frames=args.num_frames,
        fps=args.fps,
        test_fraction=args.test_fraction,
        prior_only=args.prior_only,
    )
    make_synthetic_dataset(args.output, num_videos=args.num_videos, seed=args.seed, config=config)
    return 0
