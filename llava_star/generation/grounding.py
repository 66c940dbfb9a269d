"""The grounding check: would the answer pass without looking at the video?

A verifier that checks labels cannot tell an answer read from the video from one guessed
from the question's wording or the dataset's majority class. So every kept answer's
question is asked again (the direct prompt) with frames that carry no usable content:

- ``blank``: the video's mean frame, repeated: one flat frame of the clip's mean colour
  (the mean over frames AND pixels; the mean over frames alone would be the video itself
  for a still scene); no object, no motion, no order, only the overall colour cast;
- ``shuffle``: the same frames in another order, for labels that depend on order
  (sequence, timestamp, time_range, motion).

An answer to that question that still passes the verifier is ``grounded: false``: its
label is answerable from language priors, and training on it teaches those priors.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from llava_star.generation.prompts import direct_prompt

if TYPE_CHECKING:
    from llava_star.generation.answerer import Answerer
    from llava_star.generation.sample_stream import PendingSample
    from llava_star.media.video import Frames


def uninformative_frames(frames: Frames, mode: str, *, seed: int, key: str) -> Frames:
    """``frames`` with their content made useless for ``mode`` (blank or shuffle).

    The shuffle's order comes from ``seed`` and the sample's ``key`` (its id), so a sample
    is checked the same way in every batch layout and on every rank. Timestamps stay: the
    model is told the same times, only the pictures change.

    >>> from llava_star.media.video import Frames
    >>> pixels = np.arange(4, dtype=np.uint8).reshape(4, 1, 1, 1)
    >>> frames = Frames(pixels, np.arange(4.0), np.arange(4), 1.0, 4.0, "v.mp4", 4, "frames")
    >>> uninformative_frames(frames, "blank", seed=0, key="a").array.ravel().tolist()
    [2, 2, 2, 2]
    >>> uninformative_frames(frames, "shuffle", seed=0, key="a").timestamps.tolist()
    [0.0, 1.0, 2.0, 3.0]
    >>> sorted(uninformative_frames(frames, "shuffle", seed=0, key="a").array.ravel().tolist())
    [0, 1, 2, 3]
    """
    array = frames.array
    if mode == "blank":
        mean = array.reshape(-1, array.shape[-1]).mean(axis=0, dtype=np.float64).round().astype(array.dtype)
        changed = np.broadcast_to(mean, array.shape).copy()
    elif mode == "shuffle":
        rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
        order = rng.permutation(len(array))
        if len(array) > 1 and (order == np.arange(len(array))).all():  # never the original order
            order = order[::-1]
        changed = array[order]
    else:
        raise ValueError(f"grounding check: expected blank or shuffle, got {mode!r}")
    return dataclasses.replace(frames, array=changed)


def grounded_flags(items: Sequence[PendingSample], answerer: Answerer, mode: str, *, seed: int) -> list[bool]:
    """For each (kept) item: True when its question, asked without the video's content, fails.

    >>> grounded_flags([], None, "blank", seed=0)
    []
    """
    from llava_star.verify import verify

    if not items:
        return []
    videos = [uninformative_frames(item.frames, mode, seed=seed, key=item.sample.id) for item in items]
    replies = answerer.replies([direct_prompt(item.sample.question) for item in items], videos)
    return [
        not verify(reply.text, item.sample.labels, truncated=reply.truncated).passed
        for item, reply in zip(items, replies, strict=True)
    ]
