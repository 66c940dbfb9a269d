"""Something-Something v2: one action-recognition sample per video.

A real row of ``train.json`` / ``validation.json`` (a JSON list)::

    {"id":"78687","label":"holding potato next to vicks vaporub bottle",
     "template":"Holding [something] next to [something]","placeholders":["potato","vicks vaporub bottle"]}

becomes::

    {"id": "78687", "video": "78687.webm", "question": "What is happening in this video?",
     "labels": [{"type": "class", "value": "Holding something next to something", "name": "action",
                 "vocabulary": "ssv2"}], "source": "ssv2", "task": "action_recognition",
     "meta": {"caption": "holding potato next to vicks vaporub bottle", "objects": ["potato", "vicks vaporub bottle"]}}

The class is the template without brackets, as in ``labels.json`` (whose ids are
strings). ``test.json`` rows have only an id; their classes come from
``test-answers.csv`` (``id;class``, no header) in the same folder, when it is there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from llava_star.datasets.adapter import (
    Found,
    PrepareRequest,
    Skipped,
    VideoIndex,
    load_json,
    located,
    read_csv_rows,
)
from llava_star.datasets.questions import make_question
from llava_star.datasets.vocabularies import load_vocabulary
from llava_star.errors import AnnotationError
from llava_star.records import Label, Sample

logger = logging.getLogger(__name__)

TEST_ANSWERS_FILE = "test-answers.csv"


def class_name(template: str) -> str:
    """The SSv2 class of a template: brackets dropped.

    >>> class_name("[Something] falling like a feather or paper")
    'Something falling like a feather or paper'
    """
    return template.replace("[", "").replace("]", "")


def read_test_answers(path: Path) -> dict[str, str]:
    """id -> class from ``test-answers.csv``."""
    return {row["id"]: row["class"] for _, row in read_csv_rows(path, delimiter=";", header=("id", "class"))}


def adapt(request: PrepareRequest) -> Iterator[Found | Skipped]:
    rows = load_json(request.annotations)
    if isinstance(rows, dict):
        raise AnnotationError(
            f"{request.annotations}: this is the class list (labels.json); pass train.json, validation.json or test.json"
        )
    if not isinstance(rows, list):
        raise AnnotationError(f"{request.annotations}: expected a JSON list of videos")
    answers_file = request.annotations.parent / TEST_ANSWERS_FILE
    answers: dict[str, str] | None = None
    classes = set(load_vocabulary("ssv2"))
    index = VideoIndex.build(request.video_root)
    for position, row in enumerate(rows):
        where = f"{request.annotations}: [{position}]"
        if not isinstance(row, dict) or not isinstance(row.get("id"), (str, int)):
            raise AnnotationError(f"{where}: expected an object with an 'id', got {row!r}")
        video_id = str(row["id"])
        where = f"{request.annotations}: id {video_id}"
        meta: dict[str, object] = {}
        if "template" in row:
            if not isinstance(row["template"], str):
                raise AnnotationError(f"{where}: template: expected a string, got {row['template']!r}")
            action = class_name(row["template"])
            if isinstance(row.get("label"), str):
                meta["caption"] = row["label"]
            if isinstance(row.get("placeholders"), list):
                meta["objects"] = row["placeholders"]
        else:
            if answers is None:
                answers = read_test_answers(answers_file) if answers_file.is_file() else {}
            if video_id not in answers:
                yield Skipped("no label (test split)", where)
                continue
            action = answers[video_id]
        if action not in classes:
            raise AnnotationError(f"{where}: {action!r} is not one of the 174 SSv2 classes")
        with located(where):
            label = Label("class", action, name="action", vocabulary="ssv2")
            question = make_question("action_recognition", request.rng, avoid=[action])
            video = index.find([video_id]) or f"{video_id}.webm"
            yield Found(Sample(video_id, video, question, (label,), "ssv2", "action_recognition", meta=meta), where)
