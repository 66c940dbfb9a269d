"""Video-STaR steps 2-4 on one rank's share: answer, verify, rationalize the failures, write.

A batch is answered with the direct prompt and each answer verified; the failures are
queued, and once a batch worth of them is waiting they are asked again with the gold label
as a hint (rationalization) and verified again. The rationalized answer is stored with the
ORIGINAL question: the hint is only ever in the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llava_star.distributed import ProcessContext
from llava_star.generation.answerer import Answerer
from llava_star.generation.options import GenerationOptions
from llava_star.generation.prompts import direct_prompt, hint_prompt
from llava_star.generation.sample_stream import PendingSample, SampleFile, VideoReader, chunks, in_batches
from llava_star.generation.shards import RunCounts, ShardWriter
from llava_star.verify import verify


def answer_directly(
    items: Sequence[PendingSample], answerer: Answerer, writer: ShardWriter, *, rationalize: bool
) -> list[PendingSample]:
    """Ask the question as is; write what passed (or everything); return what to rationalize."""

    if not items:
        return []
    replies = answerer.replies([direct_prompt(item.sample.question) for item in items], [item.frames for item in items])
    failed = []
    for item, reply in zip(items, replies, strict=True):
        verdict = verify(reply.text, item.sample.labels, truncated=reply.truncated)
        if verdict.passed or not rationalize:
            writer.finished(item, reply, verdict, rationalized=False)
        else:
            failed.append(item)
    return failed


def rationalize(items: Sequence[PendingSample], answerer: Answerer, writer: ShardWriter) -> None:
    """Ask again with the gold labels as a hint; the stored question stays the original."""

    prompts = [hint_prompt(item.sample.question, item.sample.labels) for item in items]
    replies = answerer.replies(prompts, [item.frames for item in items])
    for item, reply in zip(items, replies, strict=True):
        verdict = verify(reply.text, item.sample.labels, rationalized=True, truncated=reply.truncated)
        writer.finished(item, reply, verdict, rationalized=True)


def generate_batch(
    options: GenerationOptions,
    batch: list[PendingSample],
    waiting: list[PendingSample],
    answerer: Answerer,
    writer: ShardWriter,
) -> None:
    """Answer a batch, queue its failures in ``waiting``, rationalize full batches of them, write."""
    for item in batch:
        if item.error is not None:
            writer.failed(item)
    decoded = [item for item in batch if item.error is None]
    waiting += answer_directly(decoded, answerer, writer, rationalize=options.rationalize)
    while len(waiting) >= options.batch_size:
        rationalize(waiting[: options.batch_size], answerer, writer)
        del waiting[: options.batch_size]
    writer.write_finished()


def generate_shard(
    options: GenerationOptions,
    source: SampleFile,
    context: ProcessContext,
    answerer: Answerer,
    read_video: VideoReader,
    done: set[str],
    writer: ShardWriter,
) -> RunCounts:
    """Every pending sample of this rank's share, finished and written; closes ``writer``."""
    from tqdm import tqdm

    waiting: list[PendingSample] = []  # failed direct answers, rationalized a full batch at a time
    # one bar, on rank 0; None hides it when stderr is not a terminal
    progress = tqdm(
        total=source.share_size(context),
        unit="sample",
        desc=f"cycle {writer.cycle}",
        disable=None if context.is_main else True,
    )
    try:
        for chunk in chunks(
            source, context, done, read_video, batch_size=options.batch_size, num_workers=options.num_workers
        ):
            for batch in in_batches(iter(chunk.items), options.batch_size):
                generate_batch(options, batch, waiting, answerer, writer)
                _show_progress(progress, writer.counts, len(batch))
            progress.update(chunk.lines - len(chunk.items))  # lines finished by an earlier run
            if chunk.error is not None:  # the samples before the bad line are written: a rerun skips them
                raise chunk.error
        if waiting:
            rationalize(waiting, answerer, writer)
            _show_progress(progress, writer.counts, 0)
    finally:
        progress.close()
        writer.close()
    return writer.counts


def _show_progress(progress: Any, counts: RunCounts, advanced: int) -> None:
    progress.update(advanced)
    if counts.finished:
        progress.set_postfix(
            kept=f"{counts.kept / counts.finished:.0%}",
            rationalized=f"{counts.rationalized / counts.finished:.0%}",
            refresh=False,
        )
