"""The records that flow between stages, and how they are read and written.

Stages talk only through files (DESIGN.md "Files"): samples JSONL from ``prepare``,
generation shards from ``generate``, LLaVA JSON from ``export``. The dataclasses here
are those lines, validated on the way in so that a bad row fails at the stage boundary
with ``file:line: field: what is wrong`` instead of deep inside a model call.

Writers are crash-safe: :class:`JsonlAppender` writes each record as one whole line and
repairs a torn last line on reopen, so a killed job resumes without losing or
duplicating work; :func:`write_json_atomic` replaces a file only once the new content is
fully on disk.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

from llava_star.errors import LabelError, RecordError
from llava_star.label_types import is_number, label_type

logger = logging.getLogger(__name__)

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
# `vocabulary` is either an inline list or a reference string: a packaged vocabulary name
# ("kinetics700") or "file:PATH" (see llava_star.datasets.vocabularies).
_LABEL_FIELDS = (
    "type", "value", "name", "synonyms", "vocabulary", "tolerance", "rel_tolerance",
    "duration", "min_iou", "options", "box_format",
)  # fmt: skip
_LABEL_FIELD_SET = frozenset(_LABEL_FIELDS)
_NUMBER_FIELDS = ("tolerance", "rel_tolerance", "duration", "min_iou")


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
            if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
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


_LABEL_DEFAULTS = {field.name: field.default for field in dataclasses.fields(Label) if field.name not in ("type", "value")}


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
        if isinstance(sample_id, int) and not isinstance(sample_id, bool):
            sample_id = str(sample_id)
        try:
            start, end = _optional_seconds(data, "start"), _optional_seconds(data, "end")
            if start is not None and end is not None and end <= start:
                raise RecordError(f"end: clip end {end} must be after start {start}")
            meta = data.get("meta", {})
            if not _is_mapping(meta):
                raise RecordError("meta: expected an object")
            fields = {
                "id": _require_str({"id": sample_id}, "id"),
                "video": _require_str(data, "video"),
                "question": _require_str(data, "question"),
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
_OPTIONAL_GENERATION_FIELDS = ("truncated",)


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
        }


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
    fractions = {f"{key}_fraction": counts[key] / total if total else 0.0 for key in ("kept", "kept_direct", "kept_rationalized")}
    return {**counts, **fractions}


def format_kept(counts: Mapping[str, Any]) -> str:
    """One log line for :func:`kept_counts`.

    >>> format_kept({"samples": 4, "kept_fraction": 0.5, "kept_direct_fraction": 0.25, "kept_rationalized_fraction": 0.25})
    '4 samples: 50% kept (25% directly, 25% after the hint)'
    """
    return (
        f"{counts['samples']} samples: {100 * counts['kept_fraction']:.0f}% kept "
        f"({100 * counts['kept_direct_fraction']:.0f}% directly, {100 * counts['kept_rationalized_fraction']:.0f}% after the hint)"
    )


RecordT = TypeVar("RecordT")


def read_jsonl(
    path: str | os.PathLike[str],
    parse: Callable[[Any], RecordT] = lambda data: data,
    *,
    allow_torn_tail: bool = True,
) -> Iterator[RecordT]:
    """Yield ``parse(obj)`` for each line of a JSONL file.

    Errors name the file and line: ``samples.jsonl:12: labels[0].value: ...``. Blank
    lines are skipped. A last line without its newline is what a killed writer leaves;
    with ``allow_torn_tail`` it is skipped with a warning instead of failing the read.
    """
    return parse_jsonl_lines(path, jsonl_lines(path), parse, allow_torn_tail=allow_torn_tail)


def jsonl_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a JSONL file with their line numbers, not yet parsed.

    A process that needs only some lines (its shard) picks them here and parses only
    those with :func:`parse_jsonl_lines`.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as error:
        raise RecordError(f"{path}: cannot open: {error.strerror}") from None
    with handle:
        for line_number, raw in enumerate(handle, start=1):
            if raw.strip():
                yield line_number, raw


def parse_jsonl_lines(
    path: str | os.PathLike[str],
    lines: Iterable[tuple[int, bytes]],
    parse: Callable[[Any], RecordT] = lambda data: data,
    *,
    allow_torn_tail: bool = True,
) -> Iterator[RecordT]:
    """``parse(obj)`` of each ``(line_number, raw)`` of ``path``, as :func:`read_jsonl` does."""
    for line_number, raw in lines:
        torn = not raw.endswith(b"\n")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            if torn and allow_torn_tail:
                logger.warning("%s:%d: skipping an incomplete last line (interrupted write)", path, line_number)
                return
            raise RecordError(f"{path}:{line_number}: not valid JSON: {error}") from None
        try:
            yield parse(data)
        except RecordError as error:
            raise type(error)(f"{path}:{line_number}: {error}") from None


def read_samples(path: str | os.PathLike[str]) -> Iterator[Sample]:
    return read_jsonl(path, Sample.from_dict)


def read_generations(path: str | os.PathLike[str]) -> Iterator[Generation]:
    return read_jsonl(path, Generation.from_dict)


def _to_jsonable(record: Any) -> Any:
    if hasattr(record, "to_dict"):
        return record.to_dict()
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return dataclasses.asdict(record)
    return record


# one encoder for every line: json.dumps with options builds a new one per call
_LINE_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps_line(record: Any) -> bytes:
    """One record as one JSONL line (UTF-8, newline-terminated, no NaN)."""
    return (_LINE_ENCODER.encode(_to_jsonable(record)) + "\n").encode("utf-8")


def _truncate_torn_tail(path: Path) -> None:
    """Cut a last line that is not whole JSON: the remains of a write killed half-way."""
    size = path.stat().st_size
    if size == 0:
        return
    with path.open("rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        block = 1 << 16
        position = size
        while position > 0:
            start = max(0, position - block)
            handle.seek(start)
            chunk = handle.read(position - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            position = start
        else:
            keep = 0
        handle.seek(keep)
        tail = handle.read()
        try:
            json.loads(tail)
        except (json.JSONDecodeError, UnicodeDecodeError):
            logger.warning("%s: dropping %d bytes of an incomplete last line", path, size - keep)
            handle.truncate(keep)
        else:  # a whole record that only lacks its newline (readers count it as written)
            handle.seek(0, os.SEEK_END)
            handle.write(b"\n")


class JsonlAppender:
    """Append records to a JSONL file, one whole line per record.

    The file is opened with O_APPEND and each line (or run of whole lines, with
    ``write_many``) goes out in a single ``os.write``,
    so concurrent readers never see half a record from a healthy writer; if the process
    is killed mid-line, the torn tail is removed the next time the file is opened.
    ``fsync_every`` bounds how much finished work a power loss can take.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync_every: int = 64) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _truncate_torn_tail(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._fsync_every = fsync_every
        self._unsynced = 0

    def write(self, record: Any) -> None:
        self._append(dumps_line(record), 1)

    def write_many(self, records: Iterable[Any], *, lines_per_write: int = 256) -> None:
        """Append whole lines, many per system call (a killed write leaves a torn tail at worst)."""
        records = iter(records)
        while chunk := [dumps_line(record) for record in itertools.islice(records, lines_per_write)]:
            self._append(b"".join(chunk), len(chunk))

    def write_lines(self, lines: Sequence[bytes], *, lines_per_write: int = 256) -> None:
        """Append lines already encoded (each one record, newline-terminated), many per system call."""
        for start in range(0, len(lines), lines_per_write):
            chunk = lines[start : start + lines_per_write]
            self._append(b"".join(chunk), len(chunk))

    def _append(self, data: bytes, lines: int) -> None:
        written = os.write(self._fd, data)
        while written < len(data):  # rare: a short write on a full disk or a signal
            written += os.write(self._fd, data[written:])
        self._unsynced += lines
        if self._unsynced >= self._fsync_every:
            self.flush()

    def flush(self) -> None:
        os.fsync(self._fd)
        self._unsynced = 0

    def close(self) -> None:
        if self._fd >= 0:
            self.flush()
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def written_ids(paths: Iterable[str | os.PathLike[str]]) -> set[str]:
    """Ids already present in JSONL files, so a restarted job skips finished work."""
    ids: set[str] = set()
    for path in paths:
        if Path(path).exists():
            rows: Iterable[Any] = read_jsonl(path)
            ids.update(str(data["id"]) for data in rows if isinstance(data, dict) and "id" in data)
    return ids


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text`` only once it is complete on disk (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); outputs are read by other users' jobs
        # (a trainer running as another account), so give it the mode open() would
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(_to_jsonable(obj), ensure_ascii=False, indent=indent, allow_nan=False) + "\n")


def write_jsonl_atomic(path: str | os.PathLike[str], records: Iterable[Any]) -> int:
    """Write a whole JSONL file atomically (for outputs that are produced in one go)."""
    lines = [dumps_line(record).decode("utf-8") for record in records]
    write_text_atomic(path, "".join(lines))
    return len(lines)
