"""Where a training record's media are, and whether a run trained on any record at all.

Kept apart from :mod:`llava_star.training.data` (the dataset and collator) so each stays short.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

from llava_star.llava_json import media_paths


def record_video_path(video_root: str | None, record: Mapping[str, Any]) -> Path:
    """The record's video under ``video_root``; a record export wrote may reach it with ``..``.

    Paths may not leave the root, except in the records that do so by design: export writes
    each path relative to the folder its target is pointed at (docs/export.md), so a clip of
    a Video-LLaVA / LLaVA-NeXT record is ``../train_media/...`` from the video root and a
    whole video of a LLaMA-Factory record ``../videos/...`` from the JSON's folder; those
    loaders join with ``os.path.join``, as train does here. Export's records are the ones
    carrying its metadata (``original_video`` on a clip, ``label_types`` on every record).

    >>> record_video_path("/data/v", {"video": "../runs/train_media/a.mp4_clip1.0-2.0.mp4", "original_video": "a.mp4"}).as_posix()
    '/data/runs/train_media/a.mp4_clip1.0-2.0.mp4'
    """
    from llava_star.media.video import resolve_video_path

    video = media_paths(record, "video")[0]
    exported = bool(record.get("original_video")) or "label_types" in record
    if video_root is not None and exported and not PurePath(video).is_absolute():
        return Path(os.path.normpath(os.path.join(video_root, video)))
    return resolve_video_path(video_root, video)


def every_record_failed(path: str | os.PathLike[str] | None, records: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the failures file names every record (by id): a run that trained on nothing."""
    if path is None or not Path(path).is_file() or not records:
        return False
    failed = set()
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            try:
                failed.add(str(json.loads(line).get("id")))
            except (ValueError, AttributeError):
                continue
    return all(str(record.get("id")) in failed for record in records)
