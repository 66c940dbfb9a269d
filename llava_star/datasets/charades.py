"""Charades and Charades-STA: when does an action (or a described moment) happen.

A real row of ``Charades_v1_test.csv`` (``;`` separates values inside a field)::

    id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length
    B82GJ,ARRB,Recreation room / Man cave,6,6,Yes,A person is cooking at the stove. ...,food;pot;spoon;stove;table;towel,
    "Person standing by the stove stirring a pot ...;Person in pajamas is cooking ...",
    c033 18.30 25.00;c035 17.70 22.50;c147 0.00 19.90;c153 18.30 25.00,24.42

becomes one temporal-localization sample per action class that occurs once in the
video (an action annotated twice has no single answer), and one caption sample::

    {"id": "B82GJ:c147", "video": "B82GJ.mp4", "question": "When does cooking something happen in the video?",
     "labels": [{"type": "time_range", "value": [0.0, 19.9], "name": "Someone is cooking something",
                 "duration": 24.42}], "source": "charades", "task": "temporal_localization"}
    {"id": "B82GJ:caption", "task": "caption",
     "labels": [{"type": "text", "value": "Person standing by the stove stirring a pot ..."}], ...}

Class names come from ``Charades_v1_classes.txt`` next to the CSV when it is there,
else the packaged list (``charades``). Ends are clamped to ``length``.

A real line of Charades-STA (``charades_sta_test.txt``)::

    3MSZA 24.3 30.4##person turn a light on.

becomes ``{"id": "3MSZA:1", "video": "3MSZA.mp4", "labels": [{"type": "time_range",
"value": [24.3, 30.4], "name": "person turn a light on"}], "task": "temporal_localization",
"question": "When does \"person turn a light on\" happen in the video?", ...}``; when the
Charades CSVs (``Charades_v1_*.csv``) sit next to it, ends are clamped to the video
``length`` (as 2D-TAN does) and it becomes the label's ``duration``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from llava_star.datasets.adapter import (
    Found,
    PrepareRequest,
    Skipped,
    VideoIndex,
    located,
    parse_seconds,
    read_csv_rows,
    read_text_lines,
    require_columns,
)
from llava_star.datasets.questions import event_phrase, make_question
from llava_star.datasets.vocabularies import load_vocabulary
from llava_star.errors import AnnotationError
from llava_star.records import Label, Sample

logger = logging.getLogger(__name__)

CLASSES_FILE = "Charades_v1_classes.txt"
_ACTION = re.compile(r"^(c\d{3}) (\d+(?:\.\d+)?) (\d+(?:\.\d+)?)$")
_CLASS_LINE = re.compile(r"^(c\d{3}) (.+)$")


def read_classes(folder: Path) -> dict[str, str]:
    """``c004`` -> ``Tidying some clothes``, from the dataset's own file when present."""
    path = folder / CLASSES_FILE
    if not path.is_file():
        return {f"c{number:03d}": name for number, name in enumerate(load_vocabulary("charades"))}
    classes = {}
    for line_number, line in read_text_lines(path):
        match = _CLASS_LINE.match(line.strip())
        if not match:
            raise AnnotationError(f"{path}:{line_number}: expected 'cNNN class name', got {line!r}")
        classes[match.group(1)] = match.group(2).strip()
    return classes


def parse_actions(text: str, where: str) -> list[tuple[str, float, float]]:
    """``"c092 11.90 21.20;c147 0.00 12.60"`` -> [("c092", 11.9, 21.2), ("c147", 0.0, 12.6)].

    >>> parse_actions("c092 11.90 21.20;c147 0.00 12.60", "here")
    [('c092', 11.9, 21.2), ('c147', 0.0, 12.6)]
    """
    actions = []
    for part in filter(None, (part.strip() for part in text.split(";"))):
        match = _ACTION.match(part)
        if not match:
            raise AnnotationError(f"{where}: actions: expected 'cNNN start end', got {part!r}")
        start, end = float(match.group(2)), float(match.group(3))
        if end < start:
            raise AnnotationError(f"{where}: actions: {part!r} ends before it starts")
        actions.append((match.group(1), start, end))
    return actions


def adapt(request: PrepareRequest) -> Iterator[Found | Skipped]:
    classes = read_classes(request.annotations.parent)
    index = VideoIndex.build(request.video_root)
    for line, row in read_csv_rows(request.annotations):
        require_columns(request.annotations, row, ("id", "actions", "length", "descriptions"))
        where = f"{request.annotations}:{line}"
        video_id = row["id"]
        length = parse_seconds(row["length"], where, "length")
        video = index.find([video_id]) or f"{video_id}.mp4"
        actions = parse_actions(row["actions"], where)
        repeats = Counter(action for action, _, _ in actions)
        with located(where):
            for action, start, end in actions:
                if action not in classes:
                    raise AnnotationError(f"{where}: actions: unknown class {action!r}")
                if repeats[action] > 1:
                    yield Skipped("action annotated more than once in the video", where)
                    continue
                if start >= length:
                    yield Skipped("action starts after the end of the video", where)
                    continue
                name = classes[action]
                label = Label("time_range", (start, min(end, length)), name=name, duration=length)
                question = make_question("temporal_localization", request.rng, event=event_phrase(name))
                sample = Sample(
                    f"{video_id}:{action}",
                    video,
                    question,
                    (label,),
                    "charades",
                    "temporal_localization",
                    meta={"class_id": action},
                )
                yield Found(sample, where)
            descriptions = [text.strip() for text in row["descriptions"].split(";") if text.strip()]
            if not descriptions:
                yield Skipped("no description", where)
            else:
                label = Label("text", descriptions[0], name="description")
                question = make_question("caption", request.rng)
                meta = {"descriptions": descriptions, "script": row.get("script", "")}
                yield Found(
                    Sample(f"{video_id}:caption", video, question, (label,), "charades", "caption", meta=meta), where
                )


def video_lengths(folder: Path) -> dict[str, float]:
    """Video id -> length in seconds from the Charades CSVs in ``folder`` (none: empty)."""
    lengths = {}
    for path in sorted(folder.glob("Charades_v1_*.csv")):
        for line, row in read_csv_rows(path):
            require_columns(path, row, ("id", "length"))
            lengths[row["id"]] = parse_seconds(row["length"], f"{path}:{line}", "length")
    return lengths


def adapt_sta(request: PrepareRequest) -> Iterator[Found | Skipped]:
    index = VideoIndex.build(request.video_root)
    lengths = video_lengths(request.annotations.parent)
    queries_per_video: Counter[str] = Counter()
    for line_number, line in read_text_lines(request.annotations):
        where = f"{request.annotations}:{line_number}"
        head, separator, sentence = line.partition("##")
        fields = head.split()
        if not separator or len(fields) != 3 or not sentence.strip():
            raise AnnotationError(f"{where}: expected 'VIDEO start end##sentence', got {line!r}")
        video_id = fields[0]
        start, end = parse_seconds(fields[1], where, "start"), parse_seconds(fields[2], where, "end")
        if end <= start:
            raise AnnotationError(f"{where}: end {end} is not after start {start}")
        event = sentence.strip().rstrip(".").strip()
        queries_per_video[video_id] += 1
        duration = lengths.get(video_id)
        if duration is not None and start >= duration:
            yield Skipped("moment starts after the end of the video", where)
            continue
        with located(where):
            label = Label("time_range", (start, min(end, duration or end)), name=event, duration=duration)
            question = make_question("temporal_localization", request.rng, event=event_phrase(event, quote=True))
            video = index.find([video_id]) or f"{video_id}.mp4"
            sample_id = f"{video_id}:{queries_per_video[video_id]}"
            yield Found(Sample(sample_id, video, question, (label,), "charades_sta", "temporal_localization"), where)
