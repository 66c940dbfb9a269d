"""benchmarks/generate_ceiling.py's time breakdown: every profiled second counted in one part once."""

from __future__ import annotations

import cProfile
import importlib.util
import pstats
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "generate_ceiling.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("generate_ceiling", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class Clock:
    """A profiler clock that only ``work`` advances: each function's time is known exactly."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


CLOCK = Clock()


def work(seconds: float) -> None:
    CLOCK.now += seconds


def decode() -> None:
    work(3)


def verify() -> None:
    work(0.5)


def processor() -> None:
    work(5)
    verify()  # called by another part's function: counted with its caller


def write_finished() -> None:
    work(2)


def close() -> None:
    write_finished()  # nested in its own part: counted once
    work(1)


def program() -> None:
    decode()
    processor()
    verify()
    write_finished()
    close()
    work(4)


def test_the_parts_count_nested_calls_once_and_other_is_the_rest():
    benchmark = _benchmark()
    profile = cProfile.Profile(CLOCK)
    profile.runcall(program)
    stats = pstats.Stats(profile)
    total = benchmark.cumulative(stats, program)
    parts = {"decode": [decode], "processor": [processor], "verify": [verify], "write": [write_finished, close]}
    assert total == 18.0
    assert benchmark.breakdown(stats, parts, total) == {
        "decode": 3.0,
        "processor": 5.5,
        "verify": 0.5,
        "write": 5.0,
        "other": 4.0,
    }


@pytest.mark.slow
def test_a_tiny_ceiling_run_finds_every_part_in_the_stage(tmp_path):
    """Two samples through the real stage (Qwen2.5-VL's processor files): every part's function
    is where the stage spends time (a renamed function would read 0), and one answer of two is
    rationalized (the stand-in names the first class only)."""
    benchmark = _benchmark()
    videos = tmp_path / "videos"
    videos.mkdir()
    benchmark.write_clip(videos / "clip.mp4", width=64, height=48, seconds=1.0, fps=8.0, seed=0)
    benchmark.write_samples(tmp_path / "samples.jsonl", ["clip.mp4"], 2)
    result = benchmark.measure_family("qwen2_5_vl", tmp_path, tmp_path / "samples.jsonl", videos, batch_size=2)
    assert (result.samples, result.rationalized) == (2, 1)
    # 2 videos read, 2 processor calls (the batch of 2, then the 1 failure with the hint), 3
    # answers verified, 2 lines written: the functions the parts are named by are the stage's
    assert result.calls == {"decode": 2, "processor": 2, "verify": 3, "write": 2}
    assert all(result.parts[name] > 0 for name in benchmark.PARTS), result.parts
    assert 0 < result.processor_call <= result.parts["processor"]
    assert sum(result.parts.values()) == pytest.approx(result.profiled_total)
