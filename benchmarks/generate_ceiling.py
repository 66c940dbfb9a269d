"""The generate pipeline's CPU ceiling: samples per second per core with an instant model (issue 32).

The real ``generate`` stage (``stages.generate.run``) on realistic media: 10-second
1280x720 H.264 clips with a 250-frame GOP (x264's default keyframe interval), decoded by
the project's frame reader, turned into model inputs by the real processor of a family (a
checkpoint directory with the hub's processor files and chat template, written offline by
``tests/real_geometry.py``, loaded by the stage's own ``build_answerer`` with the video
token budget), verified, rationalized when the answer fails, and appended to the shard.
Only the model's ``generate`` is replaced: :class:`InstantModel` returns a fixed answer's
tokens at once. The answer names one class and the samples alternate between it and
another, so half the direct answers fail and are asked again with the hint (1.5 processor
calls a sample), as in a cycle where about half fail.

Everything runs in this process (no DataLoader workers, one torch thread, one FFmpeg
thread), so CPU seconds are one core's. Per family it prints

- samples per second per core of the whole run (its user+system CPU time, unprofiled);
- decode alone (the frame reader over the same samples, same process) and the ratio of the
  pipeline's CPU time a sample to it;
- where the time goes: a cProfile of a second run, timed by the process CPU clock, split
  into decode (``read_frames``), processor (``build_inputs``: chat template + the HF
  processor's call, which is also shown alone), verify, write (``ShardWriter``) and other.

    python benchmarks/generate_ceiling.py                          # video_llava and qwen2_5_vl, 16 samples each
    python benchmarks/generate_ceiling.py --family qwen3_vl --samples 64
    python benchmarks/generate_ceiling.py --work-dir /tmp/ceiling  # keep (and reuse) the clips
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import logging
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(1, str(ROOT / "tests"))  # real_geometry: a family's hub processor files, written offline

from llava_star.generation.sample_stream import frame_reader
from llava_star.generation.shards import ShardWriter
from llava_star.io import JsonlAppender, dumps_line
from llava_star.media.encode import VideoEncoder
from llava_star.media.video import read_frames
from llava_star.models.inputs import build_inputs
from llava_star.records import Label, Sample, read_samples
from llava_star.stages.generate import GenerateConfig, run
from llava_star.verify import verify

FAMILIES = ("video_llava", "qwen2_5_vl", "qwen3_vl")
# x264's defaults (crf 23, keyint 250) at a fast preset that still has B-frames and CABAC;
# no scene-cut keyframes: exactly one keyframe every 250 frames
X264_GOP250 = {"crf": "23", "preset": "veryfast", "g": "250", "keyint_min": "250", "sc_threshold": "0"}
CLASSES = ("abseiling", "archery")
QUESTION = "What activity is shown in this clip? Think step by step, then answer."
ANSWER = (
    "The person wears a harness and lowers themselves down a rock face on a rope, one step at a "
    "time, checking the rope with each hand. So the activity shown is abseiling."
)
PARTS = ("decode", "processor", "verify", "write")


def write_clip(path: Path, *, width: int, height: int, seconds: float, fps: float, seed: int) -> Path:
    """A panned texture with noise: motion for P/B frames to predict, detail for I frames; at
    720p and crf 23 about 1.6 Mbit/s, as YouTube-sourced 720p clips (~1-2.5 Mbit/s)."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0 : 2 * height, 0 : 2 * width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    plane = np.stack(
        [120 + 100 * np.sin(columns / (9 + 4 * c) + phase[c]) * np.cos(rows / (13 + 3 * c)) for c in range(3)], axis=-1
    ).astype(np.uint8)
    noise = rng.integers(0, 32, size=(8, height, width, 3), dtype=np.uint8)  # at most 220 + 31: no overflow
    with VideoEncoder(path, fps=fps, width=width, height=height, options=X264_GOP250) as encoder:
        for t in range(round(seconds * fps)):
            top, left = (2 * t) % height, (3 * t) % width
            encoder.write(plane[top : top + height, left : left + width] + noise[t % len(noise)])
    return path


def write_samples(path: Path, clips: Sequence[str], count: int) -> None:
    """``count`` action questions, round-robin over ``clips``; labels alternate between two classes."""
    samples = [
        Sample(
            id=f"ceiling{number:06d}",
            video=clips[number % len(clips)],
            question=QUESTION,
            labels=(Label("class", CLASSES[number % 2], name="action", vocabulary="kinetics700"),),
            source="kinetics700",
            task="action_recognition",
        )
        for number in range(count)
    ]
    with JsonlAppender(path) as out:
        out.write_lines([dumps_line(sample) for sample in samples])


class InstantModel:
    """Stands in for the LVLM inside the stage's ``ModelAnswerer``: ``generate`` appends a
    fixed answer's tokens and a stop token to every prompt row, at once."""

    def __init__(self, answer_ids: Sequence[int], stop_id: int) -> None:
        import torch

        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.generation_config = SimpleNamespace(eos_token_id=stop_id)
        self._new = torch.tensor([*answer_ids, stop_id])

    def generate(self, input_ids: Any, **_: Any) -> Any:
        import torch

        return torch.cat([input_ids, self._new.expand(input_ids.shape[0], -1)], dim=1)


def instant_answerer(checkpoint: Path, family: str, config: GenerateConfig) -> Any:
    """The stage's HF answerer for ``checkpoint`` (its processor as the stage loads it), the model swapped out."""
    from llava_star.generation.backends import build_answerer

    answerer = build_answerer(str(checkpoint), config, backend="hf", family=family, device="cpu")
    loaded = answerer.loaded
    stop = loaded.model.generation_config.eos_token_id
    stop = stop[0] if isinstance(stop, list) else stop
    answer_ids = loaded.processor.tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    answerer.loaded = dataclasses.replace(loaded, model=InstantModel(answer_ids, stop))
    return answerer


def code_key(function: Callable[..., Any]) -> tuple[str, int, str]:
    """How pstats names a function: (file, first line, name)."""
    code = getattr(function, "__func__", function).__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def breakdown(stats: pstats.Stats, parts: Mapping[str, Sequence[Callable[..., Any]]], total: float) -> dict[str, float]:
    """Seconds of each part (its functions' cumulative time, less what one of them spent called
    directly by a function of any part: ``close`` calling ``write_finished`` counts once), and
    ``other``: ``total`` less the parts."""
    raw = stats.stats  # type: ignore[attr-defined]  # key -> (primitive calls, calls, own, cumulative, callers)
    keys = {name: [code_key(function) for function in functions] for name, functions in parts.items()}
    tracked = {key for group in keys.values() for key in group}
    seconds = {}
    for name, group in keys.items():
        seconds[name] = 0.0
        for key in group:
            if key in raw:
                callers = raw[key][4]
                nested = sum(via[3] for caller, via in callers.items() if caller in tracked and caller != key)
                seconds[name] += raw[key][3] - nested
    seconds["other"] = total - sum(seconds.values())
    return seconds


def cumulative(stats: pstats.Stats, function: Callable[..., Any]) -> float:
    entry = stats.stats.get(code_key(function))  # type: ignore[attr-defined]
    return entry[3] if entry else 0.0


def calls(stats: pstats.Stats, function: Callable[..., Any]) -> int:
    entry = stats.stats.get(code_key(function))  # type: ignore[attr-defined]
    return entry[1] if entry else 0


@dataclasses.dataclass(frozen=True)
class FamilyResult:
    """One family's figures: CPU seconds unprofiled, and the profiled run's parts."""

    family: str
    samples: int
    rationalized: int
    cpu_seconds: float
    wall_seconds: float
    decode_alone_cpu_seconds: float
    parts: dict[str, float]  # profiled CPU seconds per part, "other" included
    calls: dict[str, int]  # profiled calls of each part's first function (read_frames, build_inputs, ...)
    processor_call: float  # profiled CPU seconds in the HF processor's __call__
    chat_template: float
    profiled_total: float  # the profiled run's CPU seconds (its parts sum to it)

    @property
    def per_core(self) -> float:
        return self.samples / self.cpu_seconds

    def share(self, seconds: float) -> float:
        return seconds / self.profiled_total


def measure_family(family: str, work: Path, samples_path: Path, video_root: Path, batch_size: int) -> FamilyResult:
    """Decode alone, the stage unprofiled, and the stage profiled, for one family, in this process."""
    from real_geometry import build_real_geometry_model

    checkpoint = build_real_geometry_model(family, work / family / "checkpoint")
    config = GenerateConfig(
        model=str(checkpoint),
        samples=str(samples_path),
        video_root=str(video_root),
        output_dir="",
        batch_size=batch_size,
        num_workers=0,
        device="cpu",
        dtype="float32",
    )
    answerer = instant_answerer(checkpoint, family, config)
    samples = list(read_samples(samples_path))

    read = frame_reader(str(video_root), config.num_frames)
    started = time.process_time()
    for sample in samples:
        read(sample)
    decode_alone = time.process_time() - started
    answerer.replies([QUESTION], [read(samples[0])])  # warm-up: lazy imports, the chat template compiled

    started, wall = time.process_time(), time.perf_counter()
    summary = run(dataclasses.replace(config, output_dir=str(work / family / "run")), answerer=answerer)
    cpu, wall = time.process_time() - started, time.perf_counter() - wall
    counts = summary["this_run"]
    if counts["finished"] != len(samples):
        raise SystemExit(f"{family}: {counts['finished']} of {len(samples)} samples finished: {summary}")

    profile = cProfile.Profile(time.process_time)
    profile.runcall(run, dataclasses.replace(config, output_dir=str(work / family / "profiled")), answerer=answerer)
    stats = pstats.Stats(profile)
    total = cumulative(stats, run)
    processor = type(answerer.loaded.processor)
    parts = {
        "decode": [read_frames],
        "processor": [build_inputs],
        "verify": [verify],
        "write": [ShardWriter.finished, ShardWriter.write_finished, ShardWriter.failed, ShardWriter.close],
    }
    return FamilyResult(
        family=family,
        samples=len(samples),
        rationalized=counts["rationalized"],
        cpu_seconds=cpu,
        wall_seconds=wall,
        decode_alone_cpu_seconds=decode_alone,
        parts=breakdown(stats, parts, total),
        calls={name: calls(stats, functions[0]) for name, functions in parts.items()},
        processor_call=cumulative(stats, processor.__call__),
        chat_template=cumulative(stats, processor.apply_chat_template),
        profiled_total=total,
    )


def report(result: FamilyResult) -> str:
    """The lines printed for one family."""
    per_sample, decode = result.cpu_seconds / result.samples, result.decode_alone_cpu_seconds / result.samples
    shares = ", ".join(f"{name} {result.share(seconds):.1%}" for name, seconds in result.parts.items())
    head = (
        f"{result.family}: {result.samples} samples ({result.rationalized} rationalized), "
        f"{result.cpu_seconds:.1f} CPU s ({result.wall_seconds:.1f} s wall): "
        f"{result.per_core:.2f} samples/s per core, {per_sample:.3f} CPU s a sample"
    )
    processor = (
        f"  HF processor: {result.share(result.processor_call):.1%} in its __call__ "
        f"(+ {result.share(result.chat_template):.1%} rendering the chat template)"
    )
    return "\n".join(
        [
            head,
            f"  decode alone: {decode:.3f} CPU s a sample; ratio pipeline/decode: {per_sample / decode:.2f}x",
            f"  where the time goes (cProfile, {result.profiled_total:.1f} CPU s): {shares}",
            processor,
        ]
    )


def table(results: Sequence[FamilyResult]) -> str:
    head = ["family", "samples/s per core", "CPU s a sample", "decode alone CPU s", "pipeline/decode"]
    head += [f"{name} %" for name in (*PARTS, "other")] + ["HF processor call %"]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for result in results:
        per_sample, decode = result.cpu_seconds / result.samples, result.decode_alone_cpu_seconds / result.samples
        cells = [result.family, f"{result.per_core:.2f}", f"{per_sample:.3f}", f"{decode:.3f}"]
        cells.append(f"{per_sample / decode:.2f}")
        cells += [f"{100 * result.share(result.parts[name]):.2f}" for name in (*PARTS, "other")]
        cells.append(f"{100 * result.share(result.processor_call):.1f}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def make_clips(folder: Path, count: int, args: argparse.Namespace) -> list[str]:
    """``count`` clips under ``folder`` (kept from an earlier run with the same settings), as relative paths."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        name = f"clip{index:02d}_{args.width}x{args.height}_{args.seconds:g}s_gop250.mp4"
        if not (folder / name).exists():
            partial = folder / f"partial-{name}"
            write_clip(partial, width=args.width, height=args.height, seconds=args.seconds, fps=args.fps, seed=index)
            partial.rename(folder / name)
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", nargs="+", choices=FAMILIES, default=["video_llava", "qwen2_5_vl"], help="families")
    parser.add_argument("--samples", type=int, default=16, help="samples per family (default 16)")
    parser.add_argument("--clips", type=int, default=4, help="distinct clips the samples cycle over (default 4)")
    parser.add_argument("--batch-size", type=int, default=8, help="samples a generate call (the stage's default 8)")
    parser.add_argument("--width", type=int, default=1280, help="clip width (default 1280)")
    parser.add_argument("--height", type=int, default=720, help="clip height (default 720)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    parser.add_argument("--fps", type=float, default=30.0, help="clip frame rate (default 30)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one core)")
    parser.add_argument("--work-dir", type=Path, help="keep the clips here and reuse them (default: a temp dir)")
    args = parser.parse_args(argv)
    if min(args.samples, args.clips, args.batch_size) < 1:
        parser.error("--samples, --clips and --batch-size must be at least 1")
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    temporary = None if args.work_dir else tempfile.TemporaryDirectory(prefix="llava-star-ceiling-")
    work = args.work_dir or Path(temporary.name)
    try:
        started = time.perf_counter()
        clips = make_clips(work / "videos", args.clips, args)
        megabits = sum((work / "videos" / clip).stat().st_size for clip in clips) * 8 / 1e6
        print(
            f"{len(clips)} clips of {args.width}x{args.height}, {args.seconds:g} s, H.264 GOP 250, "
            f"{megabits / len(clips) / args.seconds:.2f} Mbit/s (ready in {time.perf_counter() - started:.0f} s); "
            f"{args.samples} samples, batch {args.batch_size}, {args.threads} torch thread(s)"
        )
        samples_path = work / f"samples{args.samples}.jsonl"
        samples_path.unlink(missing_ok=True)
        write_samples(samples_path, clips, args.samples)
        results = []
        for family in args.family:
            for output in ("run", "profiled"):
                _remove_tree(work / family / output)
            results.append(measure_family(family, work, samples_path, work / "videos", args.batch_size))
            print(report(results[-1]), flush=True)
    finally:
        if temporary is not None:
            temporary.cleanup()
    print(table(results))
    return 0


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
