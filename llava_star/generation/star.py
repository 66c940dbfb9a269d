"""Video-STaR steps 2-4 on one rank's share: answer, verify, rationalize the failures, write.

A batch is answered with the direct prompt and each answer verified; the failures are
queued, and once a batch worth of them is waiting they are asked again with the gold label
as a hint (rationalization) and verified again. The rationalized answer is stored with the
ORIGINAL question: the hint is only ever in the prompt. With a grounding check
(``generation.grounding``), kept answers wait in the same way until a batch worth of them
can be asked again without the video's content; each line records whether that answer
failed (``grounded``).
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import TYPE_CHECKING, Any

from llava_star.distributed import ProcessContext
from llava_star.generation.answerer import Answerer, Reply
from llava_star.generation.grounding import grounded_flags
from llava_star.generation.options import GenerationOptions
from llava_star.generation.prompts import direct_prompt, hint_prompt
from llava_star.generation.sample_stream import PendingSample, SampleFile, VideoReader, chunks, in_batches
from llava_star.generation.shards import RunCounts, ShardWriter
from llava_star.verify import verify

if TYPE_CHECKING:
    from llava_star.verify import Verdict


class GroundingQueue:
    """Finished answers on their way to the shard; with a grounding check, the kept ones wait
    here and are asked again a full batch at a time (as failures wait for rationalization),
    so the check's generate calls are as full as the direct ones."""

    def __init__(self, options: GenerationOptions, answerer: Answerer, writer: ShardWriter) -> None:
        self.options, self.answerer, self.writer = options, answerer, writer
        self.waiting: list[tuple[PendingSample, Reply, Verdict, bool]] = []

    def finished(self, item: PendingSample, reply: Reply, verdict: Verdict, *, rationalized: bool) -> None:
        if self.options.grounding_check == "none" or not verdict.passed:
            self.writer.finished(item, reply, verdict, rationalized=rationalized)
        else:
            self.waiting.append((item, reply, verdict, rationalized))

    def check(self, *, everything: bool = False) -> None:
        """Check full batches of waiting answers (every one with ``everything``) and write them."""
        size = self.options.batch_size
        while len(self.waiting) >= size or (everything and self.waiting):
            batch = self.waiting[:size]
            del self.waiting[:size]
            items = [item for item, _, _, _ in batch]
            flags = grounded_flags(items, self.answerer, self.options.grounding_check, seed=self.options.seed)
            for (item, reply, verdict, rationalized), flag in zip(batch, flags, strict=True):
                self.writer.finished(item, reply, verdict, rationalized=rationalized, grounded=flag)


def answer_directly(
    items: Sequence[PendingSample], answerer: Answerer, finish: GroundingQueue, *, rationalize: bool
) -> list[PendingSample]:
    """Ask the question as is; finish what passed (or everything); return what to rationalize."""

    if not items:
        return []
    replies = answerer.replies([direct_prompt(item.sample.question) for item in items], [item.frames for item in items])
    failed = []
    for item, reply in zip(items, replies, strict=True):
        verdict = verify(reply.text, item.sample.labels, truncated=reply.truncated)
        if verdict.passed or not rationalize:
            finish.finished(item, reply, verdict, rationalized=False)
        else:
            failed.append(item)
    return failed


def rationalize(items: Sequence[PendingSample], answerer: Answerer, finish: GroundingQueue) -> None:
    """Ask again with the gold labels as a hint; the stored question stays the original.

    The grounding check asks the ORIGINAL question (no hint) without the video's content.
    """

    prompts = [hint_prompt(item.sample.question, item.sample.labels) for item in items]
    replies = answerer.replies(prompts, [item.frames for item in items])
    for item, reply in zip(items, replies, strict=True):
        verdict = verify(reply.text, item.sample.labels, rationalized=True, truncated=reply.truncated)
        finish.finished(item, reply, verdict, rationalized=True)


def generate_batch(
    options: GenerationOptions,
    batch: list[PendingSample],
    waiting: list[PendingSample],
    answerer: Answerer,
    finish: GroundingQueue,
) -> None:
    """Answer a batch, queue its failures in ``waiting``, rationalize full batches of them,
    check full batches of kept answers, write."""
    for item in batch:
        if item.error is not None:
            finish.writer.failed(item)
    decoded = [item for item in batch if item.error is None]
    waiting += answer_directly(decoded, answerer, finish, rationalize=options.rationalize)
    while len(waiting) >= options.batch_size:
        rationalize(waiting[: options.batch_size], answerer, finish)
        del waiting[: options.batch_size]
    finish.check()
    finish.writer.write_finished()


def generate_shard(
    options: GenerationOptions,
    source: SampleFile,
    context: ProcessContext,
    answerer: Answerer,
    read_video: VideoReader,
    done: Container[str],
    writer: ShardWriter,
) -> RunCounts:
    """Every pending sample of this rank's share, finished and written; closes ``writer``."""
    from tqdm import tqdm

    waiting: list[PendingSample] = []  # failed direct answers, rationalized a full batch at a time
    finish = GroundingQueue(options, answerer, writer)  # kept answers waiting for the grounding check
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
                generate_batch(options, batch, waiting, answerer, finish)
                _show_progress(progress, writer.counts, len(batch))
            progress.update(chunk.lines - len(chunk.items))  # lines finished by an earlier run
            if chunk.error is not None:  # the samples before the bad line are written: a rerun skips them
                raise chunk.error
        if waiting:
            rationalize(waiting, answerer, finish)
        if waiting or finish.waiting:
            finish.check(everything=True)
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
