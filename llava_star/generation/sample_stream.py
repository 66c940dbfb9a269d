"""This rank's pending samples with their decoded frames, a batch-sized chunk at a time.

Each process takes every WORLD_SIZE-th line of the samples file (by position); DataLoader
workers split that share again, parse and validate their own lines (nobody parses another's),
skip the ids already written, decode the videos, and send each chunk to the main process in
one piece while the model generates. A video that cannot be decoded travels as its reason
(the generate stage writes it to the failures file), never as a substitute sample.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llava_star.distributed import ProcessContext, die_with_parent, shard
from llava_star.errors import RecordError, VideoError
from llava_star.idset import line_id
from llava_star.records import Sample, jsonl_lines, parse_jsonl_lines

if TYPE_CHECKING:
    from llava_star.media.video import Frames

VideoReader = Callable[[Sample], "Frames"]  # raises VideoError for a video it cannot decode


def frame_reader(video_root: str | os.PathLike[str], num_frames: int) -> VideoReader:
    """Decode a sample's clip with ``llava_star.media.video`` (raises ``VideoError``)."""
    from llava_star.media.video import read_frames, resolve_video_path

    def read(sample: Sample) -> Frames:
        path = resolve_video_path(video_root, sample.video)
        return read_frames(path, num_frames, start=sample.start, end=sample.end)

    return read


@dataclass(frozen=True)
class SampleFile:
    """The samples a run answers: the first ``limit`` lines of ``path`` (all with None)."""

    path: str
    limit: int | None = None

    def lines(self, context: ProcessContext, worker_id: int = 0, num_workers: int = 1) -> Iterator[tuple[int, bytes]]:
        """The unparsed lines of this rank (and DataLoader worker), so nobody parses another's lines."""
        lines = itertools.islice(jsonl_lines(self.path), self.limit)
        return shard(shard(lines, context.rank, context.world_size), worker_id, num_workers)

    def share_size(self, context: ProcessContext) -> int:
        """Lines in this rank's share (finished or not): the progress bar's total, counted unparsed."""
        return sum(1 for _ in self.lines(context))


@dataclass(frozen=True)
class PendingSample:
    """A sample with its decoded frames, or the reason they could not be decoded."""

    sample: Sample
    frames: Frames | None = None
    error: str | None = None


@dataclass(frozen=True)
class Chunk:
    """A batch of decoded pending samples of one DataLoader worker, sent to the main process in one piece.

    ``lines`` counts the lines of this rank's share that went into the chunk, finished
    ones included, so progress moves through the whole share. ``error`` is a bad line's
    ``RecordError`` (naming file:line), carried as data so that the main process raises
    it as it is rather than as a worker's traceback.
    """

    items: list[PendingSample]
    lines: int
    error: RecordError | None = None


def _decoded(sample: Sample, read_video: VideoReader) -> PendingSample:
    try:
        return PendingSample(sample, frames=read_video(sample))
    except VideoError as error:
        return PendingSample(sample, error=str(error))


def _unfinished(
    source: SampleFile, context: ProcessContext, worker_id: int, num_workers: int, done: Container[str]
) -> Iterator[Sample | None]:
    """This worker's samples, None for each one finished already: a finished line's id is read
    without parsing the line (a resumed run of a million finished samples parses none)."""
    for number, raw in source.lines(context, worker_id, num_workers):
        sample_id = line_id(raw)
        if sample_id is not None and sample_id in done:
            yield None
            continue
        for sample in parse_jsonl_lines(source.path, [(number, raw)], Sample.from_dict, allow_torn_tail=False):
            yield None if sample.id in done else sample


def decoded_chunks(
    source: SampleFile, context: ProcessContext, done: Container[str], read_video: VideoReader, batch_size: int
) -> Iterator[Chunk]:
    """This worker's pending samples with their frames, a batch at a time; runs in DataLoader
    workers. Each line is parsed and validated here, once, by the only process that uses it."""
    import torch.utils.data

    worker = torch.utils.data.get_worker_info()
    worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
    items: list[PendingSample] = []
    consumed = 0
    try:
        for sample in _unfinished(source, context, worker_id, num_workers, done):
            consumed += 1
            if sample is None:  # finished by an earlier run
                continue
            items.append(_decoded(sample, read_video))
            if len(items) == batch_size:
                yield Chunk(items, consumed)
                items, consumed = [], 0
    except RecordError as error:
        yield Chunk(items, consumed, error=error)
        return
    if consumed:
        yield Chunk(items, consumed)


def _as_sent(chunk: Chunk) -> Chunk:
    """The DataLoader's collate step: a chunk is already what the main process needs."""
    return chunk


def chunks(
    source: SampleFile,
    context: ProcessContext,
    done: Container[str],
    read_video: VideoReader,
    *,
    batch_size: int,
    num_workers: int,
) -> Iterator[Chunk]:
    """Chunks of decoded samples; the workers decode the next chunks during generation."""
    import torch.utils.data

    if num_workers == 0:
        # without workers a DataLoader only adds its per-item fetch machinery: nothing to overlap,
        # and nothing to transfer, so each batch is decoded just before it is generated
        return decoded_chunks(source, context, done, read_video, batch_size)

    class Chunks(torch.utils.data.IterableDataset):
        def __iter__(self) -> Iterator[Chunk]:
            return decoded_chunks(source, context, done, read_video, batch_size)

    loader = torch.utils.data.DataLoader(
        Chunks(),
        batch_size=None,  # the workers send whole batches: one transfer per batch, not per sample
        num_workers=num_workers,
        collate_fn=_as_sent,
        prefetch_factor=4,  # batches waiting per worker
        # forked workers inherit the sample stream and the video reader as they are (no
        # pickling of closures), and they never touch CUDA: they only decode
        multiprocessing_context="fork",
        # killed with the main process, even by kill -9, instead of blocking on a full queue
        worker_init_fn=functools.partial(die_with_parent, os.getpid()),
    )
    return iter(loader)


def in_batches(items: Iterator[PendingSample], size: int) -> Iterator[list[PendingSample]]:
    """Consecutive lists of ``size`` items (the last may be shorter).

    >>> list(in_batches(iter("abcde"), 2))
    [['a', 'b'], ['c', 'd'], ['e']]
    """
    while batch := list(itertools.islice(items, size)):
        yield batch
