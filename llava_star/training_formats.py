"""The training-data formats of the LLaVA ecosystem: what export writes, what ``--mix`` reads.

Inside the project every record has one form, the LLaVA conversation record of
:mod:`llava_star.llava_json`: ``video``/``image`` paths, one ``<video>``/``<image>`` per
path in the human turns, ``conversations`` alternating ``human`` and ``gpt``. Each format
is converted to and from it. What the targets' own loaders read (their train.py, not
their READMEs):

- ``llava_star``: that form, with ``start``/``end`` (this project's trainer cuts the clip
  and reads frame folders).
- ``video-llava`` (PKU-YuanGroup/Video-LLaVA ``videollava/train/train.py``): the same
  keys and placeholders; the whole file at ``os.path.join(video_folder, video)`` is
  decoded, one video per record (``MAX_VIDEO_LENGTH = 1``), no folders, no clip range.
- ``llava-next`` (LLaVA-VL/LLaVA-NeXT ``llava/train/train.py``, also LLaVA-Video and
  OneVision training): ``video`` is one path string, and the only placeholder the loader
  counts is ``<image>``, for a video too; a record with an ``image`` is read as an image
  record and its video ignored. No folders (except paths containing ``shareVideoGPTV``),
  no clip range.
- ``llama-factory`` (hiyouga/LLaMA-Factory ``data/README.md``, ``mllm_video_demo.json``):
  ShareGPT records, ``conversations`` from ``human``/``gpt`` (or ``messages`` with
  ``role``/``content`` from ``user``/``assistant``), ``videos``/``images`` lists, one
  ``<video>``/``<image>`` per item; a ``dataset_info.json`` entry names the columns. The
  data is loaded as an Arrow table, so only the columns it reads and llava_star's own
  metadata are written (a key with two JSON types across records would not load).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llava_star.errors import RecordError
from llava_star.llava_json import (
    GPT,
    HUMAN,
    IMAGE_PLACEHOLDER,
    SYSTEM,
    VIDEO_PLACEHOLDER,
    check_media,
    check_turns,
    load_record_list,
    media_paths,
    record_location,
    validate_record,
)

FORMATS = ("llava_star", "video-llava", "llava-next", "llama-factory")
MIX_FORMATS = ("auto", *FORMATS)
# the metadata export adds to its records; LLaMA-Factory output keeps these (fixed types)
EXPORT_METADATA = (
    "source",
    "task",
    "label_types",
    "rationalized",
    "cycle",
    "original_video",
    "original_start",
    "original_end",
)


@dataclass(frozen=True)
class TargetFormat:
    """What a target's loader reads, and how a user points it at the media."""

    name: str
    trainer: str
    reads_clip_ranges: bool
    reads_frame_folders: bool
    max_videos: int | None  # per record
    video_with_image: bool  # a record may carry both
    folder_setting: str  # the target's option that the media paths are relative to


TARGETS = {
    "llava_star": TargetFormat("llava_star", "llava-star train", True, True, None, True, "--video-root"),
    "video-llava": TargetFormat("video-llava", "Video-LLaVA", False, False, 1, True, "--video_folder"),
    "llava-next": TargetFormat(
        "llava-next", "LLaVA-NeXT / LLaVA-Video / OneVision", False, False, 1, False, "--video_folder"
    ),
    "llama-factory": TargetFormat(
        "llama-factory", "LLaMA-Factory", False, False, None, True, "media_dir (default: dataset_dir)"
    ),
}

_LLAMA_FACTORY_LAYOUTS = {
    # conversation key: (role key, text key, (user, assistant))
    "messages": ("role", "content", ("user", "assistant")),
    "conversations": ("from", "value", (HUMAN, GPT)),
}


def _human_text(record: Mapping[str, Any]) -> str:
    """The human turns' text of a record that may be malformed (detection only)."""
    turns = record.get("conversations")
    if not isinstance(turns, list):
        return ""
    return "".join(
        t.get("value", "") for t in turns[0::2] if isinstance(t, Mapping) and isinstance(t.get("value"), str)
    )


def record_style(record: Any) -> str | None:
    """The format a record is written in, or None when it fits several (text-only, image-only).

    >>> record_style({"video": "a.mp4", "conversations": [{"from": "human", "value": "<image>\\nQ"}]})
    'llava-next'
    >>> record_style({"videos": ["a.mp4"], "messages": []}), record_style({"image": "a.jpg"})
    ('llama-factory', None)
    """
    if not isinstance(record, Mapping):
        return None
    if "messages" in record or "videos" in record or "images" in record:
        return "llama-factory"
    if record.get("video") is not None:
        text = _human_text(record)
        if VIDEO_PLACEHOLDER in text:
            return "video-llava"
        if IMAGE_PLACEHOLDER in text:
            return "llava-next"
    return None


def detect_format(records: Sequence[Any], path: str) -> str:
    """The format of a file's records: the one its video records agree on (LLaVA form if none say).

    A file that mixes formats is an error naming two records that disagree.
    """
    first: tuple[str, int] | None = None
    for index, record in enumerate(records):
        style = record_style(record)
        if style is None:
            continue
        if first is None:
            first = (style, index)
        elif style != first[0]:
            other = record_location(path, first[1], records[first[1]])
            raise RecordError(
                f"{record_location(path, index, record)}: written for {style}, but {other} for {first[0]}; "
                "one file, one format (split it, or name the format with --mix-format)"
            )
    return first[0] if first else "video-llava"


def to_llava_form(record: Any, fmt: str) -> dict[str, Any]:
    """``record`` of format ``fmt`` validated and in the project's form; LLaVA-form records come back as they are."""
    if not isinstance(record, Mapping):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    if fmt in ("llava_star", "video-llava"):
        validate_record(record)
        return dict(record) if not isinstance(record, dict) else record
    if fmt == "llava-next":
        return _from_llava_next(record)
    if fmt == "llama-factory":
        return _from_llama_factory(record)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _from_llava_next(record: Mapping[str, Any]) -> dict[str, Any]:
    if record.get("video") is None:
        validate_record(record)  # image and text records are LLaVA's
        return dict(record)
    human_text = check_turns(record)
    video = record["video"]
    if not isinstance(video, str) or not video:
        raise RecordError(f"video: LLaVA-NeXT reads one video path (a string), got {video!r}")
    if record.get("image") is not None:
        raise RecordError("image: LLaVA-NeXT reads a record with an image as an image record and ignores its video")
    found = human_text.count(IMAGE_PLACEHOLDER)
    if found != 1 or VIDEO_PLACEHOLDER in human_text:
        raise RecordError(
            f"conversations: a LLaVA-NeXT video record has one {IMAGE_PLACEHOLDER} in its human turns "
            f"(and no {VIDEO_PLACEHOLDER}); found {found} {IMAGE_PLACEHOLDER}"
        )
    converted = _with_placeholder(record, IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER)
    validate_record(converted)
    return converted


def _with_placeholder(record: Mapping[str, Any], old: str, new: str) -> dict[str, Any]:
    """A copy of ``record`` whose human turns say ``new`` where they said ``old``."""
    converted = dict(record)
    converted["conversations"] = [
        {**turn, "value": turn["value"].replace(old, new)} if index % 2 == 0 else dict(turn)
        for index, turn in enumerate(record["conversations"])
    ]
    return converted


def _from_llama_factory(record: Mapping[str, Any]) -> dict[str, Any]:
    key = "messages" if "messages" in record else "conversations"
    role_key, text_key, roles = _LLAMA_FACTORY_LAYOUTS[key]
    turns = record.get(key)
    system = None
    if isinstance(turns, list) and turns and isinstance(turns[0], Mapping) and turns[0].get(role_key) == SYSTEM:
        system, turns = turns[0].get(text_key), turns[1:]
        if not isinstance(system, str):
            raise RecordError(f"{key}[0].{text_key}: expected a string (the system prompt)")
    human_text = check_turns(record, key=key, role_key=role_key, text_key=text_key, roles=roles, turns=turns)
    check_media(record, "videos", VIDEO_PLACEHOLDER, human_text)
    check_media(record, "images", IMAGE_PLACEHOLDER, human_text)
    converted = {k: v for k, v in record.items() if k not in (key, "videos", "images")}
    converted["conversations"] = [
        {"from": HUMAN if index % 2 == 0 else GPT, "value": turn[text_key]} for index, turn in enumerate(turns)
    ]
    for source_key, llava_key in (("videos", "video"), ("images", "image")):
        paths = media_paths(record, source_key)
        if paths:
            converted[llava_key] = paths[0] if len(paths) == 1 else paths
    if system is not None:
        converted[SYSTEM] = system
    validate_record(converted)
    return converted


def from_llava_form(record: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """The record as target ``fmt`` reads it; a ``RecordError`` when the target cannot train on it as meant."""
    target = TARGETS[fmt]
    videos = media_paths(record, "video")
    if target.max_videos is not None and len(videos) > target.max_videos:
        raise RecordError(f"video: {target.trainer} trains on one video per record, this one has {len(videos)}")
    if videos and not target.video_with_image and record.get("image") is not None:
        raise RecordError(
            f"image: {target.trainer} reads a record with an image as an image record and ignores its video"
        )
    if fmt in ("llava_star", "video-llava"):
        return dict(record)
    if fmt == "llava-next":
        converted = _with_placeholder(record, VIDEO_PLACEHOLDER, IMAGE_PLACEHOLDER) if videos else dict(record)
        if videos:
            converted["video"] = videos[0]
        return converted
    return _to_llama_factory(record)


def _to_llama_factory(record: Mapping[str, Any]) -> dict[str, Any]:
    converted: dict[str, Any] = {}
    if record.get("id") is not None:
        converted["id"] = str(record["id"])
    converted["conversations"] = copy.deepcopy(record["conversations"])
    if isinstance(record.get(SYSTEM), str):
        converted[SYSTEM] = record[SYSTEM]
    for llava_key, factory_key in (("video", "videos"), ("image", "images")):
        paths = media_paths(record, llava_key)
        if paths:
            converted[factory_key] = paths
    converted.update((key, record[key]) for key in EXPORT_METADATA if key in record)
    return converted


def read_training_json(path: str, fmt: str = "auto") -> tuple[list[dict[str, Any]], str]:
    """The records of a training-data file in the project's form, and the format they were in.

    ``fmt`` ``"auto"`` detects it (:func:`detect_format`). Errors name ``file[index] (id ...)``
    and the key, in the file's own terms (``videos`` for LLaMA-Factory).
    """
    if fmt not in MIX_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(MIX_FORMATS)}")
    data = load_record_list(path)
    found = detect_format(data, path) if fmt == "auto" else fmt
    records = []
    for index, record in enumerate(data):
        try:
            records.append(to_llava_form(record, found))
        except RecordError as error:
            raise RecordError(f"{record_location(path, index, record)}: {error} (read as {found})") from None
    return records, found


def dataset_info_entry(file_name: str, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``dataset_info.json`` entry LLaMA-Factory needs to load ``file_name`` (records already in its format).

    Only columns some record has are named: LLaMA-Factory looks every named column up.

    >>> dataset_info_entry("train.json", [{"conversations": [], "videos": ["a.mp4"]}])["columns"]
    {'messages': 'conversations', 'videos': 'videos'}
    """
    columns = {"messages": "conversations"}
    for column in (SYSTEM, "videos", "images"):
        if any(column in record for record in records):
            columns[column] = column
    tags = {"role_tag": "from", "content_tag": "value", "user_tag": HUMAN, "assistant_tag": GPT, "system_tag": SYSTEM}
    return {"file_name": file_name, "formatting": "sharegpt", "columns": columns, "tags": tags}
