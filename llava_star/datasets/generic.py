"""Any labeled video table (CSV, TSV or JSONL) plus a small YAML mapping.

This is the "any supervision" promise of Video-STaR: say which column is the video,
which columns are labels of which type, and which question to ask. A row of
``clips.csv``::

    clip,species,behaviour,t0,t1,count
    zoo/cam1_0001.mp4,otter,swimming,2.5,7.0,3

with the mapping ``clips.yaml``::

    video: clip
    task: action_recognition
    templates: ["What is the {animal} doing?", "Which behaviour does the {animal} show?"]
    slots: {animal: species}
    labels:
      - {type: class, column: behaviour, name: behaviour, vocabulary: [swimming, eating, sleeping]}
      - {type: time_range, columns: [t0, t1]}
      - {type: number, column: count, name: count, tolerance: 0}

becomes::

    {"id": "clips:2", "video": "zoo/cam1_0001.mp4", "question": "What is the otter doing?",
     "labels": [{"type": "class", "value": "swimming", "name": "behaviour", "vocabulary": ["swimming", ...]},
                {"type": "time_range", "value": [2.5, 7.0]}, {"type": "number", "value": 3.0, ...}],
     "source": "clips", "task": "action_recognition"}

Mapping keys (an unknown key is an error naming it): ``video`` (required), ``task``
(required: a task of ``llava_star.datasets.questions``, or any name when ``question`` or
``templates`` is given), ``labels`` (required), ``id``, ``start``, ``end``, ``split``
(columns), ``question`` (a column holding the question text), ``templates`` and
``slots`` (own paraphrases and which column fills each ``{slot}``), ``source``.
A label takes ``type``, ``column`` (or ``columns`` for ``time_range``/``box``), and any
fixed Label field (``name``, ``vocabulary``, ``synonyms``, ``tolerance``,
``rel_tolerance``, ``min_iou``, ``box_format``, ``options``, ``duration``), plus
``duration_column``, ``options_columns`` (choice) and ``separator`` (sequence in CSV,
default ``;``). A row whose label cell is empty is skipped and counted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llava_star.config import load_yaml
from llava_star.datasets.adapter import (
    Found,
    PrepareRequest,
    Skipped,
    located,
    parse_seconds,
    read_csv_rows,
    read_text_lines,
    split_aliases,
)
from llava_star.datasets.questions import (
    fill_template,
    make_question,
    question_templates,
    task_slots,
    template_slots,
)
from llava_star.errors import AnnotationError, ConfigError
from llava_star.label_types import LABEL_TYPES
from llava_star.records import Label, Sample

logger = logging.getLogger(__name__)

_MAPPING_KEYS = ("video", "task", "labels", "id", "start", "end", "split", "question", "templates", "slots", "source")
_FIXED_LABEL_FIELDS = (
    "name",
    "vocabulary",
    "synonyms",
    "tolerance",
    "rel_tolerance",
    "min_iou",
    "box_format",
    "options",
    "duration",
)
_LABEL_KEYS = ("type", "column", "columns", "duration_column", "options_columns", "separator", *_FIXED_LABEL_FIELDS)
_TRUE, _FALSE = {"yes", "true", "1", "y"}, {"no", "false", "0", "n"}


@dataclass(frozen=True)
class LabelColumns:
    """How one label is read from a row."""

    type: str
    columns: tuple[str, ...]
    fixed: Mapping[str, Any]
    duration_column: str | None = None
    options_columns: Mapping[str, str] | None = None
    separator: str = ";"


@dataclass(frozen=True)
class ColumnMapping:
    """A parsed mapping YAML (see the module docstring)."""

    video: str
    task: str
    labels: tuple[LabelColumns, ...]
    id: str | None = None
    start: str | None = None
    end: str | None = None
    split: str | None = None
    question: str | None = None
    templates: tuple[str, ...] = ()
    slots: Mapping[str, str] | None = None
    source: str | None = None


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"mapping key {key!r}: expected a non-empty string, got {value!r}")
    return value


def _label_columns(spec: Any, position: int) -> LabelColumns:
    key = f"labels[{position}]"
    if not isinstance(spec, dict):
        raise ConfigError(f"mapping key {key!r}: expected a mapping with 'type' and 'column'")
    unknown = sorted(set(spec) - set(_LABEL_KEYS))
    if unknown:
        raise ConfigError(f"mapping key {key}.{unknown[0]}: unknown; expected one of {', '.join(_LABEL_KEYS)}")
    label_type = spec.get("type")
    if label_type not in LABEL_TYPES:
        raise ConfigError(
            f"mapping key {key}.type: unknown label type {label_type!r}; expected one of {', '.join(LABEL_TYPES)}"
        )
    if ("column" in spec) == ("columns" in spec):
        raise ConfigError(f"mapping key {key}: give exactly one of 'column' or 'columns'")
    if "column" in spec:
        columns = (_text(spec["column"], f"{key}.column"),)
    else:
        raw = spec["columns"]
        expected = LABEL_TYPES[label_type].columns
        if not isinstance(raw, list) or expected == 1 or len(raw) != expected:
            takes_lists = ", ".join(f"{t.name} ({t.columns} columns)" for t in LABEL_TYPES.values() if t.columns > 1)
            raise ConfigError(
                f"mapping key {key}.columns: only {takes_lists} take a list, got {raw!r} for {label_type}"
            )
        columns = tuple(_text(column, f"{key}.columns") for column in raw)
    options_columns = spec.get("options_columns")
    if options_columns is not None and not (
        isinstance(options_columns, dict) and all(isinstance(v, str) for v in options_columns.values())
    ):
        raise ConfigError(f"mapping key {key}.options_columns: expected {{option key: column}}")
    fixed = {name: spec[name] for name in _FIXED_LABEL_FIELDS if name in spec}
    if "synonyms" in fixed and isinstance(fixed["synonyms"], list):
        fixed["synonyms"] = tuple(fixed["synonyms"])
    return LabelColumns(
        type=label_type,
        columns=columns,
        fixed=fixed,
        duration_column=spec.get("duration_column"),
        options_columns=options_columns,
        separator=str(spec.get("separator", ";")),
    )


def parse_mapping(data: Any, source: str = "mapping") -> ColumnMapping:
    """Check a mapping (already loaded from YAML); errors name the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a YAML mapping of keys, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_MAPPING_KEYS))
    if unknown:
        raise ConfigError(f"{source}: mapping key {unknown[0]!r}: unknown; expected one of {', '.join(_MAPPING_KEYS)}")
    for required in ("video", "task", "labels"):
        if required not in data:
            raise ConfigError(f"{source}: mapping key {required!r} is required")
    labels = data["labels"]
    if not isinstance(labels, list) or not labels:
        raise ConfigError(f"{source}: mapping key 'labels': expected a non-empty list")
    templates = data.get("templates", [])
    if isinstance(templates, str) or not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
        raise ConfigError(f"{source}: mapping key 'templates': expected a list of strings")
    slots = data.get("slots") or {}
    if not isinstance(slots, dict) or not all(isinstance(v, str) for v in slots.values()):
        raise ConfigError(f"{source}: mapping key 'slots': expected {{slot: column}}")
    mapping = ColumnMapping(
        video=_text(data["video"], "video"),
        task=_text(data["task"], "task"),
        labels=tuple(_label_columns(spec, position) for position, spec in enumerate(labels)),
        **{key: _text(data[key], key) for key in ("id", "start", "end", "split", "question", "source") if key in data},
        templates=tuple(templates),
        slots=slots,
    )
    if not mapping.question:
        if templates:
            needed = frozenset().union(*(template_slots(template) for template in templates))
        elif mapping.task in question_templates():
            needed = task_slots(mapping.task)
        else:
            raise ConfigError(
                f"{source}: mapping key 'task': {mapping.task!r} has no packaged templates "
                f"({', '.join(question_templates())}); add 'templates' or a 'question' column"
            )
        if needed != set(slots):
            raise ConfigError(
                f"{source}: mapping key 'slots': the templates need {sorted(needed)}, the mapping gives {sorted(slots)}"
            )
    return mapping


def load_mapping(path: Path) -> ColumnMapping:
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"--mapping {path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"--mapping {path}: not valid YAML: {error}") from None
    return parse_mapping(data, str(path))


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, row) from CSV, TSV or JSONL, chosen by the file's suffix."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        yield from read_csv_rows(path, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix in (".jsonl", ".ndjson"):
        for line_number, line in read_text_lines(path):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise AnnotationError(f"{path}:{line_number}: not valid JSON: {error.msg}") from None
            except RecursionError:
                raise AnnotationError(f"{path}:{line_number}: nested too deeply") from None
            except ValueError as error:  # an integer of thousands of digits
                raise AnnotationError(f"{path}:{line_number}: {error}") from None
            if not isinstance(row, dict):
                raise AnnotationError(f"{path}:{line_number}: expected a JSON object, got {type(row).__name__}")
            yield line_number, row
    else:
        raise AnnotationError(f"--annotations {path}: expected a .csv, .tsv or .jsonl file")


def _cell(row: Mapping[str, Any], column: str, where: str) -> Any:
    if column not in row:
        raise AnnotationError(f"{where}: no column {column!r}; the row has {sorted(row)}")
    value = row[column]
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def _parse_list(value: Any, where: str, column: str) -> list[Any]:
    if isinstance(value, list):
        return value
    try:
        parsed = json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, list):
        raise AnnotationError(f"{where}: column {column!r}: expected a JSON list like [1.0, 2.5], got {value!r}")
    return parsed


def _number(value: Any, where: str, column: str) -> float:
    if isinstance(value, bool):
        raise AnnotationError(f"{where}: column {column!r}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: column {column!r}: expected a number, got {value!r}") from None


def label_value(spec: LabelColumns, cells: list[Any], where: str) -> Any:
    """The typed value of a label from its cells (strings from CSV, JSON values from JSONL)."""
    column = spec.columns[0]
    kind = LABEL_TYPES[spec.type].cells
    if kind == "numbers":
        values = cells if len(cells) > 1 else _parse_list(cells[0], where, column)
        return [_number(value, where, ",".join(spec.columns)) for value in values]
    value = cells[0]
    if kind == "number":
        return _number(value, where, column)
    if kind == "yes_no":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word not in _TRUE | _FALSE:
            raise AnnotationError(f"{where}: column {column!r}: expected yes/no or true/false, got {value!r}")
        return word in _TRUE
    if kind == "steps":
        if isinstance(value, list) or (isinstance(value, str) and value.lstrip().startswith("[")):
            return _parse_list(value, where, column)
        return [step.strip() for step in str(value).split(spec.separator) if step.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # a numeric class id in JSONL is still a class name
    return value


def build_label(spec: LabelColumns, row: Mapping[str, Any], where: str) -> Label | str:
    """The label of a row, or the name of the empty column that leaves it unlabeled."""
    cells = [_cell(row, column, where) for column in spec.columns]
    empty = [column for column, cell in zip(spec.columns, cells) if cell is None]
    if empty:
        return empty[0]
    fields = dict(spec.fixed)
    if spec.duration_column:
        fields["duration"] = parse_seconds(_cell(row, spec.duration_column, where), where, spec.duration_column)
    if spec.options_columns:
        fields["options"] = {key: str(_cell(row, column, where)) for key, column in spec.options_columns.items()}
    with located(f"{where}: label {'+'.join(spec.columns)}"):
        return Label(spec.type, label_value(spec, cells, where), **fields)


def _question(
    mapping: ColumnMapping, row: Mapping[str, Any], labels: list[Label], where: str, request: PrepareRequest
) -> str:
    if mapping.question:
        question = _cell(row, mapping.question, where)
        if not isinstance(question, str):
            raise AnnotationError(f"{where}: column {mapping.question!r}: expected the question text")
        return question
    slots = {}
    for slot, column in (mapping.slots or {}).items():
        value = _cell(row, column, where)
        if value is None:
            raise AnnotationError(f"{where}: column {column!r} (slot {{{slot}}}) is empty")
        slots[slot] = str(value)
    avoid = [str(label.value) for label in labels if label.type in ("class", "text")]
    avoid += [synonym for label in labels for synonym in label.synonyms]
    try:
        if mapping.templates:
            return fill_template(mapping.templates, request.rng, avoid=avoid, label="mapping templates", **slots)
        return make_question(mapping.task, request.rng, avoid=avoid, **slots)
    except ValueError as error:
        raise AnnotationError(f"{where}: {error}") from None


def adapt(request: PrepareRequest) -> Iterator[Found | Skipped]:
    if request.mapping is None:
        raise ConfigError("--mapping: the generic adapter needs a YAML mapping (see README 'Preparing datasets')")
    mapping = load_mapping(request.mapping)
    source = mapping.source or request.annotations.stem
    wanted = split_aliases(request.split) if request.split else None
    for line, row in read_rows(request.annotations):
        where = f"{request.annotations}:{line}"
        if wanted is not None and mapping.split and str(_cell(row, mapping.split, where) or "").lower() not in wanted:
            continue
        video = _cell(row, mapping.video, where)
        if not isinstance(video, str):
            raise AnnotationError(f"{where}: column {mapping.video!r}: expected a video path, got {video!r}")
        labels = [build_label(spec, row, where) for spec in mapping.labels]
        empty = [label for label in labels if isinstance(label, str)]
        if empty:
            yield Skipped(f"empty label column {empty[0]!r}", where)
            continue
        clip = {
            key: parse_seconds(_cell(row, column, where), where, column)
            for key, column in (("start", mapping.start), ("end", mapping.end))
            if column and _cell(row, column, where) is not None
        }
        sample_id = str(_cell(row, mapping.id, where) or "") if mapping.id else f"{source}:{line}"
        if not sample_id:
            raise AnnotationError(f"{where}: column {mapping.id!r}: empty sample id")
        question = _question(mapping, row, labels, where, request)
        with located(where):
            sample = Sample(sample_id, video, question, tuple(labels), source, mapping.task, **clip)
        yield Found(sample, where)
