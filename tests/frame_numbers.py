"""Test clips whose pixels say which frame they are.

Frame ``i`` is uniformly grey at ``FRAME_STEP * i``, so after a lossy encode and decode a
test can still tell which frames a decoder returned. Imported by name from test modules
(``from frame_numbers import ...``) rather than from conftest, which is not unique once
subfolders have their own conftest.py.
"""

from __future__ import annotations

import numpy as np

FRAME_STEP = 7  # grey level step between consecutive frames; 36 frames fit in uint8


def numbered_frames(num_frames: int, size: int = 32) -> np.ndarray:
    """Frames whose grey level says their number (``FRAME_STEP * i``, wrapping at 256)."""
    levels = (np.arange(num_frames) * FRAME_STEP) % 256
    return np.broadcast_to(levels[:, None, None, None], (num_frames, size, size, 3)).astype(np.uint8)


def decoded_frame_numbers(array: np.ndarray) -> list[int]:
    """Invert :func:`numbered_frames` (up to 36 frames; lossy codecs move a level by ~2)."""
    return [round(level / FRAME_STEP) for level in array.reshape(len(array), -1).mean(axis=1)]
