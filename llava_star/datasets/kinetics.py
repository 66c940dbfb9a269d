"""Kinetics-400/600/700/700-2020: one action-recognition sample per clip.

A real row of the Kinetics-400 ``val.csv`` (K600/K700 drop ``is_cc``; K600 ``test.csv``
drops ``label``; K700 calls its validation split ``validate``)::

    label,youtube_id,time_start,time_end,split,is_cc
    "passing American football (in game)",_-srTyOqfXo,2,12,val,0

and of the JSON variant (a dict keyed by YouTube id)::

    {"---QUuC4vJs": {"annotations": {"label": "testifying", "segment": [84.0, 94.0]},
     "duration": 10.0, "subset": "validate", "url": "https://www.youtube.com/watch?v=---QUuC4vJs"}}

become::

    {"id": "_-srTyOqfXo_000002_000012", "video": "val/passing_American_football_in_game/_-srTyOqfXo_000002_000012.mp4",
     "question": "What activity is shown in this clip?", "task": "action_recognition", "source": "kinetics400",
     "labels": [{"type": "class", "value": "passing American football (in game)", "name": "action",
                 "vocabulary": "kinetics400"}]}

Clips are found by stem, ``{youtube_id}_{start:06d}_{end:06d}`` or ``{youtube_id}``, in
one index of the video root; when several copies exist, the one under a folder named
after the row's split or class (raw, ``_`` for spaces, or torchvision's spelling) wins.
The clip is already trimmed, so samples carry no start/end; the YouTube window is kept
in ``meta``. Rows without a label (test splits) are skipped and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from llava_star.datasets.adapter import (
    Found,
    PrepareRequest,
    Skipped,
    VideoIndex,
    load_json,
    located,
    parse_seconds,
    read_csv_rows,
    require_columns,
    split_aliases,
)
from llava_star.datasets.questions import make_question
from llava_star.datasets.vocabularies import load_vocabulary
from llava_star.errors import AnnotationError
from llava_star.idset import IdHashes
from llava_star.records import Label, Sample

logger = logging.getLogger(__name__)

# dataset name -> packaged class list (K700-2020 kept the 700 class names of K700)
VOCABULARY_BY_DATASET = {
    "kinetics400": "kinetics400",
    "kinetics600": "kinetics600",
    "kinetics700": "kinetics700",
    "kinetics700_2020": "kinetics700",
}
_SMALLEST_FIRST = ("kinetics400", "kinetics600", "kinetics700")


@dataclass(frozen=True)
class KineticsRow:
    where: str
    youtube_id: str
    time_start: int
    time_end: int
    label: str | None
    split: str | None

    @property
    def clip_stem(self) -> str:
        return f"{self.youtube_id}_{self.time_start:06d}_{self.time_end:06d}"


def label_folder_names(label: str) -> tuple[str, ...]:
    """Folder spellings of a class used by common downloaders.

    >>> label_folder_names("massaging person's head")
    ("massaging person's head", "massaging_person's_head", 'massaging_persons_head')
    """
    underscored = label.replace(" ", "_")
    torchvision = underscored.replace("'", "").replace("(", "").replace(")", "")
    return tuple(dict.fromkeys((label, underscored, torchvision)))


def _whole_seconds(value: object, where: str, what: str) -> int:
    # the files write 84 or 84.0; clip names use the integer (mmaction2 reads int(float(x)))
    return int(parse_seconds(value, where, what))


def _csv_rows(path: Path) -> Iterator[KineticsRow]:
    for line, row in read_csv_rows(path):
        require_columns(path, row, ("youtube_id", "time_start", "time_end"))
        where = f"{path}:{line}"
        if not row["youtube_id"]:
            raise AnnotationError(f"{where}: youtube_id is empty")
        yield KineticsRow(
            where=where,
            youtube_id=row["youtube_id"],
            time_start=_whole_seconds(row["time_start"], where, "time_start"),
            time_end=_whole_seconds(row["time_end"], where, "time_end"),
            label=row.get("label") or None,
            split=row.get("split") or None,
        )


def _json_rows(path: Path) -> Iterator[KineticsRow]:
    data = load_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected an object keyed by YouTube id, got {type(data).__name__}")
    for youtube_id, entry in data.items():
        where = f"{path}: key {youtube_id!r}"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where}: expected an object, got {type(entry).__name__}")
        annotations = entry.get("annotations", {})
        segment = annotations.get("segment") if isinstance(annotations, dict) else None
        if not (isinstance(segment, list) and len(segment) == 2):
            raise AnnotationError(f"{where}: annotations.segment: expected [start, end], got {segment!r}")
        label = annotations.get("label")
        if label is not None and not isinstance(label, str):
            raise AnnotationError(f"{where}: annotations.label: expected a string, got {label!r}")
        split = entry.get("subset")
        if split is not None and not isinstance(split, str):
            raise AnnotationError(f"{where}: subset: expected a string, got {split!r}")
        yield KineticsRow(
            where=where,
            youtube_id=youtube_id,
            time_start=_whole_seconds(segment[0], where, "segment[0]"),
            time_end=_whole_seconds(segment[1], where, "segment[1]"),
            label=label or None,
            split=split or None,
        )


def checked_rows(path: Path) -> Iterator[KineticsRow]:
    """The rows of a Kinetics CSV or JSON annotation file, one at a time, each checked."""
    for row in _json_rows(path) if path.suffix.lower() == ".json" else _csv_rows(path):
        if row.time_end <= row.time_start:
            raise AnnotationError(f"{row.where}: time_end {row.time_end} is not after time_start {row.time_start}")
        yield row


def read_rows(path: Path) -> list[KineticsRow]:
    """All rows of a Kinetics CSV or JSON annotation file."""
    return list(checked_rows(path))


@dataclass(frozen=True)
class RowsOfSplit:
    """The rows of ``split`` (all with None), read from the file each time they are iterated:
    a pass over 650k rows costs a second, holding them ~1 GB."""

    path: Path
    split: str | None

    def __iter__(self) -> Iterator[KineticsRow]:
        wanted = split_aliases(self.split) if self.split else None
        for row in checked_rows(self.path):
            if wanted is None or row.split is None or row.split.lower() in wanted:
                yield row


def choose_vocabulary(dataset: str, rows: Iterable[KineticsRow]) -> str:
    """The class list for the labels: named by the dataset, or the smallest that fits.

    A label outside the chosen list means the wrong version was named (or the file is
    not Kinetics), which would silently break hedging checks later, so it is an error.
    ``rows`` is iterated once, and once more to name the first unknown label.
    """
    labels = {row.label for row in rows if row.label}
    candidates = (VOCABULARY_BY_DATASET[dataset],) if dataset in VOCABULARY_BY_DATASET else _SMALLEST_FIRST
    for name in candidates:
        if labels <= set(load_vocabulary(name)):
            return name
    known = set(load_vocabulary(candidates[-1]))
    first_unknown = next(row for row in rows if row.label and row.label not in known)
    raise AnnotationError(
        f"{first_unknown.where}: label {first_unknown.label!r} is not a {candidates[-1]} class; "
        "name the right version (kinetics400/600/700) or use the generic adapter"
    )


def adapt(request: PrepareRequest) -> Iterator[Found | Skipped]:
    rows = RowsOfSplit(request.annotations, request.split)  # read twice (the labels, then the samples), not held
    vocabulary = choose_vocabulary(request.dataset, rows)
    source = request.dataset if request.dataset in VOCABULARY_BY_DATASET else vocabulary
    index = VideoIndex.build(request.video_root)
    # clip stems as 8-byte hashes; a stem is the sample's id, so no id is yielded twice (prepare's
    # IDS_UNIQUE_BY_ADAPTER relies on it and keeps no second set of the same hashes)
    seen = IdHashes()
    for row in rows:
        if row.label is None:
            yield Skipped("no label (test split)", row.where)
            continue
        if not seen.add_new(row.clip_stem):  # the same clip listed twice would become two identical samples
            yield Skipped("clip listed twice", row.where)
            continue
        split_folders = split_aliases(row.split) if row.split else frozenset()
        video = index.find(
            [row.clip_stem, row.youtube_id], prefer_dirs=split_folders | set(label_folder_names(row.label))
        )
        with located(row.where):
            sample = Sample(
                id=row.clip_stem,
                video=video or f"{row.clip_stem}.mp4",
                question=make_question("action_recognition", request.rng, avoid=[row.label]),
                labels=(Label("class", row.label, name="action", vocabulary=vocabulary),),
                source=source,
                task="action_recognition",
                meta={"youtube_id": row.youtube_id, "time_start": row.time_start, "time_end": row.time_end}
                | ({"split": row.split} if row.split else {}),
            )
        yield Found(sample, row.where)
