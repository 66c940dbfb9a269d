"""A generation run's files: this rank's shard of finished samples, its failures, its counts.

A sample is written, as one line of this rank's shard, only when it is finished, so a run
killed at any moment loses nothing but unfinished batches; the totals of a directory are
counted from every shard on disk, whichever runs and rank layouts wrote them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llava_star.distributed import ProcessContext
from llava_star.errors import ConfigError, RecordError
from llava_star.idset import IdHashes, written_id_hashes
from llava_star.records import (
    Generation,
    JsonlAppender,
    dumps_line,
    read_generations,
)
from llava_star.runs import GenerationDir
from llava_star.tally import GroupTally

if TYPE_CHECKING:
    from llava_star.generation.answerer import Reply
    from llava_star.generation.sample_stream import PendingSample
    from llava_star.verify import Verdict

FSYNC_EVERY = 512  # lines between flushes to disk of a generations shard


@dataclass
class RunCounts:
    """What this process did in this run (totals over all runs come from the files)."""

    finished: int = 0
    kept: int = 0
    rationalized: int = 0
    kept_rationalized: int = 0
    video_failures: int = 0
    grounding_checked: int = 0  # kept answers asked again without the video's content
    ungrounded: int = 0  # ... that still passed

    def record(self, generation: Generation) -> None:
        self.finished += 1
        self.kept += generation.passed
        self.rationalized += generation.rationalized
        self.kept_rationalized += generation.passed and generation.rationalized
        self.grounding_checked += generation.grounded is not None
        self.ungrounded += generation.grounded is False


class ShardWriter:
    """This rank's generations and failures files, and its counts; lines record ``cycle`` and ``model``."""

    def __init__(self, output_dir: str | os.PathLike[str], context: ProcessContext, *, cycle: int, model: str) -> None:
        out = GenerationDir(Path(output_dir))
        self.cycle, self.model = cycle, model
        # A killed process loses nothing written (the page cache outlives it); fsync only
        # bounds what a power loss can take, so it need not cost a disk flush every few lines.
        self.generations = JsonlAppender(
            out.generations_shard(context.rank, context.world_size), fsync_every=FSYNC_EVERY
        )
        self.failures = JsonlAppender(out.failures_shard(context.rank, context.world_size))
        self.counts = RunCounts()
        self._unwritten: list[bytes] = []  # this batch's finished samples, written together

    def finished(
        self,
        item: PendingSample,
        reply: Reply,
        verdict: Verdict,
        *,
        rationalized: bool,
        grounded: bool | None = None,
        answers: tuple[dict[str, Any], ...] | None = None,
    ) -> None:
        generation = Generation(
            sample=item.sample,
            answer=reply.text,
            rationalized=rationalized,
            passed=verdict.passed,
            checks=tuple(verdict.to_dict()["checks"]),
            cycle=self.cycle,
            model=self.model,
            truncated=reply.truncated,
            grounded=grounded,
            answers=answers,
        )
        self._unwritten.append(dumps_line(generation))
        self.counts.record(generation)

    def write_finished(self) -> None:
        """Append the finished samples held so far, in one system call per few hundred lines."""
        self.generations.write_lines(self._unwritten)
        self._unwritten.clear()

    def failed(self, item: PendingSample) -> None:
        self.failures.write({"id": item.sample.id, "video": item.sample.video, "reason": item.error})
        self.counts.video_failures += 1

    def close(self) -> None:
        self.write_finished()
        self.generations.close()
        self.failures.close()


def summarize(output_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Totals over every shard on disk, whichever runs and rank layouts wrote them."""
    directory = GenerationDir(Path(output_dir))
    tally = GroupTally()  # one pass, counters only: a million answers are not held
    for generation in directory.iter_generations():
        tally.add(generation)
    return {
        **tally.kept_counts(),
        "video_failures": directory.count_video_failures(),
        **tally.grounding_counts(),
    }


_SHARD_LAYOUT = re.compile(r"\.rank(\d+)-of-(\d+)\.jsonl$")


def may_hold_share(shard: Path, context: ProcessContext) -> bool:
    """Whether ``shard`` can hold a sample of this rank's share of the samples file.

    Rank r of W takes the lines at positions p = r (mod W); a shard written by rank r' of W'
    holds lines p = r' (mod W'); both hold when r = r' (mod gcd(W, W')). So with an unchanged
    rank layout a rank reads its own shard only. A file not named by the layout is read.

    >>> from llava_star.distributed import ProcessContext
    >>> rank1 = ProcessContext(rank=1, world_size=4, local_rank=1)
    >>> [may_hold_share(Path(f"generations.rank{r:05d}-of-00002.jsonl"), rank1) for r in (0, 1)]
    [False, True]
    """
    match = _SHARD_LAYOUT.search(shard.name)
    if match is None:
        return True
    rank, world_size = int(match[1]), int(match[2])
    common = math.gcd(world_size, context.world_size)
    return rank % common == context.rank % common


def finished_ids(directory: GenerationDir, context: ProcessContext) -> IdHashes:
    """The ids this rank skips on a rerun: those written to a generations or failures shard
    that can hold a sample of its share (:func:`may_hold_share`), under any earlier layout.

    Only the ids are kept, as 8-byte hashes, and each line's id is read without parsing the
    rest of it (a line that is not of the project's form is parsed). The full lines are
    read and checked by ``summarize`` at the end of the run and by export and report.
    """
    shards = [s for s in directory.generation_shards() + directory.failure_shards() if may_hold_share(s, context)]
    return written_id_hashes(shards)


def this_run(directory: GenerationDir, context: ProcessContext) -> dict[str, Any]:
    """This run's counts summed over ranks; speed from the slowest rank (they run together)."""
    per_rank = [
        json.loads(directory.run_stats(rank, context.world_size).read_text()) for rank in range(context.world_size)
    ]
    run = {key: sum(stats[key] for stats in per_rank) for key in dataclasses.asdict(RunCounts())}
    seconds = max(stats["seconds"] for stats in per_rank)
    run.update(processes=context.world_size, seconds=round(seconds, 3))
    run["samples_per_second"] = round((run["finished"] + run["video_failures"]) / seconds, 3) if seconds else 0.0
    return run


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


def recorded_video_root(gen_dirs: Iterable[Path]) -> Path | None:
    """The ``video_root`` the generation directories' ``config.json`` agree on, None if none records one."""
    roots: dict[str, Path] = {}
    for gen_dir in gen_dirs:
        config_file = GenerationDir(gen_dir.parent if gen_dir.is_file() else gen_dir).config
        if not config_file.is_file():
            continue
        try:
            recorded = json.loads(config_file.read_text(encoding="utf-8")).get("video_root")
        except (json.JSONDecodeError, AttributeError) as error:
            raise RecordError(f"{config_file}: not a generation config: {error}") from None
        if recorded:
            roots.setdefault(str(recorded), config_file)
    if len(roots) > 1:
        listed = "; ".join(f"{root} ({path})" for root, path in roots.items())
        raise ConfigError(
            f"video_root: the generation directories were made from different video roots ({listed}); pass --video-root"
        )
    return Path(next(iter(roots))) if roots else None
