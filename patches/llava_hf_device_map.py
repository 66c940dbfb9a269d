"""lmms-eval 0.7.3's ``llava_hf`` (simple and chat) cannot load on transformers 5 in one process.

Upstream bug: ``LlavaHf.__init__`` defaults ``device_map=""`` and, in a single process,
passes it to ``from_pretrained``; transformers 4 read an empty device map as none,
transformers 5 raises "When passing device_map as a string, the value needs to be a device
name ... but found ." Fix: in a single process an empty ``device_map`` becomes ``device``,
which loads the model where 4.x put it (the wrapper moves it to ``device`` either way).
With several processes the wrapper already replaces "" by ``cuda:RANK``.

Delete when lmms-eval's ``llava_hf`` no longer passes ``device_map=""`` to ``from_pretrained``.
"""

from __future__ import annotations

import functools
import os

from patches import Patch

_MARK = "_llava_star_device_map"


def apply() -> None:
    from lmms_eval.models.simple.llava_hf import LlavaHf

    if getattr(LlavaHf.__init__, _MARK, False):
        return
    original = LlavaHf.__init__

    @functools.wraps(original)
    def __init__(self, *args, device: str = "cuda", device_map: str = "", **kwargs):
        if device_map == "" and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            device_map = device
        original(self, *args, device=device, device_map=device_map, **kwargs)

    setattr(__init__, _MARK, True)
    LlavaHf.__init__ = __init__


PATCH = Patch("llava_hf_device_map", {"lmms_eval": ("0.7.3",), "transformers": ("5.23.0",)}, apply)
