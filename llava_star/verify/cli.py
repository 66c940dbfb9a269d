"""``llava-star verify IN.jsonl -o OUT.jsonl``: verdicts for answers in a JSONL file.

IN lines are ``{"id", "answer", "labels", "rationalized"?}`` (generation shards qualify);
OUT lines are ``{"id", "passed", "checks": [{"type", "passed", "reason"}]}``. The input
is streamed and OUT is appended a whole line at a time, so a killed run resumes where it
stopped (ids already in OUT are skipped; ``--restart`` starts OUT afresh). Pass rates per
check type and the most common failure reasons go to OUT.stats.json.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llava_star.errors import RecordError
from llava_star.idset import IdHashes, written_id_hashes
from llava_star.records import JsonlAppender, read_jsonl, write_json_atomic
from llava_star.runs import exclusive_file
from llava_star.verify.core import verify
from llava_star.verify.verdict import failure_kind

logger = logging.getLogger(__name__)
_TOP_REASONS = 20


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-star verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help='JSONL with {"id", "answer", "labels"} per line')
    parser.add_argument("-o", "--output", type=Path, required=True, help="JSONL of verdicts to write")
    parser.add_argument(
        "--rationalized",
        action="store_true",
        help="treat every answer as rationalized (hint leakage fails); otherwise each line's own field",
    )
    parser.add_argument("--restart", action="store_true", help="discard an existing OUT instead of resuming")
    return parser


def verdict_line(data: Any, *, rationalized: bool = False) -> dict[str, Any]:
    """One OUT line for one IN line; bad input raises an error naming the id and field."""
    if not isinstance(data, Mapping):
        raise RecordError(f"expected a JSON object, got {type(data).__name__}")
    sample_id = data.get("id")
    if isinstance(sample_id, bool) or not isinstance(sample_id, (str, int)) or sample_id == "":
        raise RecordError(f"id: expected a non-empty string, got {sample_id!r}")
    try:
        if "answer" not in data:
            raise RecordError("answer: missing")
        labels = data.get("labels")
        if not isinstance(labels, list) or not labels:
            raise RecordError("labels: expected a non-empty list of label objects")
        verdict = verify(
            data["answer"],
            labels,
            rationalized=rationalized or bool(data.get("rationalized", False)),
            truncated=bool(data.get("truncated", False)),
        )
    except RecordError as error:
        raise type(error)(f"id {sample_id!r}: {error}") from None
    return {"id": str(sample_id), **verdict.to_dict()}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with exclusive_file(args.output, "verify"):
        return _verify_file(args)


def _verify_file(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.restart:
        args.output.unlink(missing_ok=True)
    done = written_id_hashes([args.output])  # ids only, 8 bytes each: OUT may hold millions
    if done:
        logger.info("resuming: %d ids already in %s", len(done), args.output)
    totals: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    per_type: dict[str, Counter[str]] = {}
    with JsonlAppender(args.output) as out:
        # Verifying inside the reader makes errors name the file and line as well as the id.
        lines = read_jsonl(args.input, lambda data: _verdict_unless_done(data, done, args.rationalized))
        for line in tqdm(lines, desc="verify", unit="answer", disable=None):
            if line is None:
                continue
            out.write(line)
            totals["answers"] += 1
            totals["passed"] += line["passed"]
            for check in line["checks"]:
                per_type.setdefault(check["type"], Counter())["passed" if check["passed"] else "failed"] += 1
                if not check["passed"]:
                    failures[failure_kind(check)] += 1
    stats = {
        "answers": totals["answers"],
        "passed": totals["passed"],
        "pass_rate": totals["passed"] / totals["answers"] if totals["answers"] else None,
        "checks": {kind: dict(counts) for kind, counts in sorted(per_type.items())},
        "top_failures": dict(failures.most_common(_TOP_REASONS)),
        "resumed_ids": len(done),
    }
    write_json_atomic(args.output.with_name(args.output.name + ".stats.json"), stats)
    logger.info("verified %d answers: %d passed -> %s", totals["answers"], totals["passed"], args.output)
    return 0


def _verdict_unless_done(data: Any, done: IdHashes, rationalized: bool) -> dict[str, Any] | None:
    if isinstance(data, Mapping) and str(data.get("id")) in done:
        return None
    return verdict_line(data, rationalized=rationalized)
