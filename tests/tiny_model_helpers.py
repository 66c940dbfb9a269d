"""Helpers of the model and generation tests: frames made in memory, one torch thread.

Imported by tests/test_models.py and tests/test_generate.py (pytest puts tests/ on the
path, as for frame_numbers.py); a fixture imported into a test module applies there.
"""

from __future__ import annotations

import numpy as np
import pytest

from llava_star.media.video import Frames


def in_memory_frames(array: np.ndarray, fps: float = 8.0) -> Frames:
    """``array`` (uint8 [N, H, W, 3]) as if decoded from an N-frame file at ``fps``."""
    count = len(array)
    return Frames(
        array=array,
        timestamps=np.arange(count) / fps,
        indices=np.arange(count, dtype=np.int64),
        fps=fps,
        duration=count / fps,
        path="<memory>",
        total_num_frames=count,
        backend="frames",
    )


def noise_frames(seed: int, count: int = 4, size: int = 32) -> Frames:
    rng = np.random.default_rng(seed)
    return in_memory_frames(rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models on a shared CPU: extra intra-op threads only spin against other processes."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
