"""LLaVA conversation JSON: the training-data format shared by export and train.

LLaVA's and Video-LLaVA's ``train_mem.py`` read a JSON list of records like::

    {"id": "k700-0001", "video": "abseiling/0wR5jVB-WPk_000417_000427.mp4",
     "conversations": [{"from": "human", "value": "<video>\\nWhat is the person doing?"},
                       {"from": "gpt", "value": "The person is abseiling down a cliff ..."}]}

``image`` instead of ``video`` (a path, or a list of paths, relative to an image folder)
and text-only records (no media key) occur in the instruction data users mix in
(LLaVA-665K, VideoInstruct-100K). Each media item has one placeholder (``<video>`` or
``<image>``) in the human turns. Records exported by llava_star carry extra metadata keys
(``source``, ``task``, ``label_types``, ``rationalized``, ``cycle``, ``start``, ``end``)
that the LLaVA trainers ignore.

Validation lives here, once, so that a malformed record fails when it is exported or
mixed in, naming ``file[index] (id ...)`` and the key, rather than mid-training.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llava_star.errors import RecordError

VIDEO_PLACEHOLDER = "<video>"
IMAGE_PLACEHOLDER = "<image>"
HUMAN, GPT = "human", "gpt"


def media_paths(record: Mapping[str, Any], key: str) -> list[str]:
    """The record's video or image paths as a list (LLaVA allows a string or a list).

    >>> media_paths({"image": "a.jpg"}, "image"), media_paths({"image": ["a.jpg", "b.jpg"]}, "image")
    (['a.jpg'], ['a.jpg', 'b.jpg'])
    >>> media_paths({}, "video")
    []
    """
    value = record.get(key)
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _check_media(record: Mapping[str, Any], key: str, placeholder: str, human_text: str) -> None:
    value = record.get(key)
    if value is not None:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
            raise RecordError(f"{key}: expected a path or a non-empty list of paths, got {value!r}")
    expected = len(media_paths(record, key))
    found = human_text.count(placeholder)
    if found != expected:
        raise RecordError(
            f"conversations: {found} {placeholder} placeholder(s) in the human turns "
            f"but {expected} path(s) under {key!r}"
        )


def validate_record(record: Any) -> None:
    """Raise ``RecordError`` (naming the key) unless ``record`` is a LLaVA training record.

    >>> validate_record({"id": "1", "conversations": [{"from": "human", "value": "Hi"},
    ...                                               {"from": "gpt", "value": "Hello"}]})
    """
    if not isinstance(record, Mapping):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    turns = record.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2:
        raise RecordError("conversations: expected a list of at least one human and one gpt turn")
    for index, turn in enumerate(turns):
        expected = HUMAN if index % 2 == 0 else GPT
        if not isinstance(turn, Mapping) or turn.get("from") != expected:
            got = turn.get("from") if isinstance(turn, Mapping) else turn
            raise RecordError(f"conversations[{index}].from: expected {expected!r} (turns alternate), got {got!r}")
        if not isinstance(turn.get("value"), str):
            raise RecordError(f"conversations[{index}].value: expected a string")
    if len(turns) % 2:
        raise RecordError("conversations: the last turn must be from 'gpt' (nothing to learn after a question)")
    human_text = "".join(turn["value"] for turn in turns[0::2])
    if any(placeholder in turn["value"] for turn in turns[1::2] for placeholder in (VIDEO_PLACEHOLDER, IMAGE_PLACEHOLDER)):
        raise RecordError("conversations: a gpt turn contains a <video>/<image> placeholder")
    _check_media(record, "video", VIDEO_PLACEHOLDER, human_text)
    _check_media(record, "image", IMAGE_PLACEHOLDER, human_text)
    for key in ("start", "end"):
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise RecordError(f"{key}: expected seconds >= 0, got {value!r}")


def read_llava_json(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Load and validate a LLaVA JSON file; errors read ``train.json[12] (id 'x'): key: ...``."""
    path = Path(path)
    try:
        with path.open("r", encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as error:
        raise RecordError(f"{path}: cannot open: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RecordError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a JSON list of conversation records, got {type(data).__name__}")
    for index, record in enumerate(data):
        try:
            validate_record(record)
        except RecordError as error:
            record_id = record.get("id") if isinstance(record, Mapping) else None
            where = f"{path}[{index}]" + (f" (id {record_id!r})" if record_id is not None else "")
            raise RecordError(f"{where}: {error}") from None
    return data
