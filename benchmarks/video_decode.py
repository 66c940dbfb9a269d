"""How much llava_star.media.video.read_frames costs over raw decord, for 8 sampled frames.

Both sides decode the same 8 frames of the same files: the baseline is what a script
would write by hand (``decord.VideoReader(path)``, ``get_batch(indices).asnumpy()``),
``read_frames`` adds the path checks, index sampling and the ``Frames`` record. Runs
alternate between the decoders, rotating who goes first, so machine load hits all
alike; the median of ``--repeats`` runs per file is summed over files. PyAV (the
fallback backend) is timed for reference.

    python benchmarks/video_decode.py                      # generated 224x224 10 s clips
    python benchmarks/video_decode.py --videos DIR         # your own *.mp4 / *.webm / ...

Prints one line per decoder and ``ratio read_frames/decord: X.XXx`` (target <= 1.2).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from llava_star.media.encode import write_video
from llava_star.media.video import read_frames

NUM_FRAMES = 8
VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv", ".mov")


def make_clips(folder: Path, count: int, size: int, seconds: float, fps: float) -> list[Path]:
    """Clips with real motion and texture (a drifting pattern plus noise), so decoding is not trivial."""
    rng = np.random.default_rng(0)
    num_frames = int(seconds * fps)
    rows, columns = np.mgrid[0:size, 0:size]
    paths = []
    for index in range(count):
        phase = rng.uniform(0, 2 * np.pi, size=3)
        frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
        for t in range(num_frames):
            for channel in range(3):
                wave = np.sin((columns + 3 * t) / 9.0 + phase[channel]) * np.cos((rows - 2 * t) / 13.0)
                frames[t, :, :, channel] = (127 + 100 * wave).astype(np.uint8)
            frames[t] = np.clip(frames[t] + rng.integers(0, 24, size=frames[t].shape), 0, 255)
        paths.append(write_video(folder / f"clip{index:02d}.mp4", frames, fps=fps, options={"preset": "veryfast"}))
    return paths


def raw_decord(path: Path) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path))
    total = len(reader)
    indices = ((np.arange(NUM_FRAMES) + 0.5) * total / NUM_FRAMES).astype(np.int64)
    return reader.get_batch(indices.tolist()).asnumpy()


def timed(function: Callable[[Path], object], path: Path) -> float:
    start = time.perf_counter()
    function(path)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, help="a folder of videos to time (default: generate clips)")
    parser.add_argument("--count", type=int, default=8, help="clips to generate (default 8)")
    parser.add_argument("--size", type=int, default=224, help="side of generated clips in pixels (default 224)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of generated clips (default 10)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of generated clips (default 30)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per file and decoder (default 5)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="video_decode_") as scratch:
        if args.videos:
            paths = sorted(p for p in args.videos.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        else:
            paths = make_clips(Path(scratch), args.count, args.size, args.seconds, args.fps)
        if not paths:
            parser.error(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in {args.videos}")
        decoders: dict[str, Callable[[Path], object]] = {
            "raw decord get_batch": raw_decord,
            "read_frames (decord)": lambda path: read_frames(path, NUM_FRAMES, backend="decord"),
            "read_frames (pyav)": lambda path: read_frames(path, NUM_FRAMES, backend="pyav"),
        }
        for path in paths:  # same frames on both sides, and a warm file cache
            assert np.array_equal(raw_decord(path), read_frames(path, NUM_FRAMES, backend="decord").array)
        medians = {name: 0.0 for name in decoders}
        for path in paths:
            runs: dict[str, list[float]] = {name: [] for name in decoders}
            names = list(decoders)
            for repeat in range(args.repeats):  # rotate who goes first: no decoder always meets a cold cache
                for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                    runs[name].append(timed(decoders[name], path))
            for name in decoders:
                medians[name] += statistics.median(runs[name])

    print(f"{len(paths)} videos, {NUM_FRAMES} frames each, median of {args.repeats} runs per file")
    for name, seconds in medians.items():
        print(f"  {name:<22} {1000 * seconds / len(paths):8.2f} ms per video")
    ratio = medians["read_frames (decord)"] / medians["raw decord get_batch"]
    print(f"ratio read_frames/decord: {ratio:.2f}x (target <= 1.2)")
    print(f"ratio read_frames(pyav)/decord: {medians['read_frames (pyav)'] / medians['raw decord get_batch']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
