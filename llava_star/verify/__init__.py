"""The verifier: does a model's answer assert the gold labels of its sample?

One table (``rules.RULES``) maps each label type to a parser and a check; whole-answer
guards (empty, refusal, degenerate repetition, hint leakage) come first. Usage::

    from llava_star.verify import verify
    verdict = verify(answer, sample.labels, rationalized=False)
    verdict.passed, verdict.reason, verdict.to_dict()
"""

from __future__ import annotations

import sys

from llava_star.verify.core import verify
from llava_star.verify.verdict import Check, Verdict

__all__ = ["Check", "Verdict", "compiled_modules", "verify"]


def compiled_modules() -> list[str]:
    """The verifier modules running as C extensions: those of a ``LLAVA_STAR_COMPILE=1``
    build (setup.py), empty for the default pure-Python install. Python prefers an
    extension module to the ``.py`` file next to it, so this is what ``verify`` runs."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.startswith(f"{__name__}.") and not str(getattr(module, "__file__", "") or "").endswith(".py")
    )
