"""LLaVA conversation JSON as training examples: decode, tokenize, mask, truncate, pad.

A record carries one video (Video-STaR's own data, VideoInstruct-100K), one image
(LLaVA-665K) or no media (LLaVA-665K's text-only conversations); the paper trains on that
mixture. Frames are decoded by :func:`llava_star.media.video.read_frames`, images by
:func:`llava_star.media.images.read_image`, and both turned into model inputs by
:func:`llava_star.models.inputs.build_inputs`, the same function the generation stage
uses, so the model is trained on exactly the prompt layout it is later asked in. All of
that happens in ``Dataset.__getitem__``, i.e. in the DataLoader's worker processes; the
collator only pads and stacks.

Labels are the input ids on assistant tokens and -100 everywhere else (system prompt,
user turns, media tokens, padding). The assistant spans come from ``build_inputs``, which
locates them after the processor has expanded each ``<video>``/``<image>`` into its many
media tokens.

A sample is never silently replaced by another. When its video or image cannot be read,
or it cannot fit ``model_max_length`` with all its media tokens and at least one answer
token, it is written to the failures file (``{"id", "video", "image", "reason"}`` per
line) and left out of its batch. A batch left with no sample at all still runs a forward
pass, with zero loss, on a usable record of the same media kind, so that every rank of a
distributed run takes part in the same collectives.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_star.errors import ConfigError, ImageError, LlavaStarError, RecordError, VideoError
from llava_star.llava_json import VIDEO_PLACEHOLDER, media_paths
from llava_star.records import dumps_line
from llava_star.training.record_media import record_video_path

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
# per-token tensors that the collator pads to the longest row; every other tensor is
# per-media (pixel values, grid sizes) and is concatenated along its first axis
SEQUENCE_KEYS = ("input_ids", "attention_mask", "labels", "token_type_ids", "mm_token_type_ids")
# LLaVA-NeXT(-Video) and LLaVA-OneVision stack an image's crops as [images, crops, 3, h, w]
# and keep the first crops of each image by its image_sizes, so images with fewer crops
# may be zero-padded along the crop axis when batched
CROP_PADDED_KEYS = ("pixel_values",)
# errors of one sample's media: report the sample and go on
MEDIA_ERRORS = (VideoError, ImageError)


class UnusableSample(LlavaStarError):
    """A record that cannot become a training example (too long, nothing to learn)."""


@dataclass(frozen=True)
class ExampleSettings:
    """How records become examples; shared by every DataLoader worker."""

    video_root: str | None
    num_frames: int
    model_max_length: int
    failures_path: str | None = None
    image_root: str | None = None
    # RGB 0-255 to pad images to a square with before the processor (LLaVA's
    # --image_aspect_ratio pad: the processor's image_mean); None leaves images as read
    image_pad_colour: tuple[int, int, int] | None = None
    # LLaVA-NeXT's --add_time_instruction: the video's length and frame times before the question
    time_instruction: bool = False


def truncation_length(
    input_ids: Sequence[int], labels: Sequence[int], max_length: int, media_token_ids: set[int]
) -> int:
    """How many leading tokens to keep: at most ``max_length``, never cutting media tokens.

    Raises :class:`UnusableSample` when the media tokens alone run past ``max_length`` or
    when no answer token would remain to learn from.

    >>> truncation_length([1, 9, 9, 2, 3, 4], [-100, -100, -100, -100, 3, 4], 5, {9})
    5
    >>> truncation_length([1, 9, 9, 2, 3, 4], [-100, -100, -100, -100, 3, 4], 2, {9})
    Traceback (most recent call last):
    ...
    llava_star.training.data.UnusableSample: media tokens end at position 3, past model_max_length 2
    """
    keep = min(len(input_ids), max_length)
    media_positions = [position for position, token in enumerate(input_ids) if token in media_token_ids]
    if media_positions and media_positions[-1] >= keep:
        raise UnusableSample(
            f"media tokens end at position {media_positions[-1] + 1}, past model_max_length {max_length}"
        )
    if not any(label != IGNORE_INDEX for label in labels[:keep]):
        raise UnusableSample(f"no answer token within model_max_length {max_length} ({len(input_ids)} tokens)")
    return keep


def media_token_ids(processor: Any) -> set[int]:
    return {
        token_id
        for token_id in (getattr(processor, "video_token_id", None), getattr(processor, "image_token_id", None))
        if isinstance(token_id, int)
    }


def encode_example(
    processor: Any, record: Mapping[str, Any], frames: Any, model_max_length: int, image: Any = None
) -> dict[str, Any]:
    """One record + its decoded frames and/or image (``None`` when it has none) -> 1-D
    ``input_ids``/``attention_mask``/``labels`` + media tensors."""
    from llava_star.models.inputs import build_inputs, from_llava_turns

    inputs = build_inputs(
        processor,
        [from_llava_turns(record["conversations"])],
        [frames],
        images=[image],
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
    """Append ``{"id", "video", "image", "reason"}`` to the failures file (one whole line per write).

    DataLoader workers are separate processes; O_APPEND with one ``write`` per line keeps
    their lines whole without a lock.
    """
    logger.warning("skipping sample %r: %s", record.get("id"), reason)
    if path is None:
        return
    line = dumps_line({key: record.get(key) for key in ("id", "video", "image")} | {"reason": reason})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


def _check_some_media_exists(records: Sequence[Mapping[str, Any]], kind: str, root: str | None, flag: str) -> None:
    """Fail fast on a missing or wrong media root instead of reporting every sample as missing."""
    names = [media_paths(record, kind)[0] for record in records if media_paths(record, kind)]
    if not names:
        return
    if root is None:
        raise RecordError(
            f"{flag}: {len(names)} records name {kind}s (e.g. {names[0]!r}); give the folder they are relative to"
        )
    if not any((Path(root) / name).exists() for name in names):
        raise RecordError(f"{flag}: none of the records' {kind}s exist under {root} (e.g. {names[0]!r})")


class ConversationDataset:
    """Map-style dataset of LLaVA records; ``dataset[i]`` is an example dict or a
    :class:`FailedSample`.

    A record has at most one video and at most one image (records with lists of several
    are refused up front); text-only records need neither root. A :class:`FailedSample`
    means the record was reported to the failures file; the collator leaves it out.
    """

    def __init__(self, records: Sequence[Mapping[str, Any]], processor: Any, settings: ExampleSettings) -> None:
        for index, record in enumerate(records):
            for kind in ("video", "image"):
                if len(media_paths(record, kind)) > 1:
                    raise RecordError(
                        f"record {index} (id {record.get('id')!r}): {len(media_paths(record, kind))} {kind}s; "
                        f"training takes at most one {kind} per record"
                    )
        _check_some_media_exists(records, "video", settings.video_root, "video_root")
        _check_some_media_exists(records, "image", settings.image_root, "image_root")
        self.records = list(records)
        # the media kind of each record: what the sampler groups by and placeholders stand in for
        self.kinds = [media_kind(record) for record in self.records]
        self.lengths = [conversation_length(record) for record in self.records]
        self.processor = processor
        self.settings = settings

    def __len__(self) -> int:
        return len(self.records)

    def encode(self, index: int) -> dict[str, Any]:
        """The example of record ``index``; raises VideoError / ImageError / UnusableSample."""
        from llava_star.media.images import pad_to_square, read_image, resolve_image_path
        from llava_star.media.video import read_frames

        record = self.records[index]
        frames = image = None
        if media_paths(record, "video"):
            path = record_video_path(self.settings.video_root, record)
            frames = read_frames(path, self.settings.num_frames, start=record.get("start"), end=record.get("end"))
            if self.settings.time_instruction:
                record = with_time_instruction(record, frames)
        if media_paths(record, "image"):
            image = read_image(resolve_image_path(self.settings.image_root, media_paths(record, "image")[0]))
            if self.settings.image_pad_colour is not None:
                image = pad_to_square(image, self.settings.image_pad_colour)
        return encode_example(self.processor, record, frames, self.settings.model_max_length, image)

    def __getitem__(self, index: int) -> dict[str, Any] | FailedSample:
        try:
            return self.encode(index)
        except (*MEDIA_ERRORS, UnusableSample) as error:
            report_failure(self.settings.failures_path, self.records[index], str(error))
            return FailedSample(self.kinds[index])

    def usable_example_of_each_kind(self, attempts: int = 8) -> dict[str, dict[str, Any]]:
        """For each media kind, the example of its first record that encodes (trying up to
        ``attempts`` records of the kind), found before training starts.

        A ``model_max_length`` shorter than the media tokens alone, or a wrong media folder,
        would otherwise make every step a skipped batch; this fails fast and says why. The
        examples are the placeholders of batches whose samples all fail.
        """
        pending = set(self.kinds)
        tried: Counter[str] = Counter()
        examples: dict[str, dict[str, Any]] = {}
        reasons: list[tuple[str, str]] = []
        for index, (record, kind) in enumerate(zip(self.records, self.kinds)):
            if not pending:
                break
            if kind not in pending:
                continue
            tried[kind] += 1
            try:
                examples[kind] = self.encode(index)
                pending.discard(kind)
            except (*MEDIA_ERRORS, UnusableSample) as error:
                reasons.append((kind, f"record {index} (id {record.get('id')!r}): {error}"))
                if tried[kind] >= attempts:
                    pending.discard(kind)
        if not examples:
            shown = "; ".join(reason for _, reason in reasons[:3])
            raise RecordError(f"none of the first {len(reasons)} records can be trained on: {shown}")
        for kind in sorted(tried.keys() - examples.keys()):
            shown = "; ".join([reason for of, reason in reasons if of == kind][:3])
            logger.warning("no usable %s record among the first %d: %s", kind, tried[kind], shown)
        return examples


def time_instruction(duration: float, times: Sequence[float]) -> str:
    """LLaVA-NeXT's ``--add_time_instruction`` sentence (its wording, its missing space included).

    >>> time_instruction(10.0, [0.0, 5.0])
    'The video lasts for 10.00 seconds, and 2 frames are uniformly sampled from it. These frames are located at 0.00s,5.00s.Please answer the following questions related to this video.'
    """
    located = ",".join(f"{time:.2f}s" for time in times)
    return (
        f"The video lasts for {duration:.2f} seconds, and {len(times)} frames are uniformly sampled from it. "
        f"These frames are located at {located}.Please answer the following questions related to this video."
    )


def with_time_instruction(record: Mapping[str, Any], frames: Any) -> dict[str, Any]:
    """The record with its first human turn as LLaVA-NeXT writes it under ``--add_time_instruction``:
    the video placeholder, the time instruction, then the turn without its placeholder.
    Times are the clip's (what the model sees), from its first frame."""

    clip_start = frames.clip_first_frame / frames.fps
    duration = (frames.clip_num_frames or frames.total_num_frames) / frames.fps
    text = time_instruction(duration, [float(t) - clip_start for t in frames.timestamps])
    turns = [dict(turn) for turn in record["conversations"]]
    turns[0]["value"] = f"{VIDEO_PLACEHOLDER}\n{text}\n{turns[0]['value'].replace(VIDEO_PLACEHOLDER, '')}"
    return {**record, "conversations": turns}


def media_kind(record: Mapping[str, Any]) -> str:
    """Which media a record feeds the model: ``video``, ``image``, ``video+image`` or ``text``."""
    kinds = [kind for kind in ("video", "image") if media_paths(record, kind)]
    return "+".join(kinds) or "text"


@dataclass(frozen=True)
class FailedSample:
    """What the dataset gives for a record it reported as unusable: its media kind, so a
    batch left with no sample can run a placeholder example of the same kind."""

    kind: str


class MediaGroupedSampler:
    """Record indices in groups of ``group_size`` records of one media kind, in an order
    shuffled anew each epoch (the same on every rank: seeded by ``seed`` and the epoch).

    With ``group_size`` = per-device batch x processes, accelerate hands the i-th batch of
    each group to rank i, so at every step all ranks hold the same kind and run the same
    modules, which ZeRO-3 needs (LLaVA's ``--group_by_modality_length`` does this too).
    A kind's last group is filled up with its own records again, as DistributedSampler
    pads the last batch.

    With ``lengths`` (LLaVA's ``--group_by_modality_length``: modality and length), each
    group is ordered as LLaVA's ``get_length_grouped_indices`` orders a megabatch: longest
    first, dealt to the ``world_size`` ranks' batches so that their total lengths are
    even (each record to the batch with the least length so far that is not full).
    """

    def __init__(
        self,
        kinds: Sequence[str],
        group_size: int,
        seed: int = 0,
        lengths: Sequence[int] | None = None,
        world_size: int = 1,
    ) -> None:
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if lengths is not None and len(lengths) != len(kinds):
            raise ValueError(f"{len(lengths)} lengths for {len(kinds)} records")
        if group_size % world_size:
            raise ValueError(f"group_size {group_size} is not a multiple of world_size {world_size}")
        self.by_kind: dict[str, list[int]] = {}
        for index, kind in enumerate(kinds):
            self.by_kind.setdefault(kind, []).append(index)
        self.group_size = group_size
        self.seed = seed
        self.epoch = 0
        self.lengths = lengths
        self.world_size = world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _filled(self, count: int) -> int:
        """``count`` records of a kind, rounded up to whole groups."""
        return -(-count // self.group_size) * self.group_size

    def __len__(self) -> int:
        return sum(self._filled(len(indices)) for indices in self.by_kind.values())

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        groups = []
        for kind in sorted(self.by_kind):
            indices = list(self.by_kind[kind])
            rng.shuffle(indices)
            filled = self._filled(len(indices))
            indices = (indices * -(-filled // len(indices)))[:filled]
            groups += [indices[start : start + self.group_size] for start in range(0, filled, self.group_size)]
        if self.lengths is not None:
            groups = [self._balanced_by_length(group) for group in groups]
        rng.shuffle(groups)
        return (index for group in groups for index in group)

    def _balanced_by_length(self, group: list[int]) -> list[int]:
        """A group longest first, split into ``world_size`` batches of even total length."""
        lengths = self.lengths or [0] * (max(group) + 1)
        size = len(group) // self.world_size
        batches: list[list[int]] = [[] for _ in range(self.world_size)]
        totals = [0] * self.world_size
        for index in sorted(group, key=lambda i: -lengths[i]):
            rank = min((r for r in range(self.world_size) if len(batches[r]) < size), key=lambda r: totals[r])
            batches[rank].append(index)
            totals[rank] += lengths[index]
        return [index for batch in batches for index in batch]


def conversation_length(record: Mapping[str, Any]) -> int:
    """A record's length as LLaVA's ``modality_lengths`` counts it: words of all turns.

    >>> conversation_length({"conversations": [{"from": "human", "value": "<video>\\nWhat is it?"}, {"value": "A dog."}]})
    6
    """
    return sum(len(str(turn.get("value", "")).split()) for turn in record.get("conversations", ()))


def _stack_media(key: str, values: Sequence[Any]) -> Any:
    """Concatenate per-media tensors along their first axis, zero-padding image crops."""
    import torch

    if key in CROP_PADDED_KEYS and len({value.shape[1:] for value in values}) > 1 and values[0].dim() == 5:
        crops = max(value.shape[1] for value in values)
        values = [torch.nn.functional.pad(value, (0, 0, 0, 0, 0, 0, 0, crops - value.shape[1])) for value in values]
    try:
        return torch.cat(list(values), dim=0)
    except RuntimeError as error:
        shapes = sorted({tuple(value.shape) for value in values})
        raise RecordError(f"{key}: per-sample tensors of shapes {shapes} cannot be batched: {error}") from None


@dataclass(frozen=True)
class PaddingCollator:
    """Pad per-token tensors on the right, concatenate per-media tensors, leave out failed samples.

    Examples may carry different media (video, image, none): a per-media key is batched
    from the examples that have it, in batch order, which is the order the model meets
    their placeholder tokens in.
    """

    pad_token_id: int
    # What a batch whose samples all failed becomes, by media kind, with nothing to learn
    # (labels ignored): an example of the batch's own kind runs the same modules as the
    # other ranks' batches, which ZeRO-3 needs.
    placeholders: Mapping[str, dict[str, Any]] | None = None

    def __call__(self, examples: Sequence[dict[str, Any] | FailedSample | None]) -> dict[str, Any]:
        import torch

        kept = [example for example in examples if isinstance(example, dict)]
        if not kept and self.placeholders:
            kept = [_placeholder_for(examples, self.placeholders)]
        if not kept:
            # every sample failed: one pad token with nothing to learn keeps the step's collectives
            return {
                "input_ids": torch.full((1, 1), self.pad_token_id, dtype=torch.long),
                "attention_mask": torch.ones((1, 1), dtype=torch.long),
                "labels": torch.full((1, 1), IGNORE_INDEX, dtype=torch.long),
            }
        length = max(len(example["input_ids"]) for example in kept)
        padding = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX}
        keys = list(dict.fromkeys(key for example in kept for key in example))
        batch: dict[str, Any] = {}
        for key in keys:
            values = [example[key] for example in kept if key in example]
            if not all(isinstance(value, torch.Tensor) for value in values):
                kind = next(type(value).__name__ for value in values if not isinstance(value, torch.Tensor))
                raise RecordError(f"{key}: the processor returned a {kind}, not a tensor")
            if key in SEQUENCE_KEYS:
                if len(values) != len(kept):
                    raise RecordError(f"{key}: a per-token tensor that only some examples have")
                batch[key] = torch.stack(
                    [
                        torch.nn.functional.pad(value, (0, length - len(value)), value=padding.get(key, 0))
                        for value in values
                    ]
                )
            else:
                batch[key] = _stack_media(key, values)
        return batch


def _placeholder_for(failed: Sequence[Any], placeholders: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The placeholder of the failed samples' media kind (any other when there is none)."""
    import torch

    kinds = [sample.kind for sample in failed if isinstance(sample, FailedSample)]
    example = placeholders.get(kinds[0]) if kinds else None
    example = example or next(iter(placeholders.values()))
    return {**example, "labels": torch.full_like(example["labels"], IGNORE_INDEX)}


def failures_in(path: str | os.PathLike[str]) -> int:
    """How many samples a run has reported as unusable so far."""
    path = Path(path)
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def image_pad_colour(processor: Any) -> tuple[int, int, int]:
    """The pad colour of ``image_aspect_ratio: pad``: the processor's mean, as LLaVA's expand2square."""
    from llava_star.media.images import pad_colour

    image_processor = getattr(processor, "image_processor", None)
    mean = getattr(image_processor, "image_mean", None)
    if mean is None:
        raise ConfigError(
            f"image_aspect_ratio: pad needs the processor's image_mean; {type(processor).__name__} has none"
        )
    return pad_colour(mean)
