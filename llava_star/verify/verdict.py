"""What the verifier says about one answer: a check per label plus the whole-answer guard."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

# The check type of the whole-answer guards (empty, refusal, degenerate, hint leakage).
ANSWER_CHECK = "answer"


class Check(NamedTuple):
    """One decision: a label of ``type`` (or the whole answer) passed or not, and why.

    >>> Check("class", False, "'swimming' is negated").to_dict()
    {'type': 'class', 'passed': False, 'reason': "'swimming' is negated"}
    """

    type: str
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "passed": self.passed, "reason": self.reason}


class Verdict(NamedTuple):
    """An answer passes when every check passes (the guard and each label)."""

    passed: bool
    checks: tuple[Check, ...]

    @property
    def reason(self) -> str:
        """The first failing check as ``type: reason`` ("" when the answer passed)."""
        for check in self.checks:
            if not check.passed:
                return f"{check.type}: {check.reason}"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [check.to_dict() for check in self.checks]}


def first_failure(checks: Iterable[Mapping[str, Any]]) -> str:
    """The first failing check of a stored verdict as ``type: reason`` ("" when it passed).

    >>> first_failure([{"type": "answer", "passed": True, "reason": "ok"}, {"type": "box", "passed": False, "reason": "IoU 0.2"}])
    'box: IoU 0.2'
    """
    for check in checks:
        if not check.get("passed", False):
            return f"{check.get('type', '?')}: {check.get('reason', '')}"
    return ""


def failure_kind(check: Mapping[str, Any]) -> str:
    """``type: reason`` with quoted values and numbers elided, so failures count by kind.

    >>> failure_kind({"type": "class", "passed": False, "reason": "expected 'red', got 'blue' at 0.5 s"})
    "class: expected '…', got '…' at N s"
    """
    reason = str(check.get("reason", "")).strip() or "no reason given"
    reason = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)
    reason = re.sub(r"\d+(?:\.\d+)?", "N", reason)
    return f"{check.get('type', '?')}: {reason}"
