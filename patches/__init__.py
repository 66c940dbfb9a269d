"""Runtime patches on third-party code, each applied only on the versions it was tested on.

A patch fixes a bug in a library we run but do not own (lmms-eval's model wrappers, their
pairing with transformers) until a release fixes it. Each is a module here with one
:class:`Patch` named ``PATCH``: the upstream bug in its docstring, the versions it was
tested on (``tested``), and when it can be deleted. Nothing is patched on import: our entry
points call :func:`apply_patches` explicitly (``llava-star eval`` in the lmms-eval process it
starts; ``python -m patches.lmms_eval`` for lmms-eval's own command line). On any other
version a patch is skipped with a log line, so an upgrade runs the library as shipped.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata

logger = logging.getLogger(__name__)

# the patch modules, applied in this order
PATCH_MODULES = (
    "patches.lmms_eval_exit_status",
    "patches.llava_hf_device_map",
    "patches.llava_hf_chat_inputs",
    "patches.video_llava_read_video",
    "patches.huggingface_model_class",
    "patches.huggingface_chat_inputs",
)


@dataclass(frozen=True)
class Patch:
    """One fix: ``apply`` changes the library in place; ``tested`` maps each distribution it
    touches to the versions it was tested on (all must match for it to apply)."""

    name: str
    tested: Mapping[str, tuple[str, ...]]
    apply: Callable[[], None]


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def applies(patch: Patch, versions: Callable[[str], str | None] = installed_version) -> bool:
    """Whether every distribution the patch touches is at a version it was tested on.

    >>> fix = Patch("x", {"lmms_eval": ("0.7.3",)}, lambda: None)
    >>> applies(fix, {"lmms_eval": "0.7.3"}.get), applies(fix, {"lmms_eval": "0.7.4"}.get)
    (True, False)
    """
    return all(versions(distribution) in tested for distribution, tested in patch.tested.items())


def load_patches() -> list[Patch]:
    return [importlib.import_module(name).PATCH for name in PATCH_MODULES]


def apply_patches(versions: Callable[[str], str | None] = installed_version) -> list[str]:
    """Apply every patch whose tested versions are installed; returns the names applied."""
    applied = []
    for patch in load_patches():
        if applies(patch, versions):
            patch.apply()
            applied.append(patch.name)
        else:
            found = {distribution: versions(distribution) for distribution in patch.tested}
            logger.info("patch %s not applied: tested on %s, found %s", patch.name, dict(patch.tested), found)
    if applied:
        logger.info("patches applied: %s", ", ".join(applied))
    return applied
