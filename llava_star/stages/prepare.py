"""``llava-star prepare``: turn a labeled dataset into ``samples.jsonl``.

Stage 1 of Video-STaR. The dataset's adapter (``llava_star.datasets``) reads the
annotations and proposes samples; this stage keeps those whose video exists under the
video root (existence only: decoding every video would take hours on Kinetics), counts
the rest by reason, and writes the samples as they come to a file that replaces the
output only once complete, so an interrupted run leaves either the previous file or the
complete new one, and memory does not grow with the rows. The summary (samples, skipped
rows by reason, label types, tasks) is logged and written next to the output as
``<output stem>.summary.json``.

    llava-star prepare kinetics700 --annotations k700/validate.csv --video-root k700/videos \\
        -o k700_val.jsonl --split validate --limit 1000
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llava_star.datasets import ADAPTERS, get_adapter
from llava_star.datasets.adapter import Found, PrepareRequest, Skipped
from llava_star.errors import AnnotationError, ConfigError, VideoError
from llava_star.idset import IdHashes
from llava_star.io import write_json_atomic, write_jsonl_atomic
from llava_star.media.video import resolve_video_path
from llava_star.records import Sample

logger = logging.getLogger(__name__)

MISSING_VIDEO = "video not found"
EXAMPLES_PER_REASON = 5
# datasets whose annotation file holds several splits; the others' files are one split each
KINETICS = frozenset({"kinetics", "kinetics400", "kinetics600", "kinetics700", "kinetics700_2020"})
SPLIT_AWARE = KINETICS | {"finediving", "generic"}
# datasets whose adapter yields each sample id once: Kinetics' id is the clip stem, and the
# adapter skips a clip listed twice, so prepare's own id check would hold the same hashes again
IDS_UNIQUE_BY_ADAPTER = KINETICS


@dataclass
class PrepareSummary:
    """Counts of one ``prepare`` run (written as JSON next to the samples)."""

    dataset: str
    samples: int = 0
    videos: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)
    label_types: Counter[str] = field(default_factory=Counter)
    tasks: Counter[str] = field(default_factory=Counter)

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        examples = self.skipped_examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(where)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "samples": self.samples,
            "videos": self.videos,
            "skipped": dict(self.skipped.most_common()),
            "skipped_examples": self.skipped_examples,
            "label_types": dict(self.label_types.most_common()),
            "tasks": dict(self.tasks.most_common()),
        }


def _check_video(request: PrepareRequest, found: Found) -> bool:
    """Whether the sample's video exists; a path leaving the video root is an error."""
    try:
        path = resolve_video_path(request.video_root, found.sample.video)
    except VideoError as error:
        raise AnnotationError(f"{found.where}: {error}") from None
    return path.exists()


def stream_samples(
    request: PrepareRequest,
    proposals: Iterable[Found | Skipped],
    summary: PrepareSummary,
    *,
    limit: int | None = None,
    rescan: Callable[[], Iterable[Found | Skipped]] | None = None,
    check_ids: bool = True,
) -> Iterator[Sample]:
    """Proposed samples whose video exists, up to ``limit``, one at a time; ``summary`` counts everything.

    Ids and videos are remembered as 8-byte hashes; a repeated id is confirmed and its
    first row found with ``rescan`` (the adapter run again), so the error names both rows.
    ``check_ids=False`` is for an adapter that never repeats an id (it holds them already).
    """
    ids = IdHashes() if check_ids else None
    videos = IdHashes()
    kept = 0
    for proposal in tqdm(proposals, desc=f"prepare {request.dataset}", unit=" rows", disable=None):
        if isinstance(proposal, Skipped):
            summary.skip(proposal.reason, proposal.where)
            logger.debug("%s: skipped: %s", proposal.where, proposal.reason)
            continue
        sample = proposal.sample
        if ids is not None and not ids.add_new(sample.id):
            first = _first_row_of(sample.id, rescan)
            if first != proposal.where:  # the same row: two ids sharing a hash, not a repeat
                raise AnnotationError(f"{proposal.where}: sample id {sample.id!r} repeats {first}")
        if not _check_video(request, proposal):
            summary.skip(MISSING_VIDEO, f"{proposal.where}: {sample.video}")
            logger.debug("%s: no video %s under %s", proposal.where, sample.video, request.video_root)
            continue
        kept += 1
        summary.samples = kept
        summary.videos += videos.add_new(sample.video)
        summary.tasks[sample.task] += 1
        summary.label_types.update(label.type for label in sample.labels)
        yield sample
        if limit is not None and kept >= limit:
            break


def _first_row_of(sample_id: str, rescan: Callable[[], Iterable[Found | Skipped]] | None) -> str:
    """Where the first sample with ``sample_id`` came from (``an earlier row`` when it cannot be looked up)."""
    if rescan is not None:
        for proposal in rescan():
            if isinstance(proposal, Found) and proposal.sample.id == sample_id:
                return proposal.where
    return "an earlier row"


def summary_path(output: Path) -> Path:
    """``samples.jsonl`` -> ``samples.summary.json``."""
    return output.with_name(f"{output.stem}.summary.json")


def prepare(request: PrepareRequest, output: Path, *, limit: int | None = None) -> PrepareSummary:
    """Run the dataset's adapter and write the samples and their summary atomically."""
    if not request.annotations.exists():
        raise AnnotationError(f"--annotations {request.annotations}: no such file or directory")
    if not request.video_root.is_dir():
        raise AnnotationError(f"--video-root {request.video_root}: not a directory")
    adapter = get_adapter(request.dataset)
    if request.split and request.dataset not in SPLIT_AWARE:
        logger.warning("--split %s is ignored: a %s annotation file holds one split", request.split, request.dataset)
    summary = PrepareSummary(request.dataset)
    # a fresh generator, so that a rescan draws no question of the run's
    rescan = functools.partial(adapter, dataclasses.replace(request, rng=random.Random(0)))
    check_ids = request.dataset not in IDS_UNIQUE_BY_ADAPTER
    samples = stream_samples(request, adapter(request), summary, limit=limit, rescan=rescan, check_ids=check_ids)
    write_jsonl_atomic(output, samples)
    write_json_atomic(summary_path(output), summary.to_dict())
    _log_summary(summary, output)
    return summary


def _log_summary(summary: PrepareSummary, output: Path) -> None:
    logger.info("wrote %d samples (%d videos) to %s", summary.samples, summary.videos, output)
    for reason, count in summary.skipped.most_common():
        logger.info("skipped %d: %s", count, reason)
    logger.info("label types: %s", ", ".join(f"{k} {v}" for k, v in summary.label_types.most_common()) or "none")
    logger.info("tasks: %s", ", ".join(f"{k} {v}" for k, v in summary.tasks.most_common()) or "none")
    if summary.samples == 0:
        logger.warning("no samples written: check --video-root and --split (skip reasons above)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llava-star prepare",
        description="Turn a labeled video dataset into samples.jsonl (video, question, gold labels).",
    )
    parser.add_argument("dataset", choices=sorted(ADAPTERS), metavar="DATASET", help=f"one of: {', '.join(ADAPTERS)}")
    parser.add_argument("--annotations", required=True, type=Path, help="annotation file (or folder, FineDiving)")
    parser.add_argument("--video-root", required=True, type=Path, help="folder the sample video paths are under")
    parser.add_argument("-o", "--output", required=True, type=Path, help="samples JSONL to write")
    parser.add_argument("--split", help="keep rows of this split (train / val / test) when the file has several")
    parser.add_argument("--limit", type=_positive_int, help="stop after this many samples")
    parser.add_argument("--mapping", type=Path, help="YAML column mapping (generic adapter)")
    parser.add_argument("--seed", type=int, default=0, help="seed for drawing question paraphrases (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.dataset == "generic" and args.mapping is None:
        raise ConfigError("--mapping: the generic adapter needs a YAML mapping (see README 'Preparing datasets')")
    request = PrepareRequest(
        dataset=args.dataset,
        annotations=args.annotations,
        video_root=args.video_root,
        split=args.split,
        mapping=args.mapping,
        rng=random.Random(args.seed),
    )
    prepare(request, args.output, limit=args.limit)
    return 0
