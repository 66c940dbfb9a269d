"""How fast ``llava-star prepare`` reads a Kinetics-sized annotation file.

Kinetics-700 has ~650k rows; prepare indexes the video root once and checks each clip's
existence, so its cost should grow with the row count, not with rows x layouts. This
writes a K700-style CSV of ``--rows`` rows (real class names, quoted) and an empty
placeholder clip for 90% of them in per-class folders, then times ``prepare`` on it.

    python benchmarks/prepare_speed.py                 # 50,000 rows
    python benchmarks/prepare_speed.py --rows 200000

Prints rows, samples, skipped, wall and CPU seconds, and rows per CPU second.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from llava_star.datasets.adapter import PrepareRequest
from llava_star.datasets.vocabularies import load_vocabulary
from llava_star.stages.prepare import prepare


def write_dataset(folder: Path, rows: int, seed: int = 0) -> tuple[Path, Path]:
    rng = random.Random(seed)
    classes = load_vocabulary("kinetics700")
    video_root = folder / "videos"
    lines = ["label,youtube_id,time_start,time_end,split"]
    for number in range(rows):
        label, youtube_id, start = rng.choice(classes), f"{number:011d}", rng.randint(0, 300)
        lines.append(f'"{label}",{youtube_id},{start},{start + 10},validate')
        if number % 10:  # every tenth clip is missing, as downloads always miss some
            class_folder = video_root / label.replace(" ", "_")
            class_folder.mkdir(parents=True, exist_ok=True)
            (class_folder / f"{youtube_id}_{start:06d}_{start + 10:06d}.mp4").touch()
    annotations = folder / "validate.csv"
    annotations.write_text("\n".join(lines) + "\n")
    return annotations, video_root


def cpu_seconds() -> float:
    """User + system time of this process: on a shared machine, wall time mostly measures the neighbours."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        annotations, video_root = write_dataset(Path(folder), args.rows)
        request = PrepareRequest("kinetics700", annotations, video_root, split="val")
        cpu_before, wall_before = cpu_seconds(), time.perf_counter()
        summary = prepare(request, Path(folder) / "samples.jsonl")
        cpu, wall = cpu_seconds() - cpu_before, time.perf_counter() - wall_before
    skipped = sum(summary.skipped.values())
    sys.stdout.write(
        f"rows {args.rows}  samples {summary.samples}  skipped {skipped}  "
        f"wall {wall:.1f} s  cpu {cpu:.1f} s  rows/cpu-second {args.rows / cpu:,.0f}\n"
    )


if __name__ == "__main__":
    main()
