"""Video-STaR steps 2-4 on one rank's share: answer, verify, rationalize the failures, write.

A batch is answered with the direct prompt and each answer verified; the failures are
queued, and once a batch worth of them is waiting they are asked again with the gold label
as a hint (rationalization) and verified again. The rationalized answer is stored with the
ORIGINAL question: the hint is only ever in the prompt. With a grounding check
(``generation.grounding``), each kept answer's question is asked once more without the
video's content, and the line records whether that answer failed (``grounded``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llava_star.distributed import ProcessContext
from llava_star.generation.answerer import Answerer
from llava_star.generation.grounding import grounded_flags
from llava_star.generation.options import GenerationOptions
from llava_star.generation.prompts import direct_prompt, hint_prompt
from llava_star.generation.sample_stream import PendingSample, SampleFile, VideoReader, chunks, in_batches
from llava_star.generation.shards import RunCounts, ShardWriter

if TYPE_CHECKING:
    from llava_star.verify import Verdict


def answer_directly(
    items: Sequence[PendingSample], answerer: Answerer, writer: ShardWriter, options: GenerationOptions
) -> list[PendingSample]:
    """Ask the question as is; write what passed (or everything); return what to rationalize."""
    from llava_star.verify import verify

    if not items:
        return []
    replies = answerer.replies([direct_prompt(item.sample.question) for item in items], [item.frames for item in items])
    verdicts = [
        verify(reply.text, item.sample.labels, truncated=reply.truncated)
        for item, reply in zip(items, replies, strict=True)
    ]
    grounded = check_grounding(items, verdicts, answerer, options)
    failed = []
    for item, reply, verdict, flag in zip(items, replies, verdicts, grounded, strict=True):
        if verdict.passed or not options.rationalize:
            writer.finished(item, reply, verdict, rationalized=False, grounded=flag)
        else:
            failed.append(item)
    return failed


def check_grounding(
    items: Sequence[PendingSample], verdicts: Sequence[Verdict], answerer: Answerer, options: GenerationOptions
) -> list[bool | None]:
    """Per item: the grounding check's verdict on a kept answer (None: not checked)."""
    if options.grounding_check == "none":
        return [None] * len(items)
    kept = [index for index, verdict in enumerate(verdicts) if verdict.passed]
    flags = grounded_flags([items[index] for index in kept], answerer, options.grounding_check, seed=options.seed)
    out: list[bool | None] = [None] * len(items)
    for index, flag in zip(kept, flags, strict=True):
        out[index] = flag
    return out


def rationalize(
    items: Sequence[PendingSample], answerer: Answerer, writer: ShardWriter, options: GenerationOptions
) -> None:
    """Ask again with the gold labels as a hint; the stored question stays the original.

    The grounding check asks the ORIGINAL question (no hint) without the video's content.
    """
    from llava_star.verify import verify

    prompts = [hint_prompt(item.sample.question, item.sample.labels) for item in items]
    replies = answerer.replies(prompts, [item.frames for item in items])
    verdicts = [
        verify(reply.text, item.sample.labels, rationalized=True, truncated=reply.truncated)
        for item, reply in zip(items, replies, strict=True)
    ]
    grounded = check_grounding(items, verdicts, answerer, options)
    for item, reply, verdict, flag in zip(items, replies, verdicts, grounded, strict=True):
        writer.finished(item, reply, verdict, rationalized=True, grounded=flag)


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
    waiting += answer_directly(decoded, answerer, writer, options)
    while len(waiting) >= options.batch_size:
        rationalize(waiting[: options.batch_size], answerer, writer, options)
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
            rationalize(waiting, answerer, writer, options)
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
