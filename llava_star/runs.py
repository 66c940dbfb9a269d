"""The on-disk contract of a run: which file is which, in one place.

Every stage that reads or writes a generation directory or a cycle's run directory names
its files through this module, so a new file (a failures shard, a lock) cannot be mistaken
for data by another stage. A generation directory (``llava-star generate -o DIR``)::

    generations.rankRRRRR-of-WWWWW.jsonl   finished samples (Generation lines), one shard per rank
    failures.rankRRRRR-of-WWWWW.jsonl      {"id", "video", "reason"}: samples whose video failed
    run.rankRRRRR-of-WWWWW.json            this run's counts and speed, per rank
    config.json  summary.json              the resolved config; totals over every shard

A cycle's run directory (``llava-star cycle``)::

    config.yaml  run.json  report/ (index.html, stats.json, plots, frames/)
    baseline/  cycle_K/  final/            each: generations/, train.json, model/, eval/, eval.json,
                                           train_config.yaml, done/STAGE.json (finished-stage markers);
                                           with DPO (train.objective) also pairs.json, sft_model/

Every long-running command holds :func:`exclusive_directory` (or :func:`exclusive_file`) on
what it writes: an OS lock (``flock``) that the kernel drops when the process dies, so a
second copy of a job stops at once, and a killed one leaves nothing to clean up.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_star.distributed import ProcessContext
from llava_star.errors import LlavaStarError
from llava_star.io import read_jsonl, write_json_atomic
from llava_star.records import Generation

logger = logging.getLogger(__name__)

LOCK_NAME = ".llava_star.lock"
# the files of a report directory (llava-star report)
REPORT_PAGE, REPORT_STATS = "index.html", "stats.json"


def shard_name(stem: str, rank: int, world_size: int, suffix: str = ".jsonl") -> str:
    """The file one rank writes, named so that shards of any rank layout can be merged.

    >>> shard_name("generations", 3, 8)
    'generations.rank00003-of-00008.jsonl'
    """
    return f"{stem}.rank{rank:05d}-of-{world_size:05d}{suffix}"


@dataclass(frozen=True)
class GenerationDir:
    """The output directory of one ``llava-star generate`` run."""

    path: Path

    def generations_shard(self, rank: int, world_size: int) -> Path:
        return self.path / shard_name("generations", rank, world_size)

    def failures_shard(self, rank: int, world_size: int) -> Path:
        return self.path / shard_name("failures", rank, world_size)

    def run_stats(self, rank: int, world_size: int) -> Path:
        return self.path / shard_name("run", rank, world_size, ".json")

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    def generation_shards(self) -> list[Path]:
        return sorted(self.path.glob("generations.rank*-of-*.jsonl"))

    def failure_shards(self) -> list[Path]:
        return sorted(self.path.glob("failures.rank*-of-*.jsonl"))

    def exists(self) -> bool:
        return bool(self.generation_shards() or self.failure_shards())

    def generations(self) -> list[Generation]:
        """Every finished sample, once (the first line of an id wins, as when resuming)."""
        found: dict[str, Generation] = {}
        for shard in self.generation_shards():
            for generation in read_jsonl(shard, Generation.from_dict):
                found.setdefault(generation.id, generation)
        return list(found.values())

    def iter_generations(self) -> Iterator[Generation]:
        """:meth:`generations` one at a time: only the ids seen are remembered, as 8-byte hashes."""
        from llava_star.idset import IdHashes

        seen = IdHashes()
        for shard in self.generation_shards():
            for generation in read_jsonl(shard, Generation.from_dict):
                if seen.add_new(generation.id):
                    yield generation

    def count_video_failures(self) -> int:
        """How many lines :meth:`video_failures` has, without holding them."""
        return sum(1 for shard in self.failure_shards() for _ in read_jsonl(shard))

    def video_failures(self) -> list[dict[str, Any]]:
        """Samples whose video could not be decoded: not answered, so in no kept fraction."""
        return [line for shard in self.failure_shards() for line in read_jsonl(shard)]


@dataclass(frozen=True)
class StageDir:
    """One step of a cycle run (``baseline``, ``cycle_K``, ``final``) and its finished-stage markers."""

    path: Path

    @property
    def generations(self) -> GenerationDir:
        return GenerationDir(self.path / "generations")

    @property
    def eval_generations(self) -> GenerationDir:
        return GenerationDir(self.path / "eval" / "generations")

    @property
    def lmms_eval(self) -> Path:
        return self.path / "eval" / "lmms_eval"

    @property
    def train_data(self) -> Path:
        return self.path / "train.json"

    @property
    def train_config(self) -> Path:
        return self.launch_config("train")

    @property
    def pairs_data(self) -> Path:
        """Preference pairs of the cycle's generations (``export --format dpo``; ``train.objective`` dpo)."""
        return self.path / "pairs.json"

    @property
    def sft_model(self) -> Path:
        """``train.objective: sft_then_dpo``: the SFT model, the DPO step's start and reference."""
        return self.path / "sft_model"

    def launch_config(self, step: str) -> Path:
        """The config a launched step reads (``llava-star STAGE --config FILE``): ``STEP_config.yaml``."""
        return self.path / f"{step}_config.yaml"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def eval_result(self) -> Path:
        return self.path / "eval.json"

    def marker(self, stage: str) -> Path:
        return self.path / "done" / f"{stage}.json"

    def done(self, stage: str) -> dict[str, Any] | None:
        """What a finished stage recorded, or None when it has not finished."""
        marker = self.marker(stage)
        return json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else None

    def mark_done(self, stage: str, info: dict[str, Any]) -> dict[str, Any]:
        """Written last and atomically: a stage with a marker finished, one without did not."""
        write_json_atomic(self.marker(stage), info)
        return info


@dataclass(frozen=True)
class CycleRunDir:
    """The output directory of ``llava-star cycle``."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def summary(self) -> Path:
        return self.path / "run.json"

    @property
    def report(self) -> Path:
        """Where ``llava-star report`` writes by default (and the cycle after every cycle)."""
        return self.path / "report"

    @property
    def report_page(self) -> Path:
        return self.path / "report" / REPORT_PAGE

    @property
    def held_out_samples(self) -> Path:
        """The held-out subset every evaluation of the run answers (``eval.limit`` set)."""
        return self.path / "held_out_samples.jsonl"

    @property
    def baseline(self) -> StageDir:
        return StageDir(self.path / "baseline")

    @property
    def final(self) -> StageDir:
        return StageDir(self.path / "final")

    def cycle(self, number: int) -> StageDir:
        return StageDir(self.path / f"cycle_{number}")

    def cycle_numbers(self) -> list[int]:
        """The cycles on disk, in order (cycle_10 after cycle_9)."""
        found = (re.fullmatch(r"cycle_(\d+)", path.name) for path in self.path.glob("cycle_*") if path.is_dir())
        return sorted(int(match[1]) for match in found if match)

    def recorded(self) -> dict[str, Any] | None:
        """The run summary the cycle wrote (run.json), or None before its first cycle ended."""
        return json.loads(self.summary.read_text(encoding="utf-8")) if self.summary.exists() else None


# ---------------------------------------------------------------- one writer per output


class OutputInUseError(LlavaStarError):
    """Another process is writing the same output: a second copy of a job."""


def _holder(lock_file: Path) -> str:
    try:
        holder = json.loads(lock_file.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        holder = {}
    if not holder:
        return "a process that is just starting"
    return f"llava-star {holder.get('command', '?')}, pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('started', '?')}"


@contextmanager
def exclusive_directory(directory: str | os.PathLike[str], command: str) -> Iterator[Path]:
    """Hold the only right to write ``directory`` (created if missing) for the block."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _exclusive(directory / LOCK_NAME, directory, command):
        yield directory


@contextmanager
def exclusive_file(path: str | os.PathLike[str], command: str) -> Iterator[Path]:
    """Hold the only right to write the output file ``path`` (locked by a ``PATH.lock`` beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path.with_name(f"{path.name}.lock"), path, command):
        yield path


@contextmanager
def serialized_update(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Wait for, then hold, the right to read-modify-write ``path``, a file several jobs add to
    (``dataset_info.json``: two exports into one folder each add their entry). The ``flock`` is
    on ``PATH.lock`` beside it; unlike :func:`exclusive_file` a second writer waits its turn,
    and the kernel drops the lock when its holder dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path.with_name(f"{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        _close_locks_in_forked_children()
        _HELD_LOCKS.add(descriptor)
        yield path
    finally:
        _HELD_LOCKS.discard(descriptor)
        os.close(descriptor)


@contextmanager
def exclusive_directory_for_job(
    directory: str | os.PathLike[str],
    command: str,
    context: ProcessContext,
    broadcast: Callable[[str | None], str | None] | None = None,
) -> Iterator[Path]:
    """:func:`exclusive_directory` for one torchrun job of many processes: rank 0 holds the
    lock for the job, and every rank stops when it cannot (the outcome is broadcast over the
    job's process group, which must be up, or by ``broadcast``: rank 0's value on every
    rank), so no rank of a second copy writes a line."""
    directory = Path(directory)
    if not context.is_distributed:
        with exclusive_directory(directory, command):
            yield directory
        return
    import torch.distributed as dist

    with ExitStack() as held:
        refusal = [None]
        if context.is_main:
            try:
                held.enter_context(exclusive_directory(directory, command))
            except OutputInUseError as error:
                refusal = [str(error)]
        if broadcast is not None:
            refusal = [broadcast(refusal[0])]
        else:
            dist.broadcast_object_list(refusal, src=0)
        if refusal[0] is not None:
            raise OutputInUseError(refusal[0])
        yield directory


# The lock descriptors this process holds. A forked child (a DataLoader worker) inherits
# copies, and a flock lasts while any copy is open: after kill -9 of a job, its dying workers
# would keep its outputs locked for a moment (a rerun at once was refused, naming the dead
# job). Forked children close their copies as they start.
_HELD_LOCKS: set[int] = set()


def _close_inherited_locks() -> None:
    for descriptor in _HELD_LOCKS:
        os.close(descriptor)
    _HELD_LOCKS.clear()


@functools.cache
def _close_locks_in_forked_children() -> None:
    os.register_at_fork(after_in_child=_close_inherited_locks)


@contextmanager
def _exclusive(lock_file: Path, target: Path, command: str) -> Iterator[None]:
    """``flock`` on an open file: a second holder fails at once with an error naming the
    holder (pid, host, start time), and the kernel releases the lock when the process exits
    in any way, kill -9 included, so there is never a stale lock to delete by hand."""
    descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise OutputInUseError(
                f"{target}: already being written by {_holder(lock_file)}; "
                "wait for it to finish (a rerun then resumes), or write somewhere else"
            ) from None
        holder = {
            "command": command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        os.ftruncate(descriptor, 0)
        os.write(descriptor, json.dumps(holder).encode())
        _close_locks_in_forked_children()
        _HELD_LOCKS.add(descriptor)
        yield
    finally:
        _HELD_LOCKS.discard(descriptor)
        os.close(descriptor)  # releases the flock
