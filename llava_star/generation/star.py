"""Video-STaR steps 2-4 on one rank's share: answer, verify, rationalize the failures, write.

A batch is answered with the direct prompt and each answer verified; the failures are
queued, and once a batch worth of them is waiting they are asked again with the gold label
as a hint (rationalization) and verified again. The rationalized answer is stored with the
ORIGINAL question: the hint is only ever in the prompt. With a grounding check
(``generation.grounding``), kept answers wait in the same way until a batch worth of them
can be asked again without the video's content; each line records whether that answer
failed (``grounded``).

With ``num_answers`` K > 1 (sampling), each question gets K answers, each verified; a
sample is kept when any passes, and the line's ``answer`` is the first that passed (direct
answers first), so SFT trains one answer per question as before. A sample none of whose
K direct answers passed is rationalized with K answers too. Whenever a sample got more
than one answer (K > 1, or a failed direct answer and its rationalization), the line's
``answers`` lists every one with its verdict, in the order asked: the failing ones are
the rejected side of preference pairs (``export --format dpo``). Hint prompts are never
stored, only the answers to them.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llava_star.distributed import ProcessContext
from llava_star.generation.answerer import Answerer, Reply, reply_sets
from llava_star.generation.grounding import grounded_flags
from llava_star.generation.options import GenerationOptions
from llava_star.generation.prompts import direct_prompt, hint_prompt
from llava_star.generation.sample_stream import PendingSample, SampleFile, VideoReader, chunks, in_batches
from llava_star.generation.shards import RunCounts, ShardWriter
from llava_star.verify import verify

if TYPE_CHECKING:
    from llava_star.verify import Verdict


@dataclass(frozen=True)
class Answered:
    """One answer to a sample's question, its verdict, and whether the hint prompt asked it."""

    reply: Reply
    verdict: Verdict
    rationalized: bool

    def to_dict(self) -> dict[str, Any]:
        """The line's ``answers`` entry (``records.ANSWER_FIELDS``)."""
        return {
            "answer": self.reply.text,
            "rationalized": self.rationalized,
            "passed": self.verdict.passed,
            "checks": self.verdict.to_dict()["checks"],
            "truncated": self.reply.truncated,
        }


def trained_answer(answers: Sequence[Answered]) -> Answered:
    """The answer a line stores as ``answer``: the first that passed, in the order asked
    (direct answers before rationalized ones); when none passed, the first answer of the
    last round asked (the rationalized one when there was one): what one answer per
    question always stored."""
    for answer in answers:
        if answer.verdict.passed:
            return answer
    last_round = answers[-1].rationalized
    return next(answer for answer in answers if answer.rationalized == last_round)


class GroundingQueue:
    """Finished answers on their way to the shard; with a grounding check, the kept ones wait
    here and are asked again a full batch at a time (as failures wait for rationalization),
    so the check's generate calls are as full as the direct ones."""

    def __init__(self, options: GenerationOptions, answerer: Answerer, writer: ShardWriter) -> None:
        self.options, self.answerer, self.writer = options, answerer, writer
        self.waiting: list[tuple[PendingSample, Sequence[Answered]]] = []

    def finished(self, item: PendingSample, answers: Sequence[Answered]) -> None:
        if self.options.grounding_check == "none" or not trained_answer(answers).verdict.passed:
            self._write(item, answers)
        else:
            self.waiting.append((item, answers))

    def check(self, *, everything: bool = False) -> None:
        """Check full batches of waiting answers (every one with ``everything``) and write them."""
        size = self.options.batch_size
        while len(self.waiting) >= size or (everything and self.waiting):
            batch = self.waiting[:size]
            del self.waiting[:size]
            items = [item for item, _ in batch]
            flags = grounded_flags(items, self.answerer, self.options.grounding_check, seed=self.options.seed)
            for (item, answers), flag in zip(batch, flags, strict=True):
                self._write(item, answers, grounded=flag)

    def _write(self, item: PendingSample, answers: Sequence[Answered], grounded: bool | None = None) -> None:
        """The line of a finished sample: its trained answer, and every answer when there were several."""
        chosen = trained_answer(answers)
        self.writer.finished(
            item,
            chosen.reply,
            chosen.verdict,
            rationalized=chosen.rationalized,
            grounded=grounded,
            answers=tuple(answer.to_dict() for answer in answers) if len(answers) > 1 else None,
        )


def verified(item: PendingSample, replies: Sequence[Reply], *, rationalized: bool) -> list[Answered]:
    """Each reply to ``item``'s question with its verdict."""
    return [
        Answered(
            reply,
            verify(reply.text, item.sample.labels, rationalized=rationalized, truncated=reply.truncated),
            rationalized,
        )
        for reply in replies
    ]


def answer_directly(
    items: Sequence[PendingSample], answerer: Answerer, finish: GroundingQueue, options: GenerationOptions
) -> list[tuple[PendingSample, list[Answered]]]:
    """Ask the question as is (``num_answers`` times); finish what passed (or everything);
    return what to rationalize, with its failed answers."""

    if not items:
        return []
    prompts = [direct_prompt(item.sample.question) for item in items]
    reply_lists = reply_sets(answerer, prompts, [item.frames for item in items], options.num_answers)
    failed = []
    for item, replies in zip(items, reply_lists, strict=True):
        answers = verified(item, replies, rationalized=False)
        if any(answer.verdict.passed for answer in answers) or not options.rationalize:
            finish.finished(item, answers)
        else:
            failed.append((item, answers))
    return failed


def rationalize(
    waiting: Sequence[tuple[PendingSample, list[Answered]]],
    answerer: Answerer,
    finish: GroundingQueue,
    options: GenerationOptions,
) -> None:
    """Ask again with the gold labels as a hint; the stored question stays the original, and
    the failed direct answers are stored beside the rationalized ones.

    The grounding check asks the ORIGINAL question (no hint) without the video's content.
    """

    items = [item for item, _ in waiting]
    prompts = [hint_prompt(item.sample.question, item.sample.labels) for item in items]
    reply_lists = reply_sets(answerer, prompts, [item.frames for item in items], options.num_answers)
    for (item, direct), replies in zip(waiting, reply_lists, strict=True):
        finish.finished(item, [*direct, *verified(item, replies, rationalized=True)])


def generate_batch(
    options: GenerationOptions,
    batch: list[PendingSample],
    waiting: list[tuple[PendingSample, list[Answered]]],
    answerer: Answerer,
    finish: GroundingQueue,
) -> None:
    """Answer a batch, queue its failures in ``waiting``, rationalize full batches of them,
    check full batches of kept answers, write."""
    for item in batch:
        if item.error is not None:
            finish.writer.failed(item)
    decoded = [item for item in batch if item.error is None]
    waiting += answer_directly(decoded, answerer, finish, options)
    while len(waiting) >= options.batch_size:
        rationalize(waiting[: options.batch_size], answerer, finish, options)
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

    waiting: list[
        tuple[PendingSample, list[Answered]]
    ] = []  # failed direct answers, rationalized a full batch at a time
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
            rationalize(waiting, answerer, finish, options)
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
