"""Helpers of the model, generation and training tests: frames made in memory, one torch
thread, and training commands run as launchers run them (torchrun, one DeepSpeed process).

Imported by tests/test_models.py, tests/test_generate.py and the training tests (pytest
puts tests/ on the path, as for frame_numbers.py); a fixture imported into a test module
applies there.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from llava_star.media.video import Frames

REPO = Path(__file__).resolve().parents[1]


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def single_process_env() -> dict[str, str]:
    """What DeepSpeed needs to run in one process without mpi4py (torchrun would set these)."""
    return {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }


def run_command(command: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``command`` run offline with this checkout importable; its stderr's tail is the failure message."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO), **(extra_env or {}))
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return result
