"""Time and peak memory of each stage as the dataset grows (issue 32: millions of clips).

Writes, for each size N, synthetic samples and a finished generation run of N records in
the project's own formats (``Sample``/``Generation`` lines through ``JsonlAppender``, the
writer ``generate`` uses) and a Kinetics-style CSV of N rows with an empty placeholder
clip for 90% of them, then runs each stage in its own process and reads the child's wall
time and peak resident memory (``os.wait4``'s ``ru_maxrss``):

- ``generate`` resuming the finished run (the model replaced by a stand-in that is never
  asked: every sample is done, so only the resume scan and the summary are left);
- ``export`` (llava_star format) and ``export --format video-llava`` (whole videos, no clip cutting);
- ``report`` on the generation directory (no video root: the gallery shows no frames);
- ``prepare kinetics700`` on the CSV.

    python benchmarks/scale.py                          # 2,000 and 20,000: a quick check
    python benchmarks/scale.py --sizes 100000 1000000   # the issue's table (1M: 1.2 GB of inputs + the outputs)
    python benchmarks/scale.py --sizes 100000 1000000 --work-dir /tmp/scale --code /tmp/old-checkout

The data of a size is written once per ``--work-dir`` and reused (``--code`` runs another
checkout's stages on the same files, for a before/after table). Prints one Markdown table:
time and peak RSS per size, and the ratios of the largest size to the smallest (the
issue's goal at 100k -> 1M: time ratio <= 11, RSS ratio <= 1.5).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from llava_star.io import JsonlAppender, dumps_line
from llava_star.records import Generation, Label, Sample
from llava_star.runs import GenerationDir

CHUNK = 4096  # records per write
VIDEOS = 100  # distinct placeholder video files the samples point at
CLASSES = ("abseiling", "air drumming", "answering questions", "applauding", "applying cream", "archery")
ANSWER = (
    "The person in the clip stands at the edge of a cliff with a rope through a harness and lowers "
    "themselves down the rock face step by step, so the action is {value}. Answer: {value}"
)
GENERATE_SCRIPT = """
import sys
from llava_star.generation.answerer import Reply
from llava_star.stages.generate import GenerateConfig, run

class NeverAsked:
    def replies(self, prompts, videos):
        raise AssertionError("every sample is finished: the model is never asked")

def no_video(sample):
    raise AssertionError("every sample is finished: no video is read")

samples, video_root, output_dir = sys.argv[1:4]
config = GenerateConfig(model="stand-in", samples=samples, video_root=video_root, output_dir=output_dir, num_workers=0)
summary = run(config, answerer=NeverAsked(), read_video=no_video)
assert summary["this_run"]["finished"] == 0, summary
"""


def _sample(number: int) -> Sample:
    value = CLASSES[number % len(CLASSES)]
    return Sample(
        id=f"clip{number:09d}_000010_000020",
        video=f"videos/v{number % VIDEOS:03d}.mp4",
        question="What activity is shown in this clip? Think step by step, then answer.",
        labels=(Label("class", value, name="action", vocabulary="kinetics700"),),
        source=("kinetics700", "ssv2")[number % 7 == 0],
        task="action_recognition",
        meta={"youtube_id": f"clip{number:09d}", "time_start": 10, "time_end": 20},
    )


def _generation(sample: Sample, rng: random.Random) -> Generation:
    value = sample.labels[0].value
    passed, rationalized = rng.random() < 0.6, rng.random() < 0.3
    answer = ANSWER.format(value=value if passed else CLASSES[(CLASSES.index(value) + 1) % len(CLASSES)])
    check = {"label": "action", "type": "class", "passed": passed, "reason": "" if passed else "wrong class"}
    return Generation(
        sample=sample,
        answer=answer,
        rationalized=rationalized,
        passed=passed,
        checks=(check,),
        cycle=1,
        model="stand-in",
        grounded=(None, True, False)[rng.randrange(3)] if passed else None,
    )


def write_run(folder: Path, size: int, seed: int = 0) -> None:
    """``samples.jsonl`` and a finished generation directory ``generations/`` of ``size`` records."""
    rng = random.Random(seed)
    videos = folder / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for number in range(VIDEOS):
        (videos / f"v{number:03d}.mp4").touch()
    generations = GenerationDir(folder / "generations")
    with (
        JsonlAppender(folder / "samples.jsonl", fsync_every=1 << 30) as samples,
        JsonlAppender(generations.generations_shard(0, 1), fsync_every=1 << 30) as shard,
    ):
        for start in range(0, size, CHUNK):
            chunk = [_sample(number) for number in range(start, min(size, start + CHUNK))]
            samples.write_lines([dumps_line(sample) for sample in chunk], lines_per_write=CHUNK)
            shard.write_lines([dumps_line(_generation(sample, rng)) for sample in chunk], lines_per_write=CHUNK)
    generations.failures_shard(0, 1).touch()


def write_kinetics(folder: Path, size: int, seed: int = 0) -> None:
    """A Kinetics-700-style ``validate.csv`` of ``size`` rows and a placeholder clip for 9 in 10."""
    from llava_star.datasets.vocabularies import load_vocabulary

    rng = random.Random(seed)
    classes = load_vocabulary("kinetics700")
    video_root = folder / "k700_videos"
    for label in classes:
        (video_root / label.replace(" ", "_")).mkdir(parents=True, exist_ok=True)
    with (folder / "validate.csv").open("w", encoding="utf-8") as handle:
        handle.write("label,youtube_id,time_start,time_end,split\n")
        for number in range(size):
            label, youtube_id, start = rng.choice(classes), f"{number:011d}", rng.randint(0, 300)
            handle.write(f'"{label}",{youtube_id},{start},{start + 10},validate\n')
            if number % 10:  # every tenth clip is missing, as downloads always miss some
                clip = video_root / label.replace(" ", "_") / f"{youtube_id}_{start:06d}_{start + 10:06d}.mp4"
                os.close(os.open(clip, os.O_CREAT | os.O_WRONLY, 0o644))


def data_for(work_dir: Path, size: int) -> Path:
    """The folder of ``size``'s inputs, written unless an earlier run finished writing it."""
    folder = work_dir / f"n{size}"
    if not (folder / "written").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        started = time.perf_counter()
        write_run(folder, size)
        write_kinetics(folder, size)
        (folder / "written").touch()
        print(f"wrote the inputs of N={size:,} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return folder


def stage_commands(folder: Path) -> dict[str, list[str]]:
    """Each stage's command line on the inputs in ``folder`` (outputs under ``folder/out``)."""
    out = folder / "out"
    cli = [sys.executable, "-m", "llava_star"]
    gen = str(folder / "generations")
    return {
        "generate (resume a finished run)": [
            sys.executable,
            "-c",
            GENERATE_SCRIPT,
            str(folder / "samples.jsonl"),
            str(folder / "videos"),
            gen,
        ],
        "export (llava_star)": [*cli, "export", gen, "-o", str(out / "train.json")],
        "export --format video-llava": [
            *cli,
            "export",
            gen,
            "-o",
            str(out / "train_video_llava.json"),
            "--format",
            "video-llava",
            "--video-root",
            str(folder),
        ],
        "report": [*cli, "report", gen, "-o", str(out / "report")],
        "prepare kinetics700 (CSV)": [
            *cli,
            "prepare",
            "kinetics700",
            "--annotations",
            str(folder / "validate.csv"),
            "--video-root",
            str(folder / "k700_videos"),
            "-o",
            str(out / "k700_samples.jsonl"),
            "--split",
            "validate",
        ],
    }


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_bytes: int
    cpu_seconds: float  # user + system: on a shared machine, wall time also measures the neighbours


def measure(command: list[str], code: Path, log: Path) -> Measured:
    """Wall time and peak resident memory of ``command`` run as a child with ``code`` first on its path."""
    env = {**os.environ, "PYTHONPATH": str(code), "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    with log.open("wb") as output:
        child = subprocess.Popen(command, cwd=code, env=env, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{command[3] if len(command) > 3 else command}: exit {child.returncode}; see {log}")
    return Measured(seconds, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime)  # Linux: maxrss in KiB


def table(sizes: list[int], results: dict[str, dict[int, Measured]]) -> str:
    """A Markdown table: time and peak RSS per size, and the largest/smallest ratios."""
    small, large = sizes[0], sizes[-1]
    head = ["stage", *(f"{n:,}: wall s / CPU s / GB" for n in sizes)]
    if len(sizes) > 1:
        head += [f"time ratio {large:,}/{small:,} (wall, CPU)", "RSS ratio"]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for stage, by_size in results.items():
        cells = [stage] + [
            f"{by_size[n].seconds:.1f} / {by_size[n].cpu_seconds:.1f} / {by_size[n].peak_rss_bytes / 1e9:.2f}"
            for n in sizes
        ]
        if len(sizes) > 1:
            wall = by_size[large].seconds / by_size[small].seconds
            cells.append(f"{wall:.2f}, {by_size[large].cpu_seconds / by_size[small].cpu_seconds:.2f}")
            cells.append(f"{by_size[large].peak_rss_bytes / by_size[small].peak_rss_bytes:.2f}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 20_000], help="record counts (ascending)")
    parser.add_argument("--work-dir", type=Path, help="where the inputs are written and kept (default: a temp dir)")
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose stages run (default: this one)")
    parser.add_argument("--stages", nargs="+", help="only the stages whose name starts with one of these")
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes)
    temporary = None if args.work_dir else tempfile.TemporaryDirectory(prefix="llava-star-scale-")
    work_dir = args.work_dir or Path(temporary.name)
    results: dict[str, dict[int, Measured]] = {}
    try:
        for size in sizes:
            folder = data_for(work_dir, size)
            shutil.rmtree(folder / "out", ignore_errors=True)
            (folder / "out").mkdir()
            for index, (stage, command) in enumerate(stage_commands(folder).items()):
                if args.stages and not any(stage.startswith(prefix) for prefix in args.stages):
                    continue
                measured = measure(command, args.code.resolve(), folder / "out" / f"stage{index}.log")
                results.setdefault(stage, {})[size] = measured
                print(
                    f"N={size:,} {stage}: {measured.seconds:.1f} s ({measured.cpu_seconds:.1f} s CPU), "
                    f"{measured.peak_rss_bytes / 1e9:.2f} GB",
                    file=sys.stderr,
                )
    finally:
        if temporary is not None:
            temporary.cleanup()
    print(f"code: {args.code.resolve()}; load average at the end: {os.getloadavg()[0]:.2f}")
    print(table(sizes, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
