"""``verify(answer, labels)``: the verdict on one answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llava_star.errors import LabelError, RecordError
from llava_star.records import Label
from llava_star.verify.answer import Answer
from llava_star.verify.guards import check_answer
from llava_star.verify.rules import RULES
from llava_star.verify.verdict import Check, Verdict


def as_labels(labels: Sequence[Label | Mapping[str, Any]]) -> tuple[Label, ...]:
    """Labels as :class:`Label`; JSON objects are validated, errors name ``labels[i].field``."""
    if not isinstance(labels, (list, tuple)) and (
        isinstance(labels, (str, bytes, Mapping)) or not isinstance(labels, Sequence)
    ):
        raise LabelError(f"labels: expected a list of labels, got {type(labels).__name__}")
    out = []
    for index, label in enumerate(labels):
        if isinstance(label, Label):
            out.append(label)
            continue
        try:
            out.append(Label.from_dict(label))
        except LabelError as error:
            raise LabelError(f"labels[{index}].{error}") from None
    return tuple(out)


def verify(
    answer: str, labels: Sequence[Label | Mapping[str, Any]], *, rationalized: bool = False, truncated: bool = False
) -> Verdict:
    """Does ``answer`` assert every gold label? (DESIGN.md "Verifier semantics")

    The first check (type ``answer``) is the whole-answer guard; when it fails, the labels
    are not read. ``rationalized`` answers (from the hint prompt) must not refer to the hint;
    ``truncated`` ones (cut off at the generation's token limit) fail whatever they say.

    >>> verdict = verify("The person is playing the guitar.", [Label("class", "playing guitar")])
    >>> verdict.passed, verdict.reason
    (True, '')
    >>> verify("He is not playing guitar.", [Label("class", "playing guitar")]).reason
    "class: 'playing guitar' is negated: 'not playing guitar'"
    """
    if not isinstance(answer, str):
        raise RecordError(f"answer: expected a string, got {type(answer).__name__}")
    labels = as_labels(labels)
    analysed = Answer(answer)
    guard = check_answer(analysed, rationalized=rationalized, truncated=truncated)
    if not guard.passed:
        return Verdict(False, (guard,))
    checks = [guard]
    for index, label in enumerate(labels):
        checks.append(_check_label(analysed, label, index))
    return Verdict(all(check.passed for check in checks), tuple(checks))


def _check_label(answer: Answer, label: Label, index: int) -> Check:
    rule = RULES[label.type]
    try:
        value, note = rule.parse(answer, label)
    except LabelError as error:
        raise LabelError(f"labels[{index}].{error}") from None
    if value is None:
        return Check(label.type, False, note)
    passed, reason = rule.check(value, label)
    return Check(label.type, passed, reason)
