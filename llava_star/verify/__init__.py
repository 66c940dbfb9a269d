"""The verifier: does a model's answer assert the gold labels of its sample?

One table (``rules.RULES``) maps each label type to a parser and a check; whole-answer
guards (empty, refusal, degenerate repetition, hint leakage) come first. Usage::

    from llava_star.verify import verify
    verdict = verify(answer, sample.labels, rationalized=False)
    verdict.passed, verdict.reason, verdict.to_dict()
"""

from __future__ import annotations

from llava_star.verify.core import verify
from llava_star.verify.verdict import Check, Verdict

__all__ = ["Check", "Verdict", "verify"]
