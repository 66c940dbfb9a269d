"""Generation throughput: batched vs one-at-a-time, HF vs vLLM, and the pipeline's own overhead.

1. The same tiny Video-LLaVA model on the same generated videos, through the whole
   stage (DataLoader decoding, prompts, generate, verify, rationalize, shard writes),
   at batch size 1 and 8. Greedy batched output equals one-at-a-time output (tested),
   so both runs do the same work. Target: batch 8 >= 3x the samples/s of batch 1.
2. HF ``generate`` vs vLLM (when vllm is installed: the vLLM test environment, or a GPU
   install) through the same stage on the same tiny model of a family both serve
   (``--backend-family``, default qwen2_vl) and the same videos, one answerer of each
   built once; each backend runs twice, the first run discarded (warm-up). Prints
   ``ratio vllm/hf: X.XXx``. Greedy answers of the two are the same tokens (tested in
   tests/vllm_backend), so both do the same work.
3. The stage with an instant stand-in model (a fixed answer) and an instant frame reader
   over 20,000 samples, otherwise a real run with the stage's default options (batch
   size, DataLoader workers): what the pipeline itself costs per sample (validation,
   sharding, resume bookkeeping, prompts, verify, JSONL appends), printed in total and
   without the verifier's share. Targets: >= 10,000 samples/s, and a peak resident
   memory that does not grow between 2,000 and 20,000 samples.

    python benchmarks/generate.py
    python benchmarks/generate.py --samples 64 --stand-in-samples 20000 --threads 2
    python benchmarks/generate.py --stand-in-only --stand-in-workers 0
    .venv-vllm/bin/python benchmarks/generate.py --backends-only     # HF vs vLLM on CPU

Prints ``ratio batch8/batch1: X.XXx``, ``ratio vllm/hf: X.XXx`` and ``stand-in, W
DataLoader workers: N samples at X samples/s`` lines.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from llava_star.media.encode import write_video
from llava_star.media.video import Frames
from llava_star.models.tiny import build_tiny_model
from llava_star.records import JsonlAppender, Sample
from llava_star.stages.generate import GenerateConfig, Reply, run
from llava_star.verify import verify

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
STAND_IN_ANSWER = "The square is blue."


def colour_clip(rgb: tuple[int, int, int], rng: np.random.Generator, frames: int = 16, size: int = 64) -> np.ndarray:
    clip = np.empty((frames, size, size, 3), dtype=np.int16)
    clip[:] = rgb
    return np.clip(clip + rng.integers(-12, 12, clip.shape), 0, 255).astype(np.uint8)


def sample_lines(num_samples: int, num_videos: int) -> Iterator[dict[str, Any]]:
    """Colour questions about ``num_videos`` clips, generated one at a time."""
    names = sorted(COLOURS)
    for index in range(num_samples):
        video_index = index % num_videos
        yield {
            "id": f"bench-{index:06d}",
            "video": f"videos/{video_index:03d}.mp4",
            "question": f"What colour is the square in video {video_index}?",
            "labels": [{"type": "class", "value": names[video_index % len(names)], "vocabulary": names}],
            "source": "benchmark",
            "task": "colour",
        }


def write_dataset(root: Path, num_samples: int, num_videos: int, *, encode: bool = True) -> Path:
    """``num_videos`` coloured clips and ``num_samples`` colour questions about them.

    The samples are streamed to the file, so the benchmark's own memory does not grow
    with their number (the peak memory it reports is the pipeline's).
    """
    names = sorted(COLOURS)
    if encode:
        rng = np.random.default_rng(0)
        for video_index in range(num_videos):
            colour = COLOURS[names[video_index % len(names)]]
            write_video(root / f"videos/{video_index:03d}.mp4", colour_clip(colour, rng), fps=8.0)
    root.mkdir(parents=True, exist_ok=True)
    with JsonlAppender(root / "samples.jsonl") as samples:
        samples.write_many(sample_lines(num_samples, num_videos))
    return root / "samples.jsonl"


def verify_ceiling(num_samples: int) -> float:
    """Samples/s of the verifier alone on the stand-in's work (1 check, +1 when rationalized)."""
    samples = [Sample.from_dict(line) for line in sample_lines(num_samples, 16)]
    started = time.perf_counter()
    for sample in samples:
        if not verify(STAND_IN_ANSWER, sample.labels).passed:
            verify(STAND_IN_ANSWER, sample.labels, rationalized=True)
    return num_samples / (time.perf_counter() - started)


def model_throughput(
    root: Path,
    model: Path,
    batch_size: int,
    *,
    num_frames: int,
    max_new_tokens: int,
    answerer: Any = None,
    name: str = "",
) -> float:
    config = GenerateConfig(
        model=str(model),
        samples=str(root / "samples.jsonl"),
        video_root=str(root),
        output_dir=str(root / f"out-{name}batch{batch_size}"),
        batch_size=batch_size,
        num_frames=num_frames,
        max_new_tokens=max_new_tokens,
        num_workers=1,
        device="cpu",
    )
    return run(config, answerer=answerer)["this_run"]["samples_per_second"]


def backend_throughputs(args: argparse.Namespace) -> dict[str, float]:
    """Samples/s of the stage with an HF and a vLLM answerer of the same tiny model, same data."""
    from llava_star.generation.answerer import ModelAnswerer
    from llava_star.generation.vllm_answerer import VllmAnswerer
    from llava_star.models.loading import load_model, model_family

    speed = {}
    with tempfile.TemporaryDirectory(prefix="llava-star-bench-") as folder:
        root = Path(folder)
        model = build_tiny_model(args.backend_family, root / "model")
        family = model_family(str(model))
        data = root / "data"
        write_dataset(data, args.samples, args.videos)
        answerers = {
            "hf": ModelAnswerer(load_model(model, device="cpu"), max_new_tokens=args.max_new_tokens),
            "vllm": VllmAnswerer(str(model), family=family, max_new_tokens=args.max_new_tokens),
        }
        for backend in ("hf", "vllm", "hf", "vllm"):  # the first run of each warms up and is discarded
            speed[backend] = model_throughput(
                data,
                model,
                args.backend_batch_size,
                num_frames=args.num_frames,
                max_new_tokens=args.max_new_tokens,
                answerer=answerers[backend],
                name=backend,
            )
            for stale in data.glob("out-*"):
                for path in stale.iterdir():
                    path.unlink()
    return speed


class TimedVerifier:
    """``llava_star.verify.verify`` with a stopwatch, to split the verifier's share off the total."""

    def __init__(self) -> None:
        import llava_star.verify

        self.module = llava_star.verify
        self.original = llava_star.verify.verify
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.original(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started

    def __enter__(self) -> Self:
        self.module.verify = self  # generate.py looks the verifier up at call time
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.module.verify = self.original


class InstantAnswerer:
    """A stand-in model: the same answer for every prompt, at no cost."""

    def replies(self, prompts, videos):
        return [Reply(STAND_IN_ANSWER)] * len(prompts)


def stand_in_run(root: Path, num_samples: int, *, num_workers: int) -> dict[str, float]:
    """The pipeline alone: samples/s, the verifier's seconds in it, peak resident memory (KiB).

    Everything but the model and the video decoding is a real run with the default
    options (batch size, DataLoader workers): the same reads, validation, prompts,
    verification, rationalization and shard writes.
    """
    samples = write_dataset(root / f"n{num_samples}-w{num_workers}", num_samples, 16, encode=False)
    frames = Frames(
        array=np.zeros((4, 32, 32, 3), dtype=np.uint8),
        timestamps=np.arange(4) / 8.0,
        indices=np.arange(4, dtype=np.int64),
        fps=8.0,
        duration=0.5,
        path="<constant>",
        total_num_frames=4,
        backend="frames",
    )
    config = GenerateConfig(
        model="stand-in",
        samples=str(samples),
        video_root=str(samples.parent),
        output_dir=str(samples.parent / "out"),
        num_workers=num_workers,
    )
    with TimedVerifier() as verifier:
        summary = run(config, answerer=InstantAnswerer(), read_video=lambda sample: frames)
    this_run = summary["this_run"]
    assert this_run["finished"] == num_samples, this_run
    return {
        "samples_per_second": this_run["samples_per_second"],
        "seconds": this_run["seconds"],
        "verify_seconds": verifier.seconds,
        "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def print_stand_in(num_samples: int, num_workers: int) -> None:
    with tempfile.TemporaryDirectory(prefix="llava-star-bench-") as folder:
        root = Path(folder)
        small = stand_in_run(root, 2_000, num_workers=num_workers)
        big = stand_in_run(root, num_samples, num_workers=num_workers)
    rest = big["seconds"] - big["verify_seconds"]
    print(
        f"stand-in, {num_workers} DataLoader workers: {num_samples:,} samples at {big['samples_per_second']:,.0f} "
        f"samples/s (target >= 10,000); 2,000 samples at {small['samples_per_second']:,.0f} samples/s"
    )
    print(
        f"  of {big['seconds']:.2f} s: verifier {big['verify_seconds']:.2f} s, the rest {rest:.2f} s "
        f"= {num_samples / rest:,.0f} samples/s without the verifier"
    )
    print(
        f"  peak resident memory: {small['peak_kib'] / 1024:.0f} MiB after 2,000 samples, "
        f"{big['peak_kib'] / 1024:.0f} MiB after {num_samples:,} (growth {(big['peak_kib'] - small['peak_kib']) / 1024:.1f} MiB)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=48, help="samples for the tiny-model runs")
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--stand-in-samples", type=int, default=20_000)
    parser.add_argument(
        "--stand-in-workers",
        type=int,
        default=GenerateConfig.num_workers,
        help="DataLoader workers of the stand-in run (default: the stage's default; 0 measures one process)",
    )
    parser.add_argument("--stand-in-only", action="store_true", help="skip the tiny-model runs")
    parser.add_argument("--backends-only", action="store_true", help="only HF vs vLLM")
    parser.add_argument("--backend-family", default="qwen2_vl", help="tiny model family of the HF vs vLLM runs")
    parser.add_argument("--backend-batch-size", type=int, default=16, help="samples per generate call, both backends")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 avoids oversubscription on a shared machine)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    if args.backends_only or not args.stand_in_only:
        from llava_star.optional import is_available

        if is_available("vllm"):
            speed = backend_throughputs(args)
            print(
                f"tiny {args.backend_family}, {args.samples} samples, {args.num_frames} frames, "
                f"<= {args.max_new_tokens} new tokens, batch {args.backend_batch_size}"
            )
            print(f"hf: {speed['hf']:.2f} samples/s")
            print(f"vllm: {speed['vllm']:.2f} samples/s")
            print(f"ratio vllm/hf: {speed['vllm'] / speed['hf']:.2f}x")
        else:
            print("vllm is not installed: no HF vs vLLM comparison (make vllm-env; .venv-vllm/bin/python ...)")
        if args.backends_only:
            return 0

    if not args.stand_in_only:
        with tempfile.TemporaryDirectory(prefix="llava-star-bench-") as folder:
            root = Path(folder)
            model = build_tiny_model("video_llava", root / "model")
            data = root / "data"
            write_dataset(data, args.samples, args.videos)
            speed = {}
            for batch_size in (8, 1, 8):  # the first run warms up caches and is discarded
                speed[batch_size] = model_throughput(
                    data, model, batch_size, num_frames=args.num_frames, max_new_tokens=args.max_new_tokens
                )
                for stale in data.glob("out-batch*"):
                    for path in stale.iterdir():
                        path.unlink()
            print(
                f"tiny video_llava, {args.samples} samples, {args.num_frames} frames, <= {args.max_new_tokens} new tokens"
            )
            print(f"batch 1: {speed[1]:.2f} samples/s")
            print(f"batch 8: {speed[8]:.2f} samples/s")
            print(f"ratio batch8/batch1: {speed[8] / speed[1]:.2f}x (target >= 3x)")

    print_stand_in(args.stand_in_samples, args.stand_in_workers)
    print(f"verifier alone on the same answers: {verify_ceiling(args.stand_in_samples):,.0f} samples/s (ceiling)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
