"""Verifier cost in CPU instructions per answer, counted by valgrind (callgrind).

Timings on a shared VM swing by half between runs; instruction counts do not (the same
code, inputs and hash seed give the same count whatever else the machine is doing), so
this is the figure to compare before and after a change to ``llava_star/verify``.

    python benchmarks/verifier_instructions.py [--types all class sequence] [--answers 800]

For each label type it runs the benchmark answers of ``benchmarks/verifier.py`` once and
three times under callgrind (after a warm-up, with the caches frozen out of the garbage
collector) and prints (instructions(3 passes) - instructions(1 pass)) / (2 x answers):
start-up and warm-up cancel out. Needs ``valgrind`` (Debian: ``apt-get install valgrind``);
takes about two minutes per type.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LABEL_TYPES = ("class", "number", "timestamp", "time_range", "box", "yes_no", "choice", "sequence")


def run_passes(label_type: str, answers: int, passes: int) -> None:
    """The measured work: ``passes`` passes of verify over the answers (run under valgrind)."""
    from benchmarks.verifier import build_answers
    from llava_star.verify import verify

    items = build_answers(answers * len(LABEL_TYPES), seed=0)
    if label_type != "all":
        items = [item for item in items if item[1][0].type == label_type]
    items = items[:answers]
    for answer, labels in items:  # warm-up: vocabularies, lemmas, compiled patterns
        verify(answer, labels)
    gc.collect()
    gc.freeze()
    for _ in range(passes):
        for answer, labels in items:
            verify(answer, labels)


def count_instructions(label_type: str, answers: int, passes: int) -> int:
    command = [
        "setarch",
        "-R",
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        label_type,
        str(answers),
        str(passes),
    ]
    env = dict(os.environ, PYTHONHASHSEED="0")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        run_passes(argv[1], int(argv[2]), int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--types", nargs="+", default=["all", *LABEL_TYPES], choices=["all", *LABEL_TYPES])
    parser.add_argument("--answers", type=int, default=800)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("setarch") is None:
        parser.error("needs valgrind and setarch on PATH (Debian: apt-get install valgrind)")
    for label_type in args.types:
        once = count_instructions(label_type, args.answers, 1)
        thrice = count_instructions(label_type, args.answers, 3)
        per_answer = (thrice - once) / (2 * args.answers)
        print(f"{label_type:<11} {per_answer:>10,.0f} instructions/answer", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
