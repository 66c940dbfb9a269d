"""Stage 5a: turn the kept generations into training JSON for llava_star or another LLaVA-family trainer.

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

``--format`` picks the trainer the JSON is for (:mod:`llava_star.training_formats`):
``llava_star`` (the default, this project's trainer), ``video-llava``, ``llava-next``
(also LLaVA-Video and OneVision training code) or ``llama-factory`` (ShareGPT records
plus their ``dataset_info.json`` entry, written next to the JSON). Those three decode a
record's whole video file, so a sample about a clip (``start``/``end``) or a frame folder
gets its own mp4 under a media folder (``train_media/`` beside ``train.json``, cut once
and reused on a rerun, :mod:`llava_star.media.clips`), and every video path is written
relative to the folder the target is pointed at (``--video-folder``: the video root for
Video-LLaVA's and LLaVA-NeXT's ``--video_folder``, the JSON's folder for LLaMA-Factory's
``dataset_dir``). A video that is missing or cannot be cut is left out, counted and named
in the log and the stats file, as generate does with a video it cannot decode. Records
mixed in with ``--mix`` may be in any of the four formats (detected per file, or
``--mix-format``) and are written in the target's.

A stats line per source and label type goes to the log, and the same figures to
``train.stats.json`` next to the output. The output is written atomically.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from llava_star.config import option
from llava_star.errors import ConfigError, NothingToExport, RecordError
from llava_star.export_formats import dpo
from llava_star.generation.shards import read_all_generations, recorded_video_root
from llava_star.idset import IdHashes
from llava_star.io import JsonArrayWriter
from llava_star.label_types import label_type_names
from llava_star.llava_json import SYSTEM, media_paths, record_location, video_turns
from llava_star.media.clips import MediaLayout, PlayableRecords, playable_records, playable_stream
from llava_star.records import Generation, write_json_atomic
from llava_star.runs import exclusive_file, serialized_update
from llava_star.training_formats import (
    FORMATS,
    MIX_FORMATS,
    TARGETS,
    dataset_info_entry,
    from_llava_form,
    read_training_json,
)

logger = logging.getLogger(__name__)

# failures named in the log (all of them go to the stats file)
_LOGGED_FAILURES = 5
# columns LLaMA-Factory's dataset entry names only when some record has them
_OPTIONAL_COLUMNS = (SYSTEM, "videos", "images")


@dataclass(frozen=True)
class ExportConfig:
    gen_dirs: tuple[Path, ...] = option(help="generation directories (or shards)", flags=("gen_dirs",))
    output: Path = option(help="training JSON to write (e.g. train.json)", flags=("-o", "--output"))
    direct_only: bool = option(False, help="drop rationalized answers")
    drop_ungrounded: bool = option(
        False, help="drop answers the grounding check flagged (grounded: false: they pass without the video)"
    )
    unverified: bool = option(
        False, help="also export the answers the verifier rejected: the no-verifier ablation, not for real training"
    )
    mix: tuple[Path, ...] = option(
        (), help="existing instruction data to append (e.g. VideoInstruct-100K, LLaVA-665K), in any --format"
    )
    format: str = option("llava_star", help="the trainer the JSON is for (default: llava_star)")
    mix_format: str = option("auto", help="format of the --mix files (default: detected per file)")
    video_root: Path | None = option(None, help="folder of the generations' videos (default: from their config.json)")
    video_folder: Path | None = option(
        None,
        help="folder the target is pointed at; video paths are written relative to it "
        "(default: the video root; LLaMA-Factory: the output's folder, its dataset_dir)",
    )
    media_dir: Path | None = option(
        None, help="where clips are written (default: OUTPUT_STEM_media/ beside the output)"
    )
    jobs: int = option(1, help="processes cutting clips (default: 1)")
    max_pairs: int = option(1, help="--format dpo: preference pairs per question at most (default: 1)")

    def __post_init__(self) -> None:
        if self.format not in (*FORMATS, dpo.FORMAT):
            raise ConfigError(f"format: expected one of {', '.join((*FORMATS, dpo.FORMAT))}, got {self.format!r}")
        if self.format == dpo.FORMAT and self.mix:
            raise ConfigError("mix: instruction data has no rejected answers to pair; --format dpo takes no --mix")
        if self.max_pairs < 1:
            raise ConfigError(f"max_pairs: must be >= 1, got {self.max_pairs}")
        if self.mix_format not in MIX_FORMATS:
            raise ConfigError(f"mix_format: expected one of {', '.join(MIX_FORMATS)}, got {self.mix_format!r}")
        if self.jobs < 1:
            raise ConfigError(f"jobs: must be >= 1, got {self.jobs}")
        if self.format == "llava_star" and (self.video_folder is not None or self.media_dir is not None):
            raise ConfigError("video_folder, media_dir: only for a format whose trainer reads whole files (--format)")


@dataclass
class ExportStats:
    """Counts per (source, label type); a sample with two label types counts under both."""

    generated: Counter = field(default_factory=Counter)
    passed: Counter = field(default_factory=Counter)
    exported: Counter = field(default_factory=Counter)
    exported_rationalized: Counter = field(default_factory=Counter)
    duplicates: int = 0
    dropped_rationalized: int = 0
    dropped_ungrounded: int = 0
    mixed: dict[str, int] = field(default_factory=dict)
    mixed_formats: dict[str, str] = field(default_factory=dict)
    total: int = 0
    format: str = "llava_star"
    video_folder: str | None = None
    # clips: "cut" now, "reused" from an earlier run, videos used "as_is"
    media: Counter = field(default_factory=Counter)
    media_skipped: list[dict[str, Any]] = field(default_factory=list)
    pairs: dict[str, Any] | None = None  # --format dpo: dpo.PairStats

    def to_dict(self) -> dict[str, Any]:
        groups = sorted(self.generated)
        return {
            "format": self.format,
            "total_records": self.total,
            "duplicate_ids_dropped": self.duplicates,
            "rationalized_dropped": self.dropped_rationalized,
            "ungrounded_dropped": self.dropped_ungrounded,
            "by_source_and_label_type": [
                {
                    "source": source,
                    "label_type": label_type,
                    "generated": self.generated[source, label_type],
                    "passed": self.passed[source, label_type],
                    "exported": self.exported[source, label_type],
                    "exported_rationalized": self.exported_rationalized[source, label_type],
                }
                for source, label_type in groups
            ],
            "mixed_files": dict(self.mixed),
            "mixed_formats": dict(self.mixed_formats),
            "video_folder": self.video_folder,
            "media": {key: self.media[key] for key in ("cut", "reused", "as_is")},
            "media_skipped": list(self.media_skipped),
            **({} if self.pairs is None else {"pairs": self.pairs}),
        }


def to_llava_record(generation: Generation) -> dict[str, Any]:
    """The training record of a kept generation: the original question, the kept answer."""
    sample = generation.sample
    record: dict[str, Any] = {"id": sample.id, "video": sample.video}
    if sample.start is not None:
        record["start"] = sample.start
    if sample.end is not None:
        record["end"] = sample.end
    record["conversations"] = video_turns(sample.question, generation.answer.strip())
    record.update(
        source=sample.source,
        task=sample.task,
        label_types=label_type_names(sample.labels),
        rationalized=generation.rationalized,
        cycle=generation.cycle,
    )
    return record


def kept_records(
    generations: Iterable[Generation],
    *,
    direct_only: bool,
    stats: ExportStats,
    drop_ungrounded: bool = False,
    unverified: bool = False,
) -> Iterator[dict[str, Any]]:
    """Passed generations (``unverified``: all of them) as LLaVA records, first occurrence of an
    id kept, one at a time.

    Only the ids exported so far are remembered, as 8-byte hashes (:class:`IdHashes`).
    """
    seen = IdHashes()
    for generation in generations:
        groups = [(generation.sample.source, label_type) for label_type in label_type_names(generation.sample.labels)]
        stats.generated.update(groups)
        if generation.passed:
            stats.passed.update(groups)
        elif not unverified:
            continue
        if generation.id in seen:
            stats.duplicates += 1
            continue
        if direct_only and generation.rationalized:
            stats.dropped_rationalized += 1
            continue
        if drop_ungrounded and generation.grounded is False:  # None (not checked) is kept
            stats.dropped_ungrounded += 1
            continue
        seen.add(generation.id)
        stats.exported.update(groups)
        if generation.rationalized:
            stats.exported_rationalized.update(groups)
        yield to_llava_record(generation)


def _describe_mixed(records: list[dict[str, Any]]) -> str:
    videos = sum(1 for record in records if media_paths(record, "video"))
    images = sum(1 for record in records if media_paths(record, "image"))
    return f"{len(records)} records ({videos} video, {images} image, {len(records) - videos - images} text-only)"


def media_layout(config: ExportConfig) -> MediaLayout:
    video_root = config.video_root or recorded_video_root(config.gen_dirs)
    if video_root is None:
        raise ConfigError(
            f"video_root: --format {config.format} needs the folder the samples' videos are in, to cut clips, "
            "encode frame folders and check the files exist; the generation directories record none: pass --video-root"
        )
    if not video_root.is_dir():
        raise ConfigError(f"video_root: {video_root} is not a directory (pass --video-root)")
    default_folder = config.output.parent if config.format in ("llama-factory", dpo.FORMAT) else video_root
    return MediaLayout(
        video_root=video_root.resolve(),
        media_dir=(config.media_dir or config.output.with_name(config.output.stem + "_media")).resolve(),
        video_folder=config.video_folder or default_folder,
    )


def _log_media(stats: ExportStats, layout: MediaLayout) -> None:
    media = stats.media
    logger.info(
        "export: media for %s: %d clip(s) cut, %d reused (an earlier run's, or shared by samples about one clip), %d video(s) used as they are (under %s)",
        TARGETS[stats.format if stats.format in TARGETS else "llama-factory"].trainer,
        media["cut"],
        media["reused"],
        media["as_is"],
        layout.media_dir,
    )
    if stats.media_skipped:
        examples = "; ".join(f"{f['id']}: {f['reason']}" for f in stats.media_skipped[:_LOGGED_FAILURES])
        logger.warning(
            "export: left out %d record(s) whose video is missing or cannot be cut: %s",
            len(stats.media_skipped),
            examples,
        )


def mixed_records(path: Path, config: ExportConfig, stats: ExportStats) -> list[dict[str, Any]]:
    """The records of a ``--mix`` file in the target's format; LLaVA data mixed into llava_star output stays verbatim."""

    records, found = read_training_json(str(path), config.mix_format)
    stats.mixed[str(path)] = len(records)
    stats.mixed_formats[str(path)] = found
    logger.info("export: mix %s (%s): %s", path, found, _describe_mixed(records))
    if config.format == "llava_star":
        return records
    target = TARGETS[config.format]
    converted = []
    for index, record in enumerate(records):
        try:
            if record.get("start") is not None or record.get("end") is not None:
                raise RecordError(
                    f"start/end: {target.trainer} ignores clip ranges and would train on the whole video; "
                    "export the generation directory this record came from instead of mixing its export"
                )
            converted.append(from_llava_form(record, config.format))
        except RecordError as error:
            raise RecordError(f"{record_location(path, index, record)}: {error}") from None
    return converted


def run(config: ExportConfig) -> ExportStats:
    """Export under a lock on the output file: a second copy of the same export stops at once."""
    with exclusive_file(config.output, "export"):
        return _export(config)


def _playable(records: Iterator[dict[str, Any]], config: ExportConfig, stats: ExportStats) -> Iterator[dict[str, Any]]:
    """The records in the target's format pointing at files its trainer reads whole, a batch of clips at a time."""
    first = next(records, None)
    if first is None:  # nothing kept: no video root needed
        return
    layout = media_layout(config)
    totals = PlayableRecords([])
    for record in playable_stream(itertools.chain([first], records), layout, totals, jobs=config.jobs):
        yield from_llava_form(record, config.format)
    stats.media.update(totals.media)
    stats.media_skipped.extend(totals.skipped)
    _log_media(stats, layout)
    stats.video_folder = str(layout.video_folder)


def _all_records(config: ExportConfig, stats: ExportStats) -> Iterator[dict[str, Any]]:
    """The exported generations, then the mixed-in records (which keep their paths)."""
    records = kept_records(
        read_all_generations(config.gen_dirs),
        direct_only=config.direct_only,
        stats=stats,
        drop_ungrounded=config.drop_ungrounded,
        unverified=config.unverified,
    )
    yield from records if config.format == "llava_star" else _playable(records, config, stats)
    for mix_path in config.mix:
        yield from mixed_records(mix_path, config, stats)


def _export(config: ExportConfig) -> ExportStats:
    """Stream the records to the output (written in place once complete); memory does not grow with them."""
    stats = ExportStats(format=config.format)
    if config.format == dpo.FORMAT:
        return _export_pairs(config, stats)
    columns: dict[str, dict[str, Any]] = {}  # a record with each optional column (LLaMA-Factory's entry)
    with JsonArrayWriter(config.output) as output:
        for record in _all_records(config, stats):
            output.write(record)
            for column in _OPTIONAL_COLUMNS:
                if column in record:
                    columns.setdefault(column, record)
        if not output.count:
            raise NothingToExport(
                f"no training records: none of the generations in {', '.join(map(str, config.gen_dirs))} passed"
                + (" as a direct answer (--direct-only)" if config.direct_only else "")
                + (" with the video (--drop-ungrounded)" if config.drop_ungrounded else "")
                + (
                    f", or their videos could not be used ({len(stats.media_skipped)} left out)"
                    if stats.media_skipped
                    else ""
                )
            )
        stats.total = output.count
        if config.drop_ungrounded:
            logger.info("export: %d answers dropped as ungrounded (--drop-ungrounded)", stats.dropped_ungrounded)
        for row in stats.to_dict()["by_source_and_label_type"]:
            logger.info(
                "export: source=%s label_type=%s generated=%d passed=%d exported=%d (rationalized %d)",
                row["source"],
                row["label_type"],
                row["generated"],
                row["passed"],
                row["exported"],
                row["exported_rationalized"],
            )
        if stats.duplicates or stats.dropped_rationalized:
            logger.info(
                "export: dropped %d duplicate id(s), %d rationalized answer(s)",
                stats.duplicates,
                stats.dropped_rationalized,
            )
    write_json_atomic(stats_path(config.output), stats.to_dict())
    if config.format == "llama-factory":
        write_dataset_info(config.output, list(columns.values()))
    logger.info("export: wrote %d records to %s", stats.total, config.output)
    if stats.video_folder is not None:
        target = TARGETS[config.format]
        logger.info(
            "export: for %s, video paths are relative to %s: set %s to it",
            target.trainer,
            stats.video_folder,
            target.folder_setting,
        )
    return stats


def _export_pairs(config: ExportConfig, stats: ExportStats) -> ExportStats:
    """Preference pairs (:mod:`llava_star.export_formats.dpo`): TRL's form at the output, LLaMA-Factory's
    ranking form beside it (its clips cut as for ``llama-factory``), the same pairs in both."""
    pair_stats = dpo.PairStats()
    generations = read_all_generations(config.gen_dirs)
    records = dpo.pair_records(
        generations,
        max_pairs=config.max_pairs,
        stats=pair_stats,
        direct_only=config.direct_only,
        drop_ungrounded=config.drop_ungrounded,
    )
    if not records:
        raise NothingToExport(
            f"no preference pairs: no question in {', '.join(map(str, config.gen_dirs))} has both a passing and a "
            "failing complete answer (generate --num-answers K with --temperature > 0 gives several answers)"
        )
    layout = media_layout(config)
    playable = playable_records(records, layout, jobs=config.jobs)
    stats.media.update(playable.media)
    stats.media_skipped.extend(playable.skipped)
    _log_media(stats, layout)
    usable = {record["id"] for record in playable.records}
    trl = [dpo.to_trl(record) for record in records if record["id"] in usable]
    ranking = [dpo.to_llama_factory_ranking(record) for record in playable.records]
    stats.total, stats.pairs, stats.video_folder = len(trl), pair_stats.to_dict(), str(layout.video_folder)
    write_json_atomic(config.output, trl)
    write_json_atomic(dpo.ranking_path(config.output), ranking)
    write_json_atomic(stats_path(config.output), stats.to_dict())
    write_dataset_info(dpo.ranking_path(config.output), ranking, dpo.ranking_dataset_info_entry)
    logger.info(
        "export: wrote %d preference pairs (%d with a rationalized chosen answer) to %s (TRL) and %s (LLaMA-Factory)",
        len(trl),
        stats.pairs["pairs_chosen_rationalized"],
        config.output,
        dpo.ranking_path(config.output),
    )
    return stats


def dataset_info_path(output: Path) -> Path:
    return output.with_name("dataset_info.json")


def write_dataset_info(output: Path, records: list[dict[str, Any]], make_entry: Any = None) -> None:
    """Add the output's entry (named after its stem) to the ``dataset_info.json`` beside it, keeping the others.

    ``records`` need only include one record with each optional column the output has.
    """
    # read, add, replace under a lock: two exports into one folder each keep their entry
    # (without it, one of them was lost in 7 of 20 concurrent trials)
    with serialized_update(dataset_info_path(output)) as path:
        entries: dict[str, Any] = {}
        if path.exists():
            try:
                entries = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
                raise RecordError(f"{path}: cannot read it to add the dataset {output.stem!r}: {error}") from None
            if not isinstance(entries, dict):
                raise RecordError(f"{path}: expected a JSON object of dataset entries, got {type(entries).__name__}")
        entries[output.stem] = make_entry(output.name) if make_entry else dataset_info_entry(output.name, records)
        write_json_atomic(path, entries)
    logger.info(
        "export: dataset %r in %s (LLaMA-Factory: dataset_dir %s, dataset %s)",
        output.stem,
        path,
        path.parent,
        output.stem,
    )


def stats_path(output: Path) -> Path:
    """``train.json`` -> ``train.stats.json``.

    >>> stats_path(Path("runs/train.json")).as_posix()
    'runs/train.stats.json'
    """
    return output.with_name(output.stem + ".stats.json")


def _help(name: str) -> str:
    """The help text on ``ExportConfig``'s field ``name``."""
    return next(field.metadata["help"] for field in fields(ExportConfig) if field.name == name)


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``ExportConfig``, each with its field's help; written out because a
    positional list, choices and a repeatable ``--mix`` are more than a field's type says."""
    parser = argparse.ArgumentParser(prog="llava-star export", description=__doc__.split("\n\n")[0])
    parser.add_argument("gen_dirs", nargs="+", type=Path, metavar="GEN_DIR", help=_help("gen_dirs"))
    parser.add_argument("-o", "--output", type=Path, required=True, help=_help("output"))
    parser.add_argument("--direct-only", action="store_true", help=_help("direct_only"))
    parser.add_argument("--drop-ungrounded", action="store_true", help=_help("drop_ungrounded"))
    parser.add_argument("--unverified", action="store_true", help=_help("unverified"))
    parser.add_argument("--mix", nargs="+", action="extend", type=Path, default=[], metavar="JSON", help=_help("mix"))
    parser.add_argument("--format", choices=(*FORMATS, dpo.FORMAT), default="llava_star", help=_help("format"))
    parser.add_argument("--mix-format", choices=MIX_FORMATS, default="auto", help=_help("mix_format"))
    parser.add_argument("--video-root", type=Path, help=_help("video_root"))
    parser.add_argument("--video-folder", type=Path, help=_help("video_folder"))
    parser.add_argument("--media-dir", type=Path, help=_help("media_dir"))
    parser.add_argument("--jobs", type=int, default=1, help=_help("jobs"))
    parser.add_argument("--max-pairs", type=int, default=1, help=_help("max_pairs"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    run(ExportConfig(**{key: tuple(value) if isinstance(value, list) else value for key, value in args.items()}))
    return 0
