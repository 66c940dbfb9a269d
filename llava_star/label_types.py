"""The label types (DESIGN.md "Label"): what a valid value is, and how a hint writes it.

One table, :data:`LABEL_TYPES`, read by the label schema (:class:`llava_star.records.Label`
validates a value with ``normalise``), the rationalization prompt (``render``: the gold
label in words the verifier reads back as that label) and the generic adapter (``cells``:
how a CSV/JSONL cell becomes a value). The verifier's rule for each type (parse the
answer, compare with the label) lives with the verifier, in
:data:`llava_star.verify.rules.RULES`, keyed by the same names.

Adding a label type is an entry here and a rule there; ``tests/test_label_types.py``
checks that every type has both and that a rendered label verifies as itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from llava_star.errors import LabelError

if TYPE_CHECKING:
    from llava_star.records import Label

# How the generic adapter reads a cell: a string, a number, a JSON list of numbers (or one
# column per number), yes/no, or a list of steps (JSON, or split at the mapping's separator).
CellKind = Literal["text", "number", "numbers", "yes_no", "steps"]


@dataclass(frozen=True)
class LabelType:
    name: str
    normalise: Callable[[Any], Any]
    render: Callable[[Label], str]
    cells: CellKind = "text"
    columns: int = 1  # how many annotation columns may hold one value (a box: x1, y1, x2, y2)


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool.

    >>> is_number(2), is_number(2.5), is_number(True), is_number(float("nan"))
    (True, True, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def format_number(value: float) -> str:
    """A number as a person writes it: no trailing ``.0``, at most three decimals.

    >>> format_number(3.0), format_number(85.25), format_number(0.1 + 0.2)
    ('3', '85.25', '0.3')
    """
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _seconds(value: float) -> str:
    return f"{format_number(value)} seconds"


def _words(name: str) -> str:
    return name.replace("_", " ")


def _non_empty_string(kind: str) -> Callable[[Any], str]:
    def normalise(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise LabelError(f"value: a {kind} label needs a non-empty string, got {value!r}")
        return value.strip()

    return normalise


def _finite_number(kind: str) -> Callable[[Any], float]:
    def normalise(value: Any) -> float:
        if not is_number(value):
            raise LabelError(f"value: a {kind} label needs a finite number, got {value!r}")
        return float(value)

    return normalise


def _time_range(value: Any) -> tuple[float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(is_number(v) for v in value)):
        raise LabelError(f"value: a time_range label needs [start, end] in seconds, got {value!r}")
    start, end = float(value[0]), float(value[1])
    if end < start or start < 0:
        raise LabelError(f"value: a time_range needs 0 <= start <= end, got {value!r}")
    return (start, end)


def _box(value: Any) -> tuple[float, ...]:
    if not (isinstance(value, (list, tuple)) and len(value) == 4 and all(is_number(v) for v in value)):
        raise LabelError(f"value: a box label needs four numbers normalized to [0, 1], got {value!r}")
    if not all(-1e-6 <= float(v) <= 1 + 1e-6 for v in value):
        raise LabelError(f"value: box coordinates must be normalized to [0, 1], got {value!r}")
    return tuple(float(v) for v in value)


def _yes_no(value: Any) -> bool:
    if not isinstance(value, bool):
        raise LabelError(f"value: a yes_no label needs true or false, got {value!r}")
    return value


def _steps(value: Any) -> tuple[str, ...]:
    if not (isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v.strip() for v in value)):
        raise LabelError(f"value: a sequence label needs a non-empty list of strings, got {value!r}")
    return tuple(v.strip() for v in value)


def _render_number(label: Label) -> str:
    text = format_number(label.value)
    # the verifier reads a number next to its name ("score 85.5")
    return f"{_words(label.name)} {text}" if label.name else text


def _render_box(label: Label) -> str:
    return "[" + ", ".join(f"{coordinate:.2f}" for coordinate in label.value) + "]"


LABEL_TYPES: dict[str, LabelType] = {
    entry.name: entry
    for entry in (
        LabelType("class", _non_empty_string("class"), lambda label: _words(label.value)),
        LabelType("number", _finite_number("number"), _render_number, cells="number"),
        LabelType("timestamp", _finite_number("timestamp"), lambda label: f"at {_seconds(label.value)}", "number"),
        LabelType(
            "time_range",
            _time_range,
            lambda label: f"from {_seconds(label.value[0])} to {_seconds(label.value[1])}",
            cells="numbers",
            columns=2,
        ),
        LabelType("box", _box, _render_box, cells="numbers", columns=4),
        LabelType("yes_no", _yes_no, lambda label: "yes" if label.value else "no", cells="yes_no"),
        LabelType("choice", _non_empty_string("choice"), lambda label: f"({label.value}) {label.options[label.value]}"),
        LabelType(
            "sequence", _steps, lambda label: ", then ".join(_words(step) for step in label.value), cells="steps"
        ),
        LabelType("text", _non_empty_string("text"), lambda label: _words(label.value)),
    )
}


def label_type_names(labels: Iterable[Label]) -> list[str]:
    """The types of a sample's labels, sorted, each once: how export's metadata and the report's
    ``by_label_type`` group a sample (one with a class and a number counts under both).

    >>> from types import SimpleNamespace as Labelled
    >>> label_type_names([Labelled(type="number"), Labelled(type="class"), Labelled(type="number")])
    ['class', 'number']
    """
    return sorted({label.type for label in labels})


def label_type(name: Any) -> LabelType:
    """The entry for ``name``, or a ``LabelError`` listing the known types."""
    entry = LABEL_TYPES.get(name) if isinstance(name, str) else None
    if entry is None:
        raise LabelError(f"type: unknown label type {name!r}; expected one of {', '.join(LABEL_TYPES)}")
    return entry
