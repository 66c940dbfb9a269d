"""What a generate rank pays at start-up to resume a finished run: time and memory of the scan.

Uses the inputs ``benchmarks/scale.py`` wrote (``--work-dir``, size N): a samples file and a
finished one-rank generation directory. For each layout, one child process per measured rank
runs what ``generate`` does before its first batch: the duplicate-id check of the samples
file, the finished ids of the shards that can hold its share, and the share's line count.
The 8-rank layout is also measured on a copy of the run re-sharded as 8 ranks would have
written it (each rank then reads its own shard only).

    python benchmarks/scale.py --sizes 1000000 --work-dir /tmp/scale --stages generate
    python benchmarks/resume_startup.py --work-dir /tmp/scale --size 1000000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from llava_star.io import JsonlAppender, jsonl_lines
from llava_star.runs import GenerationDir

SCAN = """
import resource, sys, time
from llava_star.distributed import ProcessContext
from llava_star.generation.sample_stream import SampleFile
from llava_star.generation.shards import finished_ids
from llava_star.records import check_unique_ids
from pathlib import Path
from llava_star.runs import GenerationDir

samples, gen_dir, rank, world_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
check_unique_ids(samples)
checked = time.perf_counter()
context = ProcessContext(rank, world_size, rank)
done = finished_ids(GenerationDir(Path(gen_dir)), context)
found = time.perf_counter()
share = SampleFile(samples).share_size(context)
counted = time.perf_counter()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{checked - started:.1f} {found - checked:.1f} {counted - found:.1f} {len(done)} {share} {(after - before) / 1024:.0f}")
"""


def resharded(folder: Path, world_size: int) -> Path:
    """The finished run as ``world_size`` ranks would have written it (by position), written once."""
    target = GenerationDir(folder / f"generations_{world_size}_ranks")
    if not (target.path / "written").exists():
        target.path.mkdir(exist_ok=True)
        shards = [
            JsonlAppender(target.generations_shard(r, world_size), fsync_every=1 << 30) for r in range(world_size)
        ]
        source = GenerationDir(folder / "generations").generations_shard(0, 1)
        for position, (_, raw) in enumerate(jsonl_lines(source)):
            shards[position % world_size].write_lines([raw])
        for shard in shards:
            shard.close()
        (target.path / "written").touch()
    return target.path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="scale.py's --work-dir")
    parser.add_argument("--size", type=int, required=True, help="the N whose inputs to use")
    args = parser.parse_args(argv)
    folder = args.work_dir / f"n{args.size}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    layouts = [
        ("1 rank, resuming its own run", folder / "generations", 1),
        ("8 ranks, resuming a 1-rank run (rank 0)", folder / "generations", 8),
        ("8 ranks, resuming an 8-rank run (rank 0)", resharded(folder, 8), 8),
    ]
    print(f"N = {args.size:,} finished samples")
    print("| layout | id check s | finished ids s | share count s | ids kept | share | peak RSS growth MB | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, gen_dir, world_size in layouts:
        started = time.perf_counter()
        output = subprocess.run(
            [sys.executable, "-c", SCAN, str(folder / "samples.jsonl"), str(gen_dir), "0", str(world_size)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        print(f"| {name} | " + " | ".join(output) + f" | {time.perf_counter() - started:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
