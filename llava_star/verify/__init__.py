"""The verifier: does a model's answer assert the gold labels of its sample?

One table (``rules.RULES``) maps each label type to a parser and a check; whole-answer
guards (empty, refusal, degenerate repetition, hint leakage) come first. Usage::

    from llava_star.verify import verify
    verdict = verify(answer, sample.labels, rationalized=False)
    verdict.passed, verdict.reason, verdict.to_dict()
"""

from __future__ import annotations

import sys
from pathlib import Path

from llava_star.verify.core import verify
from llava_star.verify.verdict import Check, Verdict

__all__ = ["Check", "Verdict", "compiled_modules", "stale_compiled_modules", "verify"]
# Source files written this long after their extension module count as edited since the build
# (pip unpacks a wheel's .py and .so files within moments of each other).
_EDIT_AFTER_BUILD_SECONDS = 2.0


def compiled_modules() -> list[str]:
    """The verifier modules running as C extensions: those of a ``LLAVA_STAR_COMPILE=1``
    build (setup.py), empty for the default pure-Python install. Python prefers an
    extension module to the ``.py`` file next to it, so this is what ``verify`` runs."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.startswith(f"{__name__}.") and not str(getattr(module, "__file__", "") or "").endswith(".py")
    )


def stale_compiled_modules() -> list[str]:
    """Compiled modules whose ``.py`` source was edited after the build: ``make compile``
    builds next to the sources, and Python runs the old extension until a rebuild."""
    stale = []
    for name in compiled_modules():
        extension = Path(str(sys.modules[name].__file__))
        source = extension.with_name(name.rsplit(".", 1)[1] + ".py")
        if source.is_file() and source.stat().st_mtime > extension.stat().st_mtime + _EDIT_AFTER_BUILD_SECONDS:
            stale.append(name)
    return stale
