"""LLaVA conversation JSON as training examples: decode, tokenize, mask, truncate, pad.

Each record's frames are decoded by :func:`llava_star.video.read_frames` and turned into
model inputs by :func:`llava_star.models.inputs.build_inputs`, the same function the
generation stage uses, so the model is trained on exactly the prompt layout it is later
asked in. All of that happens in ``Dataset.__getitem__``, i.e. in the DataLoader's worker
processes; the collator only pads and stacks.

Labels are the input ids on assistant tokens and -100 everywhere else (system prompt,
user turns, video tokens, padding). The assistant spans come from ``build_inputs``, which
locates them after the processor has expanded each ``<video>`` into its many video tokens.

A sample is never silently replaced by another. When its video cannot be read, or it
cannot fit ``model_max_length`` with all its media tokens and at least one answer token,
it is written to the failures file (``{"id", "video", "reason"}`` per line) and left out
of its batch. A batch left with no sample at all still runs a forward pass, with zero loss,
so that every rank of a distributed run takes part in the same collectives.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_star.errors import LlavaStarError, RecordError, VideoError
from llava_star.llava_json import GPT, IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, media_paths
from llava_star.records import dumps_line

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
# per-token tensors that the collator pads to the longest row; every other tensor is
# per-media (pixel values, grid sizes) and is concatenated along its first axis
SEQUENCE_KEYS = ("input_ids", "attention_mask", "labels", "token_type_ids", "mm_token_type_ids")
_PLACEHOLDER_PATTERN = re.compile(f"({re.escape(VIDEO_PLACEHOLDER)}|{re.escape(IMAGE_PLACEHOLDER)})")


class UnusableSample(LlavaStarError):
    """A record that cannot become a training example (too long, nothing to learn)."""


@dataclass(frozen=True)
class ExampleSettings:
    """How records become examples; shared by every DataLoader worker."""

    video_root: str | None
    num_frames: int
    model_max_length: int
    failures_path: str | None = None


def to_chat_conversation(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A LLaVA record's turns in the processor chat format, placeholders as media items.

    >>> to_chat_conversation({"conversations": [
    ...     {"from": "human", "value": "<video>\\nWhat colour is it?"}, {"from": "gpt", "value": "Red."}]})
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'role': 'user', 'content': [{'type': 'video'}, {'type': 'text', 'text': 'What colour is it?'}]},
     {'role': 'assistant', 'content': [{'type': 'text', 'text': 'Red.'}]}]
    """
    conversation = []
    for turn in record["conversations"]:
        if turn["from"] == GPT:
            conversation.append({"role": "assistant", "content": [{"type": "text", "text": turn["value"]}]})
            continue
        content: list[dict[str, Any]] = []
        for piece in _PLACEHOLDER_PATTERN.split(turn["value"]):
            if piece == VIDEO_PLACEHOLDER:
                content.append({"type": "video"})
            elif piece == IMAGE_PLACEHOLDER:
                content.append({"type": "image"})
            elif piece.strip():
                content.append({"type": "text", "text": piece.strip()})
        conversation.append({"role": "user", "content": content})
    return conversation


def truncation_length(input_ids: Sequence[int], labels: Sequence[int], max_length: int, media_token_ids: set[int]) -> int:
    """How many leading tokens to keep: at most ``max_length``, never cutting media tokens.

    Raises :class:`UnusableSample` when the media tokens alone run past ``max_length`` or
    when no answer token would remain to learn from.

    >>> truncation_length([1, 9, 9, 2, 3, 4], [-100, -100, -100, -100, 3, 4], 5, {9})
    5
    >>> truncation_length([1, 9, 9, 2, 3, 4], [-100, -100, -100, -100, 3, 4], 2, {9})
    Traceback (most recent call last):
    ...
    llava_star.training_data.UnusableSample: media tokens end at position 3, past model_max_length 2
    """
    keep = min(len(input_ids), max_length)
    media_positions = [position for position, token in enumerate(input_ids) if token in media_token_ids]
    if media_positions and media_positions[-1] >= keep:
        raise UnusableSample(f"media tokens end at position {media_positions[-1] + 1}, past model_max_length {max_length}")
    if not any(label != IGNORE_INDEX for label in labels[:keep]):
        raise UnusableSample(f"no answer token within model_max_length {max_length} ({len(input_ids)} tokens)")
    return keep


def media_token_ids(processor: Any) -> set[int]:
    return {
        token_id
        for token_id in (getattr(processor, "video_token_id", None), getattr(processor, "image_token_id", None))
        if isinstance(token_id, int)
    }


def encode_example(processor: Any, record: Mapping[str, Any], frames: Any, model_max_length: int) -> dict[str, Any]:
    """One record + its decoded frames -> 1-D ``input_ids``/``attention_mask``/``labels`` + media tensors."""
    from llava_star.models.inputs import build_inputs

    inputs = build_inputs(
        processor,
        [to_chat_conversation(record)],
        [frames],
        add_generation_prompt=False,
        assistant_spans=True,
        padding_side="right",
    )
    labels = inputs.labels(IGNORE_INDEX)[0]
    input_ids = inputs.batch["input_ids"][0]
    keep = truncation_length(input_ids.tolist(), labels.tolist(), model_max_length, media_token_ids(processor))
    example: dict[str, Any] = {"labels": labels[:keep]}
    for key, value in inputs.batch.items():
        example[key] = value[0, :keep] if key in SEQUENCE_KEYS else value
    return example


def report_failure(path: str | None, record: Mapping[str, Any], reason: str) -> None:
    """Append ``{"id", "video", "reason"}`` to the failures file (one whole line per write).

    DataLoader workers are separate processes; O_APPEND with one ``write`` per line keeps
    their lines whole without a lock.
    """
    logger.warning("skipping sample %r: %s", record.get("id"), reason)
    if path is None:
        return
    line = dumps_line({"id": record.get("id"), "video": record.get("video"), "reason": reason})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


def _check_some_video_exists(records: Sequence[Mapping[str, Any]], video_root: str) -> None:
    """Fail fast on a wrong ``video_root`` instead of reporting every sample as missing."""
    root = Path(video_root)
    if not any((root / media_paths(record, "video")[0]).exists() for record in records):
        example = media_paths(records[0], "video")[0] if records else "?"
        raise RecordError(f"video_root: none of the records' videos exist under {root} (e.g. {example!r})")


class ConversationDataset:
    """Map-style dataset of LLaVA records; ``dataset[i]`` is an example dict or ``None``.

    ``None`` means the record was reported to the failures file; the collator leaves it
    out. Records with images are refused up front: the shared input builder feeds videos.
    """

    def __init__(self, records: Sequence[Mapping[str, Any]], processor: Any, settings: ExampleSettings) -> None:
        for index, record in enumerate(records):
            if media_paths(record, "image"):
                raise RecordError(
                    f"record {index} (id {record.get('id')!r}): image records are not supported for training; "
                    "the shared input builder (llava_star.models.inputs.build_inputs) takes one video per sample"
                )
            if len(media_paths(record, "video")) != 1:
                raise RecordError(f"record {index} (id {record.get('id')!r}): expected exactly one video")
        if settings.video_root is None:
            raise RecordError("video_root: the records name videos; give the folder they are relative to")
        _check_some_video_exists(records, settings.video_root)
        self.records = list(records)
        self.processor = processor
        self.settings = settings

    def __len__(self) -> int:
        return len(self.records)

    def encode(self, index: int) -> dict[str, Any]:
        """The example of record ``index``; raises VideoError / UnusableSample."""
        from llava_star.video import read_frames, resolve_video_path

        record = self.records[index]
        path = resolve_video_path(self.settings.video_root, media_paths(record, "video")[0])
        frames = read_frames(path, self.settings.num_frames, start=record.get("start"), end=record.get("end"))
        return encode_example(self.processor, record, frames, self.settings.model_max_length)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        try:
            return self.encode(index)
        except (VideoError, UnusableSample) as error:
            report_failure(self.settings.failures_path, self.records[index], str(error))
            return None

    def check_usable(self, attempts: int = 8) -> int:
        """Encode records until one works, before training starts; return its length in tokens.

        A ``model_max_length`` shorter than the video tokens alone, or a wrong video folder,
        would otherwise make every step a skipped batch; this fails fast and says why.
        """
        reasons = []
        for index in range(min(attempts, len(self.records))):
            try:
                return len(self.encode(index)["input_ids"])
            except (VideoError, UnusableSample) as error:
                reasons.append(f"record {index} (id {self.records[index].get('id')!r}): {error}")
        raise RecordError(f"none of the first {len(reasons)} records can be trained on: " + "; ".join(reasons[:3]))


@dataclass(frozen=True)
class PaddingCollator:
    """Pad per-token tensors on the right, concatenate per-media tensors, drop ``None``s."""

    pad_token_id: int

    def __call__(self, examples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
        import torch

        kept = [example for example in examples if example is not None]
        if not kept:
            # every sample failed: one pad token with nothing to learn keeps the step's collectives
            return {
                "input_ids": torch.full((1, 1), self.pad_token_id, dtype=torch.long),
                "attention_mask": torch.ones((1, 1), dtype=torch.long),
                "labels": torch.full((1, 1), IGNORE_INDEX, dtype=torch.long),
            }
        length = max(len(example["input_ids"]) for example in kept)
        padding = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX}
        batch: dict[str, Any] = {}
        for key in kept[0]:
            values = [example[key] for example in kept]
            if key in SEQUENCE_KEYS:
                batch[key] = torch.stack(
                    [torch.nn.functional.pad(value, (0, length - len(value)), value=padding.get(key, 0)) for value in values]
                )
            elif isinstance(values[0], torch.Tensor):
                batch[key] = torch.cat(values, dim=0)
            else:
                raise RecordError(f"{key}: the processor returned a {type(values[0]).__name__}, not a tensor")
        return batch


def failures_in(path: str | os.PathLike[str]) -> int:
    """How many samples a run has reported as unusable so far."""
    path = Path(path)
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())
