"""The records that flow between stages, and how they are read and written.

Stages talk only through files (DESIGN.md "Files"): samples JSONL from ``prepare``,
generation shards from ``generate``, LLaVA JSON from ``export``. The dataclasses here
are those lines, validated on the way in so that a bad row fails at the stage boundary
with ``file:line: field: what is wrong`` instead of deep inside a model call.

Reading and writing them (JSONL, atomic writes) lives in :mod:`llava_star.io`; its names
are imported here too, where the stages have always found them.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from llava_star.errors import LabelError, RecordError
from llava_star.idset import RepeatedIds, line_id
from llava_star.io import (  # noqa: F401  (imported from here by the stages)
    JsonlAppender,
    dumps_line,
    jsonl_lines,
    loads_bounded,
    parse_jsonl_lines,
    read_jsonl,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
    written_ids,
)
from llava_star.label_types import is_number, label_type

logger = logging.getLogger(__name__)

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
# `vocabulary` is either an inline list or a reference string: a packaged vocabulary name
# ("kinetics700") or "file:PATH" (see llava_star.datasets.vocabularies).
_LABEL_FIELDS = (
    "type",
    "value",
    "name",
    "synonyms",
    "vocabulary",
    "tolerance",
    "rel_tolerance",
    "duration",
    "min_iou",
    "options",
    "box_format",
)
_LABEL_FIELD_SET = frozenset(_LABEL_FIELDS)
_NUMBER_FIELDS = ("tolerance", "rel_tolerance", "duration", "min_iou")
# A question is a template with its slots filled (STAR's with four options: ~300 characters);
# a 200 KB one made a processor try to allocate 10.5 GB.
MAX_QUESTION_CHARS = 16_384


def _is_mapping(value: Any) -> bool:
    """``isinstance(value, Mapping)``, without the abstract-class check for plain dicts (most rows)."""
    return type(value) is dict or isinstance(value, Mapping)


def _check_synonyms(label_type: str, synonyms: Any, steps: Any) -> tuple[str, ...] | dict[str, tuple[str, ...]]:
    """A list of names; for a sequence, a mapping step -> names ("2.5 Soms.Pike" -> ["2.5 somersaults pike"])."""
    if type(synonyms) is tuple and not synonyms:  # the default, and what most labels have
        return ()
    if label_type == "sequence" and isinstance(synonyms, Mapping):
        for step, names in synonyms.items():
            if step not in steps:
                raise LabelError(f"synonyms: {step!r} is not a step of the sequence {list(steps)}")
            if (
                isinstance(names, str)
                or not isinstance(names, (list, tuple))
                or not all(isinstance(n, str) for n in names)
            ):
                raise LabelError(f"synonyms: step {step!r} needs a list of strings, got {names!r}")
        return {step: tuple(names) for step, names in synonyms.items()} or ()
    if isinstance(synonyms, (str, Mapping)) or not all(isinstance(s, str) for s in synonyms):
        raise LabelError(f"synonyms: expected a list of strings (a sequence: {{step: [names]}}), got {synonyms!r}")
    if label_type == "sequence" and synonyms:
        raise LabelError(f"synonyms: a sequence label maps each step to its names, got the list {synonyms!r}")
    return tuple(synonyms)


@dataclass(frozen=True)
class Label:
    """One gold label of a sample (DESIGN.md "Label"). Validated on construction."""

    type: str
    value: Any
    name: str | None = None
    synonyms: tuple[str, ...] | Mapping[str, tuple[str, ...]] = ()  # a sequence: step -> names
    vocabulary: tuple[str, ...] | str | None = None
    tolerance: float | None = None
    rel_tolerance: float | None = None
    duration: float | None = None
    min_iou: float | None = None
    options: Mapping[str, str] | None = None
    box_format: str | None = None

    def __post_init__(self) -> None:
        fields = vars(self)
        value = label_type(self.type).normalise(self.value)
        if value is not self.value:  # a class name that was stripped, a list that became a tuple
            object.__setattr__(self, "value", value)
        synonyms = _check_synonyms(self.type, self.synonyms, self.value)
        if synonyms is not self.synonyms:
            object.__setattr__(self, "synonyms", synonyms)
        if self.vocabulary is not None and not isinstance(self.vocabulary, str):
            vocabulary = tuple(self.vocabulary)
            if not all(isinstance(v, str) for v in vocabulary):
                raise LabelError("vocabulary: expected a list of class names or a vocabulary name")
            object.__setattr__(self, "vocabulary", vocabulary)
        for key in _NUMBER_FIELDS:
            number = fields[key]
            if number is not None and (not is_number(number) or number < 0):
                raise LabelError(f"{key}: expected a non-negative number, got {number!r}")
        if self.min_iou is not None and self.min_iou > 1:
            raise LabelError(f"min_iou: must be in [0, 1], got {self.min_iou!r}")
        if self.type == "choice":
            if not isinstance(self.options, Mapping) or not self.options:
                raise LabelError('options: a choice label needs {"A": "text", ...}')
            if self.value not in self.options:
                raise LabelError(f"value: choice {self.value!r} is not one of the options {sorted(self.options)}")
            object.__setattr__(self, "options", dict(self.options))
        if self.box_format is not None and self.box_format not in BOX_FORMATS:
            raise LabelError(f"box_format: expected one of {', '.join(BOX_FORMATS)}, got {self.box_format!r}")

    @classmethod
    def from_dict(cls, data: Any) -> Label:
        if not _is_mapping(data):
            raise LabelError(f"expected a label object, got {type(data).__name__}")
        if not _LABEL_FIELD_SET.issuperset(data):
            unknown = data.keys() - _LABEL_FIELD_SET
            raise LabelError(f"unknown label field(s) {sorted(unknown)}; expected {', '.join(_LABEL_FIELDS)}")
        if "type" not in data or "value" not in data:
            raise LabelError("a label needs 'type' and 'value'")
        fields = {"type": data["type"], "value": data["value"], **_LABEL_DEFAULTS, **data}  # declared order
        synonyms = data.get("synonyms")
        if synonyms is not None and not isinstance(synonyms, Mapping):
            fields["synonyms"] = tuple(synonyms)
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: empty optional fields are left out, tuples become lists."""
        out: dict[str, Any] = {}
        for key, value in vars(self).items():  # the fields, in their declared order
            if value is None or value == ():
                continue
            if key == "synonyms" and isinstance(value, Mapping):
                value = {step: list(names) for step, names in value.items()}
            out[key] = list(value) if type(value) is tuple else value
        return out


_LABEL_DEFAULTS = {
    field.name: field.default for field in dataclasses.fields(Label) if field.name not in ("type", "value")
}


def _labels_from_list(data: Any) -> tuple[Label, ...]:
    if not isinstance(data, list) or not data:
        raise RecordError("labels: expected a non-empty list of label objects")
    labels = []
    for index, item in enumerate(data):
        try:
            labels.append(Label.from_dict(item))
        except LabelError as error:
            raise LabelError(f"labels[{index}].{error}") from None
    return tuple(labels)


def _require_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise RecordError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def _optional_seconds(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if not is_number(value) or value < 0:
        raise RecordError(f"{key}: expected seconds >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Sample:
    """A question about a video (optionally a clip of it) with its gold labels.

    ``video`` is relative to a video root given at run time; it may name a file or a
    folder of frames. ``meta`` keeps dataset-specific extras (original ids, units).
    """

    id: str
    video: str
    question: str
    labels: tuple[Label, ...]
    source: str
    task: str
    start: float | None = None
    end: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> Sample:
        if not _is_mapping(data):
            raise RecordError(f"expected a JSON object, got {type(data).__name__}")
        sample_id = data.get("id")
        try:
            if sample_id is not None and not isinstance(sample_id, str):
                # 7 and "7" would be one sample to the resume logic and two to the file
                raise RecordError(f"id: expected a string, got {type(sample_id).__name__} {sample_id!r}")
            start, end = _optional_seconds(data, "start"), _optional_seconds(data, "end")
            if start is not None and end is not None and end <= start:
                raise RecordError(f"end: clip end {end} must be after start {start}")
            meta = data.get("meta", {})
            if not _is_mapping(meta):
                raise RecordError("meta: expected an object")
            video, question = _require_str(data, "video"), _require_str(data, "question")
            if "\x00" in video:
                raise RecordError(f"video: contains a NUL byte: {video!r}")
            if len(question) > MAX_QUESTION_CHARS:
                raise RecordError(f"question: {len(question):,} characters, more than {MAX_QUESTION_CHARS:,}")
            fields = {
                "id": _require_str({"id": sample_id}, "id"),
                "video": video,
                "question": question,
                "labels": _labels_from_list(data.get("labels")),
                "source": _require_str(data, "source"),
                "task": _require_str(data, "task"),
                "start": start,
                "end": end,
                "meta": dict(meta),
            }
            return cls(**fields)
        except RecordError as error:
            if sample_id is not None:
                raise type(error)(f"id {sample_id!r}: {error}") from None
            raise

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "video": self.video}
        if self.start is not None:
            out["start"] = self.start
        if self.end is not None:
            out["end"] = self.end
        out.update(
            question=self.question,
            labels=[label.to_dict() for label in self.labels],
            source=self.source,
            task=self.task,
        )
        if self.meta:
            out["meta"] = dict(self.meta)
        return out


_GENERATION_FIELDS = ("answer", "rationalized", "passed", "checks", "cycle", "model")
# Added later: shards written before it read as not truncated.
_OPTIONAL_GENERATION_FIELDS = ("truncated", "grounded", "answers")
# the fields of each entry of ``answers`` (every answer given to a sample's question)
ANSWER_FIELDS = ("answer", "rationalized", "passed", "checks", "truncated")


@dataclass(frozen=True)
class Generation:
    """A finished sample: the model's answer and the verifier's verdict on it.

    ``rationalized`` is True when the answer came from the hint prompt; the training
    sample still uses ``sample.question``, never the hint.
    """

    sample: Sample
    answer: str
    rationalized: bool
    passed: bool
    checks: tuple[Mapping[str, Any], ...]
    cycle: int
    model: str
    truncated: bool = False  # generation stopped at max_new_tokens: the answer is cut off
    # the grounding check (generate --grounding-check): False when the question, asked again
    # without the video's content, still passed (a language prior, not the video, answers it);
    # None when not checked (a failed answer, no check, or a line written before the check existed)
    grounded: bool | None = None
    # every answer given to the question when there was more than one (generate --num-answers,
    # or a failed direct answer and its rationalization), in the order asked, each with the
    # ANSWER_FIELDS; ``answer`` above is the first passing one. None: the one answer above
    answers: tuple[Mapping[str, Any], ...] | None = None

    @property
    def id(self) -> str:
        return self.sample.id

    @classmethod
    def from_dict(cls, data: Any) -> Generation:
        if not _is_mapping(data):
            raise RecordError(f"expected a JSON object, got {type(data).__name__}")
        missing = [key for key in _GENERATION_FIELDS if key not in data]
        if missing:
            raise RecordError(f"id {data.get('id')!r}: missing generation field(s) {missing}")
        own = _GENERATION_FIELDS + _OPTIONAL_GENERATION_FIELDS
        sample = Sample.from_dict({k: v for k, v in data.items() if k not in own})
        if not isinstance(data["answer"], str):
            raise RecordError(f"id {sample.id!r}: answer: expected a string")
        if not isinstance(data["checks"], list):
            raise RecordError(f"id {sample.id!r}: checks: expected a list")
        return cls(
            sample=sample,
            answer=data["answer"],
            rationalized=bool(data["rationalized"]),
            passed=bool(data["passed"]),
            checks=tuple(dict(check) for check in data["checks"]),
            cycle=int(data["cycle"]),
            model=str(data["model"]),
            truncated=bool(data.get("truncated", False)),
            grounded=None if data.get("grounded") is None else bool(data["grounded"]),
            answers=_answers_from(data.get("answers"), sample.id),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**self.sample.to_dict(), **self._own_fields()}

    def _own_fields(self) -> dict[str, Any]:
        """The fields a generation adds to its sample's (``_GENERATION_FIELDS``, then the optional ones)."""
        return {
            "answer": self.answer,
            "rationalized": self.rationalized,
            "passed": self.passed,
            "checks": [dict(check) for check in self.checks],
            "cycle": self.cycle,
            "model": self.model,
            "truncated": self.truncated,
            "grounded": self.grounded,
            **({} if self.answers is None else {"answers": [dict(answer) for answer in self.answers]}),
        }


def _answers_from(data: Any, sample_id: str) -> tuple[Mapping[str, Any], ...] | None:
    """A line's ``answers`` (absent in lines with one answer, and in shards written before it)."""
    if data is None:
        return None
    if not isinstance(data, list) or not all(_is_mapping(a) and set(ANSWER_FIELDS) <= a.keys() for a in data):
        raise RecordError(f"id {sample_id!r}: answers: expected a list of objects with {', '.join(ANSWER_FIELDS)}")
    return tuple(dict(answer) for answer in data)


def kept_counts(generations: Iterable[Generation]) -> dict[str, int | float]:
    """What self-training watches: answers kept, directly and after the hint, as three numbers.

    **Kept** means one thing in llava_star: the answer passed the verifier (Video-STaR's
    kept answers; the cycle's kept fraction and ``min_kept_gain``, run.json, the report).
    What export writes of them (the first answer of each id, direct answers only under
    ``--direct-only``) is counted as **exported** in its statistics. ``rationalized``
    counts the samples asked again with the label (kept or not).

    >>> kept_counts([])
    {'samples': 0, 'kept': 0, 'kept_direct': 0, 'kept_rationalized': 0, 'rationalized': 0, 'kept_fraction': 0.0, 'kept_direct_fraction': 0.0, 'kept_rationalized_fraction': 0.0}
    """
    counts = {"samples": 0, "kept": 0, "kept_direct": 0, "kept_rationalized": 0, "rationalized": 0}
    for generation in generations:
        counts["samples"] += 1
        counts["rationalized"] += generation.rationalized
        if generation.passed:
            counts["kept"] += 1
            counts["kept_rationalized" if generation.rationalized else "kept_direct"] += 1
    total = counts["samples"]
    fractions = {
        f"{key}_fraction": counts[key] / total if total else 0.0 for key in ("kept", "kept_direct", "kept_rationalized")
    }
    return {**counts, **fractions}


def grounding_counts(generations: Iterable[Generation]) -> dict[str, Any]:
    """The grounding check's counts (``generate --grounding-check``), in all and per task.

    ``grounding_checked`` counts kept answers whose question was asked again without the
    video's content; ``ungrounded`` those that still passed. ``grounded_fraction`` is
    None when nothing was checked.

    >>> grounding_counts([])
    {'grounding_checked': 0, 'ungrounded': 0, 'grounded_fraction': None, 'grounded_by_task': {}}
    """
    checked: Counter[str] = Counter()
    ungrounded: Counter[str] = Counter()
    for generation in generations:
        if generation.grounded is None:
            continue
        checked[generation.sample.task] += 1
        ungrounded[generation.sample.task] += generation.grounded is False

    def fraction(done: int, flagged: int) -> float | None:
        return round((done - flagged) / done, 4) if done else None

    by_task = {
        task: {
            "checked": checked[task],
            "ungrounded": ungrounded[task],
            "grounded_fraction": fraction(checked[task], ungrounded[task]),
        }
        for task in sorted(checked)
    }
    total, flagged = sum(checked.values()), sum(ungrounded.values())
    return {
        "grounding_checked": total,
        "ungrounded": flagged,
        "grounded_fraction": fraction(total, flagged),
        "grounded_by_task": by_task,
    }


def format_kept(counts: Mapping[str, Any]) -> str:
    """One log line for :func:`kept_counts`.

    >>> format_kept({"samples": 4, "kept_fraction": 0.5, "kept_direct_fraction": 0.25, "kept_rationalized_fraction": 0.25})
    '4 samples: 50% kept (25% directly, 25% after the hint)'
    """
    return (
        f"{counts['samples']} samples: {100 * counts['kept_fraction']:.0f}% kept "
        f"({100 * counts['kept_direct_fraction']:.0f}% directly, {100 * counts['kept_rationalized_fraction']:.0f}% after the hint)"
    )


def read_samples(path: str | os.PathLike[str]) -> Iterator[Sample]:
    """The samples of a samples file; a malformed line (the last one too) or a repeated id is a
    ``RecordError`` naming the file and the line (both lines for a repeated id)."""
    repeated = RepeatedIds(path)
    current = 0

    def numbered() -> Iterator[tuple[int, bytes]]:
        nonlocal current
        for number, raw in jsonl_lines(path):
            current = number  # the line of the sample parsed next, for the check below
            yield number, raw

    for sample in parse_jsonl_lines(path, numbered(), Sample.from_dict, allow_torn_tail=False):
        repeated.check(sample.id, current)
        yield sample


def check_unique_ids(path: str | os.PathLike[str], limit: int | None = None) -> None:
    """A ``RecordError`` naming both lines when two of the first ``limit`` lines of a samples
    file share an id (both would be generated and trained on; a rerun would skip the second).

    Only the ids are looked at: a line that does not parse is left to the reader, which
    names it when it gets there, after the lines before it are done. The ids are kept as
    8-byte hashes (:class:`RepeatedIds`): ~8 MB for a million lines.
    """
    repeated = RepeatedIds(path)
    for number, raw in itertools.islice(jsonl_lines(path), limit):
        sample_id = line_id(raw)
        if sample_id is None:
            try:
                data = loads_bounded(raw)
            except ValueError:  # JSON, encoding and bounds errors all are
                continue
            sample_id = data.get("id") if isinstance(data, dict) else None
        if isinstance(sample_id, str):
            repeated.check(sample_id, number)


def read_generations(path: str | os.PathLike[str]) -> Iterator[Generation]:
    return read_jsonl(path, Generation.from_dict)
