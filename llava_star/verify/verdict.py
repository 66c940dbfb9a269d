"""What the verifier says about one answer: a check per label plus the whole-answer guard."""

from __future__ import annotations

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
