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

# The placeholders and roles of LLaVA conversation JSON, defined here only: the model inputs
# (llava_star.models.inputs), export, training and the demo read them from this module.
VIDEO_PLACEHOLDER = "<video>"
IMAGE_PLACEHOLDER = "<image>"
HUMAN, GPT, SYSTEM = "human", "gpt", "system"


def video_turns(question: str, answer: str) -> list[dict[str, str]]:
    """The two turns of a one-video training record: the question after ``<video>``, the answer.

    >>> video_turns("What colour is it?", "Red.")
    [{'from': 'human', 'value': '<video>\\nWhat colour is it?'}, {'from': 'gpt', 'value': 'Red.'}]
    """
    return [{"from": HUMAN, "value": f"{VIDEO_PLACEHOLDER}\n{question}"}, {"from": GPT, "value": answer}]


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


def check_media(record: Mapping[str, Any], key: str, placeholder: str, human_text: str) -> None:
    """``record[key]`` is a path or a list of paths, one ``placeholder`` per path in ``human_text``."""
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


def check_turns(
    record: Mapping[str, Any],
    *,
    key: str = "conversations",
    role_key: str = "from",
    text_key: str = "value",
    roles: tuple[str, str] = (HUMAN, GPT),
    turns: Any = None,
) -> str:
    """Check that ``record[key]`` alternates question and answer turns, ending on an answer.

    Returns the questions' text joined: where the placeholders belong.
    ``turns`` replaces ``record[key]`` (a conversation whose system turn was taken off).
    """
    turns = record.get(key) if turns is None else turns
    if not isinstance(turns, list) or len(turns) < 2:
        raise RecordError(f"{key}: expected a list of at least one {roles[0]} and one {roles[1]} turn")
    for index, turn in enumerate(turns):
        expected = roles[index % 2]
        if not isinstance(turn, Mapping) or turn.get(role_key) != expected:
            got = turn.get(role_key) if isinstance(turn, Mapping) else turn
            raise RecordError(f"{key}[{index}].{role_key}: expected {expected!r} (turns alternate), got {got!r}")
        if not isinstance(turn.get(text_key), str):
            raise RecordError(f"{key}[{index}].{text_key}: expected a string")
    if len(turns) % 2:
        raise RecordError(f"{key}: the last turn must be from {roles[1]!r} (nothing to learn after a question)")
    answers = (turn[text_key] for turn in turns[1::2])
    if any(placeholder in answer for answer in answers for placeholder in (VIDEO_PLACEHOLDER, IMAGE_PLACEHOLDER)):
        raise RecordError(f"{key}: a {roles[1]} turn contains a <video>/<image> placeholder")
    return "".join(turn[text_key] for turn in turns[0::2])


def validate_record(record: Any) -> None:
    """Raise ``RecordError`` (naming the key) unless ``record`` is a LLaVA training record.

    >>> validate_record({"id": "1", "conversations": [{"from": "human", "value": "Hi"},
    ...                                               {"from": "gpt", "value": "Hello"}]})
    """
    if not isinstance(record, Mapping):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    human_text = check_turns(record)
    check_media(record, "video", VIDEO_PLACEHOLDER, human_text)
    check_media(record, "image", IMAGE_PLACEHOLDER, human_text)
    for key in ("start", "end"):
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise RecordError(f"{key}: expected seconds >= 0, got {value!r}")


def load_record_list(path: str | os.PathLike[str]) -> list[Any]:
    """The records of a training-data file (a JSON list, or ``.jsonl`` one record a line),
    unvalidated; a ``RecordError`` naming the file (and line) otherwise."""
    path = Path(path)
    try:
        with path.open("r", encoding="utf-8") as handle:
            if path.suffix == ".jsonl":
                return _json_lines(path, handle)
            data = json.load(handle)
    except OSError as error:
        raise RecordError(f"{path}: cannot open: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RecordError(f"{path}: not valid JSON: {error}") from None
    except RecursionError:
        raise RecordError(f"{path}: nested too deeply to be conversation records") from None
    except ValueError as error:  # an integer of thousands of digits
        raise RecordError(f"{path}: {error}") from None
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a JSON list of conversation records, got {type(data).__name__}")
    return data


def _json_lines(path: Path, lines: Any) -> list[Any]:
    records = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise RecordError(f"{path}:{number}: not valid JSON: {error.msg}") from None
            except RecursionError:
                raise RecordError(f"{path}:{number}: nested too deeply") from None
            except ValueError as error:  # an integer of thousands of digits
                raise RecordError(f"{path}:{number}: {error}") from None
    return records


def record_location(path: str | os.PathLike[str], index: int, record: Any) -> str:
    """``train.json[12] (id 'x')``: where a record is, for error messages.

    >>> record_location("mix.json", 3, {"id": "v_1"}), record_location("mix.json", 0, [])
    ("mix.json[3] (id 'v_1')", 'mix.json[0]')
    """
    record_id = record.get("id") if isinstance(record, Mapping) else None
    return f"{path}[{index}]" + (f" (id {record_id!r})" if record_id is not None else "")
