"""The ranks of a torchrun job end with the launcher, kill -9 included (issue 27).

torchrun starts each rank in a session of its own, so on 30d1d32 killing torchrun (or its
process group) left the ranks running. Here the two ranks of ``torchrun -m llava_star
generate`` block reading their samples from a FIFO the test holds open (a rank in the
middle of its work, however long it takes); then torchrun's agent is killed with SIGKILL
and both ranks must be gone within seconds, while the FIFO's writer is still open.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from tiny_model_helpers import free_port

REPO = Path(__file__).resolve().parents[1]


def ranks_of(launcher: psutil.Process) -> list[psutil.Process]:
    return [child for child in launcher.children() if "llava_star" in " ".join(child.cmdline())]


def has_open(process: psutil.Process, path: Path) -> bool:
    """Whether ``process`` holds ``path`` open (psutil lists regular files only, not FIFOs)."""
    fd_dir = Path(f"/proc/{process.pid}/fd")
    try:
        return any(os.readlink(fd) == str(path) for fd in fd_dir.iterdir())
    except (FileNotFoundError, PermissionError):
        return False


def is_alive(process: psutil.Process) -> bool:
    """Running, as opposed to gone or a zombie (an exited orphan nobody has reaped yet)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_no_rank_survives_kill_9_of_torchrun(tmp_path):
    fifo = tmp_path / "samples.jsonl"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(free_port()), "-m", "llava_star", "generate", "--model", str(tmp_path)]
    command += ["--samples", str(fifo), "--video-root", str(tmp_path), "-o", str(tmp_path / "generations")]
    launcher = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    agent = psutil.Process(launcher.pid)
    writer = None
    ranks: list[psutil.Process] = []
    try:
        ranks = wait_for(lambda: len(ranks_of(agent)) == 2 and ranks_of(agent), 120, "torchrun to start two ranks")

        def writer_opens():  # succeeds once a rank has reached the FIFO (ENXIO until then)
            try:
                return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                return None

        writer = wait_for(writer_opens, 120, "a rank to open the FIFO")
        wait_for(lambda: all(has_open(rank, fifo) for rank in ranks), 60, "both ranks to read the FIFO")
        assert all(rank.is_running() for rank in ranks)
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        time.sleep(5)  # a rank still running now outlived the launcher
        assert [rank.pid for rank in ranks if is_alive(rank)] == []
    finally:
        for rank in ranks:
            if is_alive(rank):
                rank.kill()
        launcher.kill()
        launcher.wait()
        if writer is not None:
            os.close(writer)
