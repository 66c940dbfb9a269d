"""The grounding check's cost: its extra generation time as a ratio of the direct pass.

The synthetic dataset with its prior-only task (``llava-star synthetic --prior-only``) is
answered by a tiny Video-LLaVA model through the whole generate stage, direct answers only
(``rationalize=False``), once per ``--grounding-check`` mode. The model really generates
(up to ``--max-new-tokens`` tokens a call); the text it is scored on is a stand-in's that
reads the object's colour from the frames and always calls the background black, so the
direct pass keeps the colour and background answers and the check has real work: one
more generation per kept answer, on blank or shuffled frames.

Prints, per mode: the seconds of the direct generate calls and of the check's generate
calls, ``ratio check/direct``, the stage's wall time against the
run without the check, and the grounded fraction per task.

    python benchmarks/grounding.py
    python benchmarks/grounding.py --num-videos 64 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from llava_star.datasets.synthetic import COLOURS, SyntheticConfig, make_synthetic_dataset
from llava_star.generation import star
from llava_star.models.loading import load_model
from llava_star.models.tiny import build_tiny_model
from llava_star.stages.generate import GenerateConfig, ModelAnswerer, Reply, run


class TimedStandIn:
    """Real generation with a tiny model (the cost), a stand-in's text (the verdicts)."""

    def __init__(self, model: ModelAnswerer) -> None:
        self.model = model
        self.seconds: dict[str, list[float]] = {"direct": [], "check": []}
        self.checking = False  # set while the grounding check asks

    def replies(self, prompts, videos):
        started = time.perf_counter()
        self.model.replies(prompts, videos)
        self.seconds["check" if self.checking else "direct"].append(time.perf_counter() - started)
        return [Reply(self._text(prompt, video.array)) for prompt, video in zip(prompts, videos, strict=True)]

    @staticmethod
    def _text(prompt: str, frames: np.ndarray) -> str:
        if "background" in prompt:
            return "Most of every frame is dark, so the background is black."
        pixels = frames.reshape(-1, 3)
        bright = pixels[pixels.max(axis=1) > 100]
        if not len(bright):
            return "I cannot see any object in this video."
        mean = bright.mean(axis=0)
        colour = min(COLOURS, key=lambda name: float(np.sum((mean - np.array(COLOURS[name])) ** 2)))
        return f"The shape in the frames is {colour}. So the object is {colour}."


def one_run(root: Path, answerer: TimedStandIn, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    config = GenerateConfig(
        model="tiny-video-llava",
        samples=str(root / "samples.jsonl"),
        video_root=str(root),
        output_dir=str(root / f"out-{mode}-{time.monotonic_ns()}"),
        batch_size=args.batch_size,
        num_frames=args.num_frames,
        max_new_tokens=args.max_new_tokens,
        num_workers=1,
        device="cpu",
        rationalize=False,
        grounding_check=mode,
    )
    for seconds in answerer.seconds.values():
        seconds.clear()
    grounded_flags = star.grounded_flags

    def timed_check(*args: Any, **kwargs: Any) -> list[bool]:
        answerer.checking = True
        try:
            return grounded_flags(*args, **kwargs)
        finally:
            answerer.checking = False

    star.grounded_flags = timed_check
    try:
        started = time.perf_counter()
        summary = run(config, answerer=answerer)
        wall = time.perf_counter() - started
    finally:
        star.grounded_flags = grounded_flags
    direct, check = sum(answerer.seconds["direct"]), sum(answerer.seconds["check"])
    return {"summary": summary, "wall": wall, "direct": direct, "check": check}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-videos", type=int, default=32, help="synthetic videos (--prior-only)")
    parser.add_argument("--batch-size", type=int, default=8, help="samples a generate call")
    parser.add_argument("--num-frames", type=int, default=8, help="frames a video")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens the tiny model generates a call")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode; the median (by wall time) is printed")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="llava-star-grounding-") as folder:
        root = Path(folder)
        dataset = make_synthetic_dataset(
            root / "synth", num_videos=args.num_videos, seed=0, config=SyntheticConfig(prior_only=True)
        )
        model = ModelAnswerer(
            load_model(str(build_tiny_model("video_llava", root / "model")), device="cpu"),
            max_new_tokens=args.max_new_tokens,
        )
        answerer = TimedStandIn(model)
        one_run(dataset.root, answerer, "none", args)  # warm-up, discarded
        # the median of --repeats runs per mode, interleaved so background load hits all alike
        runs: dict[str, list[dict[str, Any]]] = {"none": [], "blank": [], "shuffle": []}
        for _ in range(args.repeats):
            for mode, done in runs.items():
                done.append(one_run(dataset.root, answerer, mode, args))
        results = {mode: sorted(done, key=lambda result: result["wall"])[len(done) // 2] for mode, done in runs.items()}
    baseline = results["none"]
    kept = baseline["summary"]["kept"]
    samples = baseline["summary"]["samples"]
    print(
        f"tiny video_llava on CPU ({args.threads} thread), {samples} samples, batch {args.batch_size}, "
        f"{args.num_frames} frames, <= {args.max_new_tokens} new tokens; {kept} kept ({kept / samples:.0%})"
    )
    print(f"no check: direct pass {baseline['direct']:.2f} s, stage {baseline['wall']:.2f} s")
    for mode in ("blank", "shuffle"):
        result = results[mode]
        summary = result["summary"]
        print(
            f"{mode}: direct {result['direct']:.2f} s, check {result['check']:.2f} s, "
            f"ratio check/direct: {result['check'] / result['direct']:.2f}x; "
            f"stage {result['wall']:.2f} s = {result['wall'] / baseline['wall']:.2f}x the stage without the check"
        )
        by_task = ", ".join(
            f"{task} {counts['grounded_fraction']:.0%}" for task, counts in summary["grounded_by_task"].items()
        )
        print(f"{mode}: grounded fraction {summary['grounded_fraction']:.0%} ({by_task})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
