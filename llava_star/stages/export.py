"""Stage 5a: turn the kept generations into LLaVA conversation JSON for fine-tuning.

``llava-star export GEN_DIR [GEN_DIR ...] -o train.json`` reads every generation shard
(``generations.rank*.jsonl``) of each directory, keeps the answers that passed verification, and writes
one LLaVA record per sample: the ORIGINAL question (never the hint of a rationalized
answer) as the human turn and the kept answer as the gpt turn, plus metadata (source,
task, label types, rationalized, cycle, clip start/end). Ids are deduplicated, the first
directory given winning, so exporting the same generation directory twice, or a rerun
that repeated a sample, does not weight a sample twice.

``--direct-only`` drops rationalized answers (the paper trains its final model on direct
answers only). ``--mix other.json ...`` appends existing LLaVA instruction data
(VideoInstruct-100K, LLaVA-665K) verbatim after validating its shape, to reproduce the
paper's mixture; those files are someone else's curated data, so their records are not
deduplicated or changed.

A stats line per source and label type goes to the log, and the same figures to
``train.stats.json`` next to the output. The output is written atomically.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llava_star.errors import RecordError
from llava_star.llava_json import GPT, HUMAN, VIDEO_PLACEHOLDER, media_paths, read_llava_json
from llava_star.records import Generation, read_generations, write_json_atomic
from llava_star.runs import GenerationDir, exclusive_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportConfig:
    gen_dirs: tuple[Path, ...]
    output: Path
    direct_only: bool = False
    mix: tuple[Path, ...] = ()


@dataclass
class ExportStats:
    """Counts per (source, label type); a sample with two label types counts under both."""

    generated: Counter = field(default_factory=Counter)
    passed: Counter = field(default_factory=Counter)
    kept: Counter = field(default_factory=Counter)
    kept_rationalized: Counter = field(default_factory=Counter)
    duplicates: int = 0
    dropped_rationalized: int = 0
    mixed: dict[str, int] = field(default_factory=dict)
    total: int = 0

    def to_dict(self) -> dict[str, Any]:
        groups = sorted(self.generated)
        return {
            "total_records": self.total,
            "duplicate_ids_dropped": self.duplicates,
            "rationalized_dropped": self.dropped_rationalized,
            "by_source_and_label_type": [
                {
                    "source": source,
                    "label_type": label_type,
                    "generated": self.generated[source, label_type],
                    "passed": self.passed[source, label_type],
                    "kept": self.kept[source, label_type],
                    "kept_rationalized": self.kept_rationalized[source, label_type],
                }
                for source, label_type in groups
            ],
            "mixed_files": dict(self.mixed),
        }


def shard_paths(gen_dir: Path) -> list[Path]:
    """The generation shards of a directory (or a single shard file given directly).

    Only the shards: a generation directory also holds failures, stats and config files.
    """
    if gen_dir.is_file():
        return [gen_dir]
    if not gen_dir.is_dir():
        raise RecordError(f"{gen_dir}: no such generation directory")
    directory = GenerationDir(gen_dir)
    if not directory.exists():
        raise RecordError(f"{gen_dir}: no generation shards (generations.rank*-of-*.jsonl) in this directory")
    return directory.generation_shards()


def read_all_generations(gen_dirs: Iterable[Path]) -> Iterator[Generation]:
    for gen_dir in gen_dirs:
        for shard in shard_paths(gen_dir):
            yield from read_generations(shard)


def label_types(generation: Generation) -> list[str]:
    return sorted({label.type for label in generation.sample.labels})


def to_llava_record(generation: Generation) -> dict[str, Any]:
    """The training record of a kept generation: the original question, the kept answer."""
    sample = generation.sample
    record: dict[str, Any] = {"id": sample.id, "video": sample.video}
    if sample.start is not None:
        record["start"] = sample.start
    if sample.end is not None:
        record["end"] = sample.end
    record["conversations"] = [
        {"from": HUMAN, "value": f"{VIDEO_PLACEHOLDER}\n{sample.question}"},
        {"from": GPT, "value": generation.answer.strip()},
    ]
    record.update(
        source=sample.source,
        task=sample.task,
        label_types=label_types(generation),
        rationalized=generation.rationalized,
        cycle=generation.cycle,
    )
    return record


def select_records(generations: Iterable[Generation], *, direct_only: bool, stats: ExportStats) -> list[dict[str, Any]]:
    """Passed generations as LLaVA records, first occurrence of an id kept."""
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for generation in generations:
        groups = [(generation.sample.source, label_type) for label_type in label_types(generation)]
        stats.generated.update(groups)
        if not generation.passed:
            continue
        stats.passed.update(groups)
        if generation.id in seen:
            stats.duplicates += 1
            continue
        if direct_only and generation.rationalized:
            stats.dropped_rationalized += 1
            continue
        seen.add(generation.id)
        stats.kept.update(groups)
        if generation.rationalized:
            stats.kept_rationalized.update(groups)
        records.append(to_llava_record(generation))
    return records


def _describe_mixed(records: list[dict[str, Any]]) -> str:
    videos = sum(1 for record in records if media_paths(record, "video"))
    images = sum(1 for record in records if media_paths(record, "image"))
    return f"{len(records)} records ({videos} video, {images} image, {len(records) - videos - images} text-only)"


def run(config: ExportConfig) -> ExportStats:
    """Export under a lock on the output file: a second copy of the same export stops at once."""
    with exclusive_file(config.output, "export"):
        return _export(config)


def _export(config: ExportConfig) -> ExportStats:
    stats = ExportStats()
    records = select_records(read_all_generations(config.gen_dirs), direct_only=config.direct_only, stats=stats)
    for mix_path in config.mix:
        mixed = read_llava_json(mix_path)
        stats.mixed[str(mix_path)] = len(mixed)
        logger.info("export: mix %s: %s", mix_path, _describe_mixed(mixed))
        records.extend(mixed)
    if not records:
        raise RecordError(
            f"no training records: none of the generations in {', '.join(map(str, config.gen_dirs))} passed"
            + (" as a direct answer (--direct-only)" if config.direct_only else "")
        )
    stats.total = len(records)
    for row in stats.to_dict()["by_source_and_label_type"]:
        logger.info(
            "export: source=%s label_type=%s generated=%d passed=%d kept=%d (rationalized %d)",
            row["source"], row["label_type"], row["generated"], row["passed"], row["kept"], row["kept_rationalized"],
        )  # fmt: skip
    if stats.duplicates or stats.dropped_rationalized:
        logger.info(
            "export: dropped %d duplicate id(s), %d rationalized answer(s)", stats.duplicates, stats.dropped_rationalized
        )
    write_json_atomic(config.output, records)
    write_json_atomic(stats_path(config.output), stats.to_dict())
    logger.info("export: wrote %d records to %s", len(records), config.output)
    return stats


def stats_path(output: Path) -> Path:
    """``train.json`` -> ``train.stats.json``.

    >>> stats_path(Path("runs/train.json")).as_posix()
    'runs/train.stats.json'
    """
    return output.with_name(output.stem + ".stats.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-star export", description=__doc__.split("\n\n")[0])
    parser.add_argument("gen_dirs", nargs="+", type=Path, metavar="GEN_DIR", help="generation directories (or shards)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="LLaVA JSON to write (e.g. train.json)")
    parser.add_argument("--direct-only", action="store_true", help="drop rationalized answers")
    parser.add_argument(
        "--mix", nargs="+", action="extend", type=Path, default=[], metavar="JSON",
        help="existing LLaVA instruction JSON to append (e.g. VideoInstruct-100K, LLaVA-665K)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run(ExportConfig(gen_dirs=tuple(args.gen_dirs), output=args.output, direct_only=args.direct_only, mix=tuple(args.mix)))
    return 0
