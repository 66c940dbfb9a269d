"""Every module's docstring examples run, so the examples in the code stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import llava_star
import patches

MODULES = sorted(info.name for info in pkgutil.walk_packages(llava_star.__path__, "llava_star.")) + [
    "patches",
    *sorted(info.name for info in pkgutil.walk_packages(patches.__path__, "patches.")),
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name.endswith("lmms_adapter"):
        pytest.importorskip("lmms_eval", reason="the eval extra is not installed")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_package_has_doctests_at_all():
    attempted = sum(
        doctest.testmod(importlib.import_module(name)).attempted for name in MODULES if "lmms_adapter" not in name
    )
    assert attempted > 50
