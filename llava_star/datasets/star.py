"""STAR (situated reasoning on Charades videos): multiple choice, time range, grounding.

A real record of ``STAR_val.json`` (situations abridged to two of 39 keyframes)::

    {"question_id": "Interaction_T1_13", "question": "Which object was tidied up by the person?",
     "video_id": "6H78U", "start": 11.1, "end": 19.6, "answer": "The clothes.",
     "choices": [{"choice_id": 0, "choice": "The closet/cabinet.", "choice_program": [...]},
                 {"choice_id": 1, "choice": "The blanket.", ...},
                 {"choice_id": 2, "choice": "The clothes.",
                  "choice_program": [{"function": "Equal", "value_input": ["clothes"]}]},
                 {"choice_id": 3, "choice": "The table.", ...}],
     "situations": {"000198": {"actions": ["a004", "a002"], "bbox_labels": ["o019", "o000"],
                               "bbox": [[113.9, 270.28, 169.28, 303.74], [254.22, 34.15, 318.76, 467.99]], ...},
                    "000339": {...}}}

becomes up to three samples on ``6H78U.mp4`` (a Charades video):

- ``Interaction_T1_13`` (multiple_choice, clip 11.1-19.6 s): a ``choice`` label ``"C"``
  with options A-D (the choices in ``choice_id`` order);
- ``Interaction_T1_13:when`` (temporal_localization, whole video): a ``time_range``
  label ``[11.1, 19.6]`` for the action seen in every keyframe of the situation
  ("tidy some clothes"), with the video ``duration`` when the file can be probed;
- ``Interaction_T1_13:where`` (grounding, a 1 s clip around one keyframe): a ``box``
  label for the answer's object ("clothes", ``o019``), the pixel xyxy box divided by the
  frame width and height. Keyframe numbers are frames at the video's native rate, so this
  sample needs the video's size and frame rate, read from its header; without them it is
  skipped ("video cannot be probed").

Test-split records without ``answer`` give no multiple-choice sample.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_star.datasets.adapter import (
    Found,
    PrepareRequest,
    Skipped,
    VideoIndex,
    load_json,
    located,
    parse_seconds,
)
from llava_star.datasets.questions import event_phrase, format_options, make_question
from llava_star.datasets.vocabularies import load_vocabulary
from llava_star.errors import AnnotationError
from llava_star.records import Label, Sample

logger = logging.getLogger(__name__)

OPTION_KEYS = "ABCDEFGH"
GROUNDING_CLIP_SECONDS = 1.0  # short enough that the object barely moves, long enough to decode


@dataclass(frozen=True)
class VideoInfo:
    """What the video header says: frame size, native frame rate, duration in seconds."""

    width: int
    height: int
    fps: float
    duration: float | None


def probe_video(path: Path) -> VideoInfo | None:
    """Read size, frame rate and duration from a video's header (no decoding), or None."""
    import av  # imported here: only STAR needs headers at prepare time

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = None
            if not stream.width or not stream.height or fps <= 0:
                return None
            return VideoInfo(stream.width, stream.height, fps, duration)
    except (av.error.FFmpegError, OSError, IndexError) as error:
        logger.debug("cannot probe %s: %s", path, error)
        return None


def _class_names(vocabulary: str, prefix: str) -> dict[str, str]:
    """``a004`` -> ``tidy some clothes``: ids are positions in STAR's class files."""
    return {f"{prefix}{number:03d}": name for number, name in enumerate(load_vocabulary(vocabulary))}


def _options(record: Mapping[str, Any], where: str) -> dict[str, tuple[str, Any]]:
    """Option key -> (choice text, choice program), in choice_id order."""
    choices = record.get("choices")
    if not isinstance(choices, list) or not 2 <= len(choices) <= len(OPTION_KEYS):
        raise AnnotationError(f"{where}: choices: expected a list of 2-{len(OPTION_KEYS)} choices")
    for choice in choices:
        if not isinstance(choice, dict) or not isinstance(choice.get("choice"), str) or "choice_id" not in choice:
            raise AnnotationError(f"{where}: choices: each needs 'choice_id' and a 'choice' string, got {choice!r}")
        if not isinstance(choice["choice_id"], int) or isinstance(choice["choice_id"], bool):
            raise AnnotationError(f"{where}: choices: choice_id: expected an integer, got {choice['choice_id']!r}")
    ordered = sorted(choices, key=lambda choice: choice["choice_id"])
    return {key: (choice["choice"], choice.get("choice_program")) for key, choice in zip(OPTION_KEYS, ordered)}


def _situations(record: Mapping[str, Any], where: str) -> list[tuple[int, dict[str, Any]]]:
    """Keyframes in time order, each checked for matching bbox / bbox_labels lengths."""
    situations = record.get("situations") or {}
    if not isinstance(situations, dict):
        raise AnnotationError(f"{where}: situations: expected an object keyed by keyframe id")
    keyframes = []
    for keyframe, situation in situations.items():
        if not (isinstance(keyframe, str) and keyframe.isdigit() and isinstance(situation, dict)):
            raise AnnotationError(f"{where}: situations[{keyframe!r}]: expected a numeric keyframe id and an object")
        boxes, labels = situation.get("bbox", []), situation.get("bbox_labels", [])
        if not isinstance(boxes, list) or not isinstance(labels, list) or len(boxes) != len(labels):
            raise AnnotationError(f"{where}: situations[{keyframe!r}]: bbox and bbox_labels differ in length")
        for box in boxes:
            if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
                raise AnnotationError(f"{where}: situations[{keyframe!r}].bbox: expected [x1, y1, x2, y2], got {box!r}")
        for key in ("actions", "bbox_labels"):
            names = situation.get(key, [])
            if not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
                raise AnnotationError(f"{where}: situations[{keyframe!r}].{key}: expected a list of ids, got {names!r}")
        keyframes.append((int(keyframe), situation))
    return sorted(keyframes, key=lambda item: item[0])


def action_in_every_keyframe(keyframes: list[tuple[int, dict[str, Any]]]) -> str | None:
    """The action id present in all keyframes (the first, if several), else None.

    Such an action spans the question's clip, so the clip's range localizes it.
    """
    if not keyframes:
        return None
    counts = Counter(action for _, situation in keyframes for action in dict.fromkeys(situation.get("actions", [])))
    first_seen = list(dict.fromkeys(action for _, situation in keyframes for action in situation.get("actions", [])))
    for action in first_seen:
        if counts[action] == len(keyframes):
            return action
    return None


def normalized_box(box: list[float], info: VideoInfo, where: str) -> tuple[float, float, float, float]:
    """Pixel xyxy -> [0, 1] xyxy by the frame size; boxes a pixel past the edge are clipped.

    >>> normalized_box([64, 48, 320, 240], VideoInfo(640, 480, 30.0, None), "here")
    (0.1, 0.1, 0.5, 0.5)
    """
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        raise AnnotationError(f"{where}: box {box} is not x1 < x2, y1 < y2 (expected pixel xyxy)")
    slack = 2.0
    if x1 < -slack or y1 < -slack or x2 > info.width + slack or y2 > info.height + slack:
        raise AnnotationError(f"{where}: box {box} lies outside the {info.width}x{info.height} frame")
    scale = (info.width, info.height, info.width, info.height)
    return tuple(round(min(max(v / s, 0.0), 1.0), 6) for v, s in zip((x1, y1, x2, y2), scale))  # type: ignore[return-value]


def _answer_object(options: Mapping[str, tuple[str, Any]], answer_key: str) -> str | None:
    """The object a choice program names (``Equal(["clothes"])``), if there is exactly one."""
    program = options[answer_key][1]
    if not isinstance(program, list) or len(program) != 1 or not isinstance(program[0], dict):
        return None
    values = program[0].get("value_input")
    return values[0] if isinstance(values, list) and len(values) == 1 and isinstance(values[0], str) else None


def _keyframe_box(object_id: str, keyframes: list[tuple[int, dict[str, Any]]]) -> tuple[int, list[float]] | None:
    """(keyframe, pixel box) at the middle keyframe that shows the object exactly once."""
    showing = [(frame, s) for frame, s in keyframes if s.get("bbox_labels", []).count(object_id) == 1]
    if not showing:
        return None
    frame, situation = showing[len(showing) // 2]
    return frame, situation["bbox"][situation["bbox_labels"].index(object_id)]


@dataclass(frozen=True)
class StarRecord:
    """One STAR record, checked, with what every sample of it shares."""

    id: str
    where: str
    question: str
    video: str
    start: float
    end: float
    options: Mapping[str, tuple[str, Any]]
    answer_key: str | None
    keyframes: list[tuple[int, dict[str, Any]]]
    meta: Mapping[str, Any]


def _record(record: Any, position: int, path: Path, index: VideoIndex) -> StarRecord:
    where = f"{path}: [{position}]"
    if not isinstance(record, dict):
        raise AnnotationError(f"{where}: expected an object, got {type(record).__name__}")
    for key in ("question_id", "question", "video_id"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise AnnotationError(f"{where}: {key}: expected a non-empty string")
    where = f"{path}: {record['question_id']}"
    start, end = parse_seconds(record.get("start"), where, "start"), parse_seconds(record.get("end"), where, "end")
    if end <= start:
        raise AnnotationError(f"{where}: end {end} is not after start {start}")
    options = _options(record, where)
    answer_key = None
    if record.get("answer") is not None:
        keys = [key for key, (text, _) in options.items() if text == record["answer"]]
        if not keys:
            raise AnnotationError(f"{where}: answer {record['answer']!r} is not one of the choices")
        answer_key = keys[0]
    return StarRecord(
        id=record["question_id"],
        where=where,
        question=record["question"],
        video=index.find([record["video_id"]]) or f"{record['video_id']}.mp4",
        start=start,
        end=end,
        options=options,
        answer_key=answer_key,
        keyframes=_situations(record, where),
        meta={"video_id": record["video_id"], "question_id": record["question_id"]},
    )


def choice_sample(record: StarRecord, rng: random.Random) -> Found | Skipped:
    if record.answer_key is None:
        return Skipped("no answer (test split)", record.where)
    texts = {key: text for key, (text, _) in record.options.items()}
    question = make_question("multiple_choice", rng, question=record.question, options=format_options(texts))
    label = Label("choice", record.answer_key, name="answer", options=texts)
    sample = Sample(
        record.id, record.video, question, (label,), "star", "multiple_choice", record.start, record.end, record.meta
    )
    return Found(sample, record.where)


def time_range_sample(
    record: StarRecord, actions: Mapping[str, str], info: VideoInfo | None, rng: random.Random
) -> Found | Skipped:
    action = action_in_every_keyframe(record.keyframes)
    if action is None:
        return Skipped("no action spans the situation", record.where)
    if action not in actions:
        raise AnnotationError(f"{record.where}: unknown action id {action!r} (STAR has a000-a{len(actions) - 1:03d})")
    duration = info.duration if info else None
    if duration is not None and record.start >= duration:
        return Skipped("clip starts after the end of the video", record.where)
    span = Label(
        "time_range", (record.start, min(record.end, duration or record.end)), name="action", duration=duration
    )
    question = make_question("temporal_localization", rng, event=event_phrase(actions[action], quote=True))
    sample = Sample(
        f"{record.id}:when", record.video, question, (span,), "star", "temporal_localization", meta=record.meta
    )
    return Found(sample, record.where)


def box_sample(
    record: StarRecord, object_ids: Mapping[str, str], info: VideoInfo | None, rng: random.Random
) -> Found | Skipped:
    thing = _answer_object(record.options, record.answer_key) if record.answer_key else None
    if thing is None or thing not in object_ids:
        return Skipped("answer names no single object", record.where)
    if info is None:
        return Skipped("video cannot be probed (size and frame rate unknown)", record.where)
    found = _keyframe_box(object_ids[thing], record.keyframes)
    if found is None:
        return Skipped("answer object not boxed in any keyframe", record.where)
    frame, pixels = found
    box = normalized_box(pixels, info, f"{record.where}: situations[{frame:06d}]")
    seconds = frame / info.fps
    start = max(0.0, seconds - GROUNDING_CLIP_SECONDS / 2)
    question = make_question("grounding", rng, thing=thing)
    meta = dict(record.meta) | {"keyframe": f"{frame:06d}", "keyframe_seconds": round(seconds, 3)}
    sample = Sample(
        f"{record.id}:where",
        record.video,
        question,
        (Label("box", box, name=thing),),
        "star",
        "grounding",
        start,
        start + GROUNDING_CLIP_SECONDS,
        meta,
    )
    return Found(sample, record.where)


def adapt(request: PrepareRequest) -> Iterator[Found | Skipped]:
    records = load_json(request.annotations)
    if not isinstance(records, list):
        raise AnnotationError(f"{request.annotations}: expected a JSON list of STAR records")
    actions, objects = _class_names("star_actions", "a"), _class_names("star_objects", "o")
    object_ids = {name: object_id for object_id, name in objects.items()}
    index = VideoIndex.build(request.video_root)
    infos: dict[str, VideoInfo | None] = {}
    for position, raw in enumerate(records):
        record = _record(raw, position, request.annotations, index)
        if record.video not in infos:
            path = request.video_root / record.video
            infos[record.video] = probe_video(path) if path.is_file() else None
        info = infos[record.video]
        with located(record.where):
            yield choice_sample(record, request.rng)
            yield time_range_sample(record, actions, info, request.rng)
            yield box_sample(record, object_ids, info, request.rng)
