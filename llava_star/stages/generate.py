"""Stages 2-4: answer every sample with reasoning, verify, rationalize the failures.

    llava-star generate --model M --samples S.jsonl --video-root DIR -o OUT_DIR
    torchrun --nproc_per_node 8 -m llava_star generate --model M ...   # same, sharded by rank

Each process takes every WORLD_SIZE-th sample of the file (by position), decodes videos in
DataLoader workers while the model generates, answers a batch with the direct prompt,
verifies each answer, and queues the failures; once a batch worth of failures is queued
it asks them again with the gold label as a hint (rationalization) and verifies again.
A sample is written, as one line of this rank's shard, only when it is finished, so a
run killed at any moment loses nothing but unfinished batches, and a rerun of the same
command skips every id already written by any rank of any earlier layout (a rank reads the
ids only, of the shards that can hold its share of the same samples file). A video that
cannot be decoded becomes a line of the failures file with the reason, never a
substitute sample. The rationalized answer is stored with the ORIGINAL question: the
hint is only ever in the prompt. ``--num-answers K`` (with ``--temperature > 0``) samples K
answers per question, verifies each, keeps the sample when any passes (the first passing
answer is the line's ``answer``) and records every answer in the line's ``answers``
(docs/generate.md#several-answers-per-question).

Outputs in OUT_DIR: ``generations.rankRRRRR-of-WWWWW.jsonl`` (Generation lines),
``failures.rankRRRRR-of-WWWWW.jsonl`` (``{"id", "video", "reason"}``), ``config.json``
(the resolved config), ``summary.json`` (totals over every shard on disk and this run's
speed).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_star.config import add_config_flags, config_from_flags, config_to_dict, option
from llava_star.distributed import process_context
from llava_star.errors import ConfigError
from llava_star.generation.answerer import Answerer, ModelAnswerer, Reply  # noqa: F401 (scripts and tests import it here)
from llava_star.generation.options import GenerationOptions
from llava_star.generation.ranks import ranks_together
from llava_star.generation.sample_stream import SampleFile, VideoReader, frame_reader
from llava_star.generation.shards import ShardWriter, finished_ids, summarize, this_run
from llava_star.generation.star import generate_shard
from llava_star.records import check_unique_ids, format_kept, write_json_atomic
from llava_star.runs import GenerationDir, exclusive_directory_for_job

__all__ = ["GenerateConfig", "GenerationOptions", "main", "run", "summarize"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class GenerateConfig(GenerationOptions):
    """Everything a generation run depends on; written to OUT_DIR/config.json."""

    model: str = option(help="hub id or directory of a supported video LVLM")
    samples: str = option(help="samples JSONL (llava-star prepare / synthetic)")
    video_root: str = option(help="directory the samples' video paths are relative to")
    output_dir: str = option(help="directory for the shards and summary", flags=("-o", "--output-dir"))
    cycle: int = option(0, help="self-training cycle number stored in each line")
    limit: int | None = option(None, help="only the first N samples of the file")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cycle < 0:
            raise ConfigError(f"cycle: must be >= 0, got {self.cycle}")
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"limit: must be >= 0, got {self.limit}")


def run(
    config: GenerateConfig,
    *,
    answerer: Answerer | None = None,
    read_video: VideoReader | None = None,
) -> dict[str, Any]:
    """Generate this process's share; on rank 0, return (and write) the summary.

    ``answerer`` and ``read_video`` default to the model of ``config.model`` and to
    ``llava_star.media.video``; benchmarks pass stand-ins to time the pipeline alone.
    """
    # setup: the inputs, the backend, the ranks and the output directory
    context = process_context()
    if not Path(config.video_root).is_dir():
        # every sample would become a failure line, and a rerun with the right root would skip them
        raise ConfigError(f"video_root: {config.video_root} is not a directory")
    # before any model loads: two lines with one id would both be answered and trained on
    check_unique_ids(config.samples, config.limit)
    directory = GenerationDir(Path(config.output_dir))
    family = backend = None
    if answerer is None:
        from llava_star.generation.backends import choose_backend
        from llava_star.models.loading import model_family_and_type

        family, model_type = model_family_and_type(config.model)
        backend = choose_backend(config.backend, family, model_type)
    with (
        ranks_together(config, context, backend) as ranks,
        exclusive_directory_for_job(directory.path, "generate", context, ranks.broadcast),
    ):
        if context.is_main:
            write_json_atomic(directory.config, {**config_to_dict(config), "world_size": context.world_size})
        done = finished_ids(directory, context)  # ids only, of the shards that can hold this rank's share
        if answerer is None:
            from llava_star.generation.backends import build_answerer

            answerer = build_answerer(config.model, config, backend=backend, family=family, device=ranks.device)
        read_video = read_video or frame_reader(config.video_root, config.num_frames)
        writer = ShardWriter(directory.path, context, cycle=config.cycle, model=config.model)

        # work: this rank's share, answered, verified, rationalized and written line by line
        started = time.perf_counter()
        counts = generate_shard(
            config, SampleFile(config.samples, config.limit), context, answerer, read_video, done, writer
        )

        # write: this rank's stats; once every rank is done, rank 0 sums the shards on disk
        stats = {**dataclasses.asdict(counts), "seconds": time.perf_counter() - started}
        write_json_atomic(directory.run_stats(context.rank, context.world_size), stats)
        ranks.barrier()
        summary: dict[str, Any] = {}
        if context.is_main:
            summary = {**summarize(directory.path), "this_run": this_run(directory, context)}
            summary.update(model=config.model, cycle=config.cycle, backend=backend or "given")
            write_json_atomic(directory.summary, summary)
            logger.info("%s in %s, %d videos failed", format_kept(summary), directory.path, summary["video_failures"])
    return summary


def parse_args(argv: list[str] | None) -> GenerateConfig:
    parser = argparse.ArgumentParser(
        prog="llava-star generate",
        description="Answer samples with step-by-step reasoning, verify, rationalize the failures.",
    )
    parser.add_argument("--config", help="YAML of GenerateConfig keys (what the cycle writes for a launcher)")
    add_config_flags(parser, GenerateConfig)
    args = parser.parse_args(argv)
    return config_from_flags(GenerateConfig, args, getattr(args, "config", None))


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0
