"""Build hook for the optional compiled verifier; everything else is in setup.cfg.

``LLAVA_STAR_COMPILE=1`` compiles the verifier's parsers with mypyc (C extensions built
from the same, type-annotated sources), about 1.2x faster on the self-training hot path
(``benchmarks/verifier.py``). It needs ``mypy`` and a C compiler at build time::

    pip install mypy==2.4.1 setuptools wheel
    LLAVA_STAR_COMPILE=1 pip install --no-build-isolation .

Without the flag (the default) the package is pure Python and behaves the same.
"""

from __future__ import annotations

import os

from setuptools import setup

# The modules on the per-answer path of ``llava_star.verify.verify``. Not core.py: it
# validates untrusted input (a non-string answer must be our RecordError, while compiled
# code raises TypeError on a wrong argument type); not cli.py or embedding.py (I/O and a
# sentence encoder gain nothing from compiling).
COMPILED_VERIFIER = [
    "llava_star/verify/scan.py",
    "llava_star/verify/answer.py",
    "llava_star/verify/guards.py",
    "llava_star/verify/phrases.py",
    "llava_star/verify/quantities.py",
    "llava_star/verify/rules.py",
    "llava_star/verify/verdict.py",
]


def compiled_extensions() -> list:
    if os.environ.get("LLAVA_STAR_COMPILE", "0") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as error:
        raise SystemExit(
            "LLAVA_STAR_COMPILE=1 needs mypy at build time: pip install mypy==2.4.1 setuptools wheel, "
            "then LLAVA_STAR_COMPILE=1 pip install --no-build-isolation ."
        ) from error
    return mypycify(["--ignore-missing-imports", *COMPILED_VERIFIER], opt_level="3")


setup(ext_modules=compiled_extensions())
