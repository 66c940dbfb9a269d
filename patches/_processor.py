"""A wrapper's processor with the inputs transformers 5 refuses put the way it takes them.

Shared by the chat-wrapper patches: lmms-eval 0.7.3's chat wrappers call a transformers
processor with ``images=[]`` for a video-only question, ``audios=`` (renamed ``audio`` in
transformers 5) and video *paths*, which transformers 5 decodes only with torchcodec and
samples to the processor's default frame count, not the wrapper's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class FixedInputsProcessor:
    """Calls ``processor`` with empty media lists as ``None``, ``audios`` as ``audio`` and each
    video path decoded by ``decode`` (path -> frames); every other attribute is the processor's."""

    def __init__(self, processor: Any, decode: Callable[[str], Any]) -> None:
        self._processor = processor
        self._decode = decode

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if "audios" in kwargs:
            kwargs.setdefault("audio", kwargs.pop("audios"))
        for key in ("images", "videos", "audio"):
            if key in kwargs and not _given(kwargs[key]):
                kwargs[key] = None
        if kwargs.get("videos") is not None:
            kwargs["videos"] = [self._decode(video) if isinstance(video, str) else video for video in kwargs["videos"]]
        return self._processor(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)


def _given(value: Any) -> bool:
    """False for ``None`` and empty lists (what the wrappers pass for "none")."""
    return value is not None and not (isinstance(value, (list, tuple)) and len(value) == 0)
