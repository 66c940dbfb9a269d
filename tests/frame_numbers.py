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


# ---- stamps that survive H.264, resizing and normalisation: the frame number in binary cells

STAMP_GRID = 4  # a STAMP_GRID x STAMP_GRID grid of cells: 14 bits (frames 0 .. 16383), then a light and a dark cell
_BITS = STAMP_GRID * STAMP_GRID - 2
_DARK, _LIGHT = 24, 232


def stamped_frames(indices, size: int = 128) -> np.ndarray:
    """Square frames (T, size, size, 3) whose cells spell each frame's number in binary.

    Cell ``k`` (row-major) is light when bit ``k`` of the number is set; the last two cells,
    always light and dark, tell a reader what light and dark look like. Square, so a
    centre crop keeps every cell; cells are large, so any resize down to ~16 pixels a side
    and a lossy encode leave each cell's centre on the right side of mid-grey.
    """
    indices = np.asarray(list(indices))
    if indices.min() < 0 or indices.max() >= 2**_BITS:
        raise ValueError(f"frame numbers must lie in [0, {2**_BITS})")
    bits = (indices[:, None] >> np.arange(_BITS)) & 1
    bits = np.concatenate([bits, np.ones_like(bits[:, :1]), np.zeros_like(bits[:, :1])], axis=1)
    cells = np.where(bits, _LIGHT, _DARK).astype(np.uint8).reshape(len(indices), STAMP_GRID, STAMP_GRID)
    cell = size // STAMP_GRID
    frames = np.repeat(np.repeat(cells, cell, axis=1), cell, axis=2)
    return np.repeat(frames[..., None], 3, axis=3)


def read_stamps(frames: np.ndarray, channels_first: bool = False) -> list[int]:
    """The numbers :func:`stamped_frames` wrote, read from frames of any size (T, H, W[, C])."""
    frames = np.asarray(frames, dtype=np.float64)
    if channels_first:
        frames = np.moveaxis(frames, 1, -1)
    if frames.ndim == 4:
        frames = frames.mean(axis=3)
    height, width = frames.shape[1:3]
    h, w = max(1, height // (4 * STAMP_GRID)), max(1, width // (4 * STAMP_GRID))

    def cell(frame: np.ndarray, k: int) -> float:
        row, column = divmod(k, STAMP_GRID)
        top = int((2 * row + 1) * height / (2 * STAMP_GRID))
        left = int((2 * column + 1) * width / (2 * STAMP_GRID))
        return float(frame[top - h // 2 : top + h // 2 + 1, left - w // 2 : left + w // 2 + 1].mean())

    numbers = []
    for frame in frames:
        middle = (cell(frame, _BITS) + cell(frame, _BITS + 1)) / 2
        numbers.append(sum(int(cell(frame, k) > middle) << k for k in range(_BITS)))
    return numbers
