"""Stages 2-4: answer every sample with reasoning, verify, rationalize the failures.

    llava-star generate --model M --samples S.jsonl --video-root DIR -o OUT_DIR
    torchrun --nproc_per_node 8 -m llava_star generate --model M ...   # same, sharded by rank

Each process takes every WORLD_SIZE-th sample of the file (by position), decodes videos in
DataLoader workers while the model generates, answers a batch with the direct prompt,
verifies each answer, and queues the failures; once a batch worth of failures is queued
it asks them again with the gold label as a hint (rationalization) and verifies again.
A sample is written, as one line of this rank's shard, only when it is finished, so a
run killed at any moment loses nothing but unfinished batches, and a rerun of the same
command skips every id already written by any rank of any earlier layout. A video that
cannot be decoded becomes a line of the failures file with the reason, never a
substitute sample. The rationalized answer is stored with the ORIGINAL question: the
hint is only ever in the prompt.

Outputs in OUT_DIR: ``generations.rankRRRRR-of-WWWWW.jsonl`` (Generation lines),
``failures.rankRRRRR-of-WWWWW.jsonl`` (``{"id", "video", "reason"}``), ``config.json``
(the resolved config), ``summary.json`` (totals over every shard on disk and this run's
speed).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llava_star.config import add_config_flags, config_from_flags
from llava_star.distributed import (
    DEFAULT_DDP_TIMEOUT,
    ProcessContext,
    device_for,
    engine_gpus,
    process_context,
    process_group,
    shard,
    store_group,
)
from llava_star.errors import ConfigError, RecordError, VideoError
from llava_star.generation.answerer import Answerer, ModelAnswerer, Reply  # noqa: F401 (scripts and tests import it here)
from llava_star.generation.prompts import direct_prompt, hint_prompt
from llava_star.models.loading import VIDEO_TOKEN_BUDGET
from llava_star.records import (
    Generation,
    JsonlAppender,
    Sample,
    dumps_line,
    format_kept,
    jsonl_lines,
    kept_counts,
    parse_jsonl_lines,
    write_json_atomic,
    written_ids,
)
from llava_star.runs import GenerationDir, exclusive_directory_for_job

if TYPE_CHECKING:
    from llava_star.media.video import Frames
    from llava_star.verify import Verdict

logger = logging.getLogger(__name__)

FSYNC_EVERY = 512  # lines between flushes to disk of a generations shard


@dataclass(frozen=True, kw_only=True)
class GenerationOptions:
    """How answers are generated, whatever is answered: the cycle's ``generate`` section too."""

    batch_size: int = 8
    num_frames: int = 8
    max_new_tokens: int = 512
    temperature: float = 0.0  # 0 is greedy; the paper's code samples at 0.2
    top_p: float = 1.0  # with temperature > 0; the checkpoint's generation_config is not used
    top_k: int = 0  # 0: no top-k filter
    video_token_budget: int | None = VIDEO_TOKEN_BUDGET  # Qwen-VL video tokens per video; null: the checkpoint's
    rationalize: bool = True
    num_workers: int = 2
    dtype: str = "auto"
    device: str = "auto"
    attn_implementation: str | None = None
    seed: int = 0
    backend: str = "hf"  # hf, vllm, or auto: vllm where it is installed and serves the family
    tensor_parallel_size: int = 1  # vllm: GPUs per engine (each torchrun rank runs one engine)
    gpu_memory_utilization: float = 0.9  # vllm: fraction of each GPU the engine may take
    max_model_len: int | None = None  # vllm: context length; null: the checkpoint's
    # seconds a collective may wait for the other ranks (transformers' TrainingArguments name);
    # the backends' defaults (NCCL 10 min) kill a rank that waits for a slower one's model load
    ddp_timeout: int = DEFAULT_DDP_TIMEOUT

    def __post_init__(self) -> None:
        from llava_star.generation.backends import BACKENDS

        if self.backend not in BACKENDS:
            raise ConfigError(f"backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}")
        for key in ("batch_size", "num_frames", "max_new_tokens", "tensor_parallel_size", "ddp_timeout"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"gpu_memory_utilization: must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ConfigError(f"max_model_len: must be >= 1 or null, got {self.max_model_len}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.video_token_budget is not None and self.video_token_budget < 1:
            raise ConfigError(f"video_token_budget: must be >= 1 or null, got {self.video_token_budget}")
        for key in ("num_workers", "temperature", "top_k"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: must be >= 0, got {getattr(self, key)}")


@dataclass(frozen=True, kw_only=True)
class GenerateConfig(GenerationOptions):
    """Everything a generation run depends on; written to OUT_DIR/config.json."""

    model: str
    samples: str
    video_root: str
    output_dir: str
    cycle: int = 0
    limit: int | None = None  # only the first N samples of the file

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cycle < 0:
            raise ConfigError(f"cycle: must be >= 0, got {self.cycle}")
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"limit: must be >= 0, got {self.limit}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


VideoReader = Callable[[Sample], "Frames"]  # raises VideoError for a video it cannot decode


@dataclass(frozen=True)
class _Item:
    """A sample with its decoded frames, or the reason they could not be decoded."""

    sample: Sample
    frames: Frames | None = None
    error: str | None = None


def frame_reader(video_root: str | os.PathLike[str], num_frames: int) -> VideoReader:
    """Decode a sample's clip with ``llava_star.media.video`` (raises ``VideoError``)."""
    from llava_star.media.video import read_frames, resolve_video_path

    def read(sample: Sample) -> Frames:
        path = resolve_video_path(video_root, sample.video)
        return read_frames(path, num_frames, start=sample.start, end=sample.end)

    return read


def _my_lines(
    config: GenerateConfig, context: ProcessContext, worker_id: int = 0, num_workers: int = 1
) -> Iterator[tuple[int, bytes]]:
    """The unparsed lines of this rank (and DataLoader worker), so nobody parses another's lines."""
    lines = itertools.islice(jsonl_lines(config.samples), config.limit)
    return shard(shard(lines, context.rank, context.world_size), worker_id, num_workers)


@dataclass(frozen=True)
class _Chunk:
    """A batch of decoded pending samples of one DataLoader worker, sent to the main process in one piece.

    ``lines`` counts the lines of this rank's share that went into the chunk, finished
    ones included, so progress moves through the whole share. ``error`` is a bad line's
    ``RecordError`` (naming file:line), carried as data so that the main process raises
    it as it is rather than as a worker's traceback.
    """

    items: list[_Item]
    lines: int
    error: RecordError | None = None


def _decoded_chunks(
    config: GenerateConfig,
    context: ProcessContext,
    done: set[str],
    read_video: VideoReader,
) -> Iterator[_Chunk]:
    """This worker's pending samples with their frames, a batch at a time; runs in DataLoader
    workers. Each line is parsed and validated here, once, by the only process that uses it."""
    import torch.utils.data

    worker = torch.utils.data.get_worker_info()
    worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
    lines = _my_lines(config, context, worker_id, num_workers)
    samples = parse_jsonl_lines(config.samples, lines, Sample.from_dict)
    items: list[_Item] = []
    consumed = 0
    try:
        for sample in samples:
            consumed += 1
            if sample.id in done:
                continue
            items.append(_decoded(sample, read_video))
            if len(items) == config.batch_size:
                yield _Chunk(items, consumed)
                items, consumed = [], 0
    except RecordError as error:
        yield _Chunk(items, consumed, error=error)
        return
    if consumed:
        yield _Chunk(items, consumed)


def _decoded(sample: Sample, read_video: VideoReader) -> _Item:
    try:
        return _Item(sample, frames=read_video(sample))
    except VideoError as error:
        return _Item(sample, error=str(error))


def _as_sent(chunk: _Chunk) -> _Chunk:
    """The DataLoader's collate step: a chunk is already what the main process needs."""
    return chunk


def _chunks(
    config: GenerateConfig, context: ProcessContext, done: set[str], read_video: VideoReader
) -> Iterator[_Chunk]:
    """Chunks of decoded samples; the workers decode the next chunks during generation."""
    import torch.utils.data

    if config.num_workers == 0:
        # without workers a DataLoader only adds its per-item fetch machinery: nothing to overlap,
        # and nothing to transfer, so each batch is decoded just before it is generated
        return _decoded_chunks(config, context, done, read_video)

    class Chunks(torch.utils.data.IterableDataset):
        def __iter__(self) -> Iterator[_Chunk]:
            return _decoded_chunks(config, context, done, read_video)

    loader = torch.utils.data.DataLoader(
        Chunks(),
        batch_size=None,  # the workers send whole batches: one transfer per batch, not per sample
        num_workers=config.num_workers,
        collate_fn=_as_sent,
        prefetch_factor=4,  # batches waiting per worker
        # forked workers inherit the sample stream and the video reader as they are (no
        # pickling of closures), and they never touch CUDA: they only decode
        multiprocessing_context="fork",
    )
    return iter(loader)


def _in_batches(items: Iterator[_Item], size: int) -> Iterator[list[_Item]]:
    """Consecutive lists of ``size`` items (the last may be shorter).

    >>> list(_in_batches(iter("abcde"), 2))
    [['a', 'b'], ['c', 'd'], ['e']]
    """
    while batch := list(itertools.islice(items, size)):
        yield batch


def _share_size(config: GenerateConfig, context: ProcessContext) -> int:
    """Lines in this rank's share (finished or not): the progress bar's total, counted unparsed."""
    return sum(1 for _ in _my_lines(config, context))


@dataclass
class _RunCounts:
    """What this process did in this run (totals over all runs come from the files)."""

    finished: int = 0
    kept: int = 0
    rationalized: int = 0
    kept_rationalized: int = 0
    video_failures: int = 0

    def record(self, generation: Generation) -> None:
        self.finished += 1
        self.kept += generation.passed
        self.rationalized += generation.rationalized
        self.kept_rationalized += generation.passed and generation.rationalized


class _ShardWriter:
    """This rank's generations and failures files, and its counts."""

    def __init__(self, config: GenerateConfig, context: ProcessContext) -> None:
        out = GenerationDir(Path(config.output_dir))
        self.config = config
        # A killed process loses nothing written (the page cache outlives it); fsync only
        # bounds what a power loss can take, so it need not cost a disk flush every few lines.
        self.generations = JsonlAppender(
            out.generations_shard(context.rank, context.world_size), fsync_every=FSYNC_EVERY
        )
        self.failures = JsonlAppender(out.failures_shard(context.rank, context.world_size))
        self.counts = _RunCounts()
        self._unwritten: list[bytes] = []  # this batch's finished samples, written together

    def finished(self, item: _Item, reply: Reply, verdict: Verdict, *, rationalized: bool) -> None:
        generation = Generation(
            sample=item.sample,
            answer=reply.text,
            rationalized=rationalized,
            passed=verdict.passed,
            checks=tuple(verdict.to_dict()["checks"]),
            cycle=self.config.cycle,
            model=self.config.model,
            truncated=reply.truncated,
        )
        self._unwritten.append(dumps_line(generation))
        self.counts.record(generation)

    def write_finished(self) -> None:
        """Append the finished samples held so far, in one system call per few hundred lines."""
        self.generations.write_lines(self._unwritten)
        self._unwritten.clear()

    def failed(self, item: _Item) -> None:
        self.failures.write({"id": item.sample.id, "video": item.sample.video, "reason": item.error})
        self.counts.video_failures += 1

    def close(self) -> None:
        self.write_finished()
        self.generations.close()
        self.failures.close()


def _answer_directly(
    items: Sequence[_Item], answerer: Answerer, writer: _ShardWriter, *, rationalize: bool
) -> list[_Item]:
    """Ask the question as is; write what passed (or everything); return what to rationalize."""
    from llava_star.verify import verify

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


def _rationalize(items: Sequence[_Item], answerer: Answerer, writer: _ShardWriter) -> None:
    """Ask again with the gold labels as a hint; the stored question stays the original."""
    from llava_star.verify import verify

    prompts = [hint_prompt(item.sample.question, item.sample.labels) for item in items]
    replies = answerer.replies(prompts, [item.frames for item in items])
    for item, reply in zip(items, replies, strict=True):
        verdict = verify(reply.text, item.sample.labels, rationalized=True, truncated=reply.truncated)
        writer.finished(item, reply, verdict, rationalized=True)


def _generate_shard(
    config: GenerateConfig,
    context: ProcessContext,
    answerer: Answerer,
    read_video: VideoReader,
    done: set[str],
) -> _RunCounts:
    from tqdm import tqdm

    writer = _ShardWriter(config, context)
    waiting: list[_Item] = []  # failed direct answers, rationalized a full batch at a time
    # one bar, on rank 0; None hides it when stderr is not a terminal
    progress = tqdm(
        total=_share_size(config, context),
        unit="sample",
        desc=f"cycle {config.cycle}",
        disable=None if context.is_main else True,
    )
    try:
        for chunk in _chunks(config, context, done, read_video):
            for batch in _in_batches(iter(chunk.items), config.batch_size):
                _generate_batch(config, batch, waiting, answerer, writer)
                _show_progress(progress, writer.counts, len(batch))
            progress.update(chunk.lines - len(chunk.items))  # lines finished by an earlier run
            if chunk.error is not None:  # the samples before the bad line are written: a rerun skips them
                raise chunk.error
        if waiting:
            _rationalize(waiting, answerer, writer)
            _show_progress(progress, writer.counts, 0)
    finally:
        progress.close()
        writer.close()
    return writer.counts


def _generate_batch(
    config: GenerateConfig, batch: list[_Item], waiting: list[_Item], answerer: Answerer, writer: _ShardWriter
) -> None:
    """Answer a batch, queue its failures in ``waiting``, rationalize full batches of them, write."""
    for item in batch:
        if item.error is not None:
            writer.failed(item)
    decoded = [item for item in batch if item.error is None]
    waiting += _answer_directly(decoded, answerer, writer, rationalize=config.rationalize)
    while len(waiting) >= config.batch_size:
        _rationalize(waiting[: config.batch_size], answerer, writer)
        del waiting[: config.batch_size]
    writer.write_finished()


def _show_progress(progress: Any, counts: _RunCounts, advanced: int) -> None:
    progress.update(advanced)
    if counts.finished:
        progress.set_postfix(
            kept=f"{counts.kept / counts.finished:.0%}",
            rationalized=f"{counts.rationalized / counts.finished:.0%}",
            refresh=False,
        )


def summarize(output_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Totals over every shard on disk, whichever runs and rank layouts wrote them."""
    directory = GenerationDir(Path(output_dir))
    return {**kept_counts(directory.generations()), "video_failures": len(directory.video_failures())}


def _this_run(directory: GenerationDir, context: ProcessContext) -> dict[str, Any]:
    """This run's counts summed over ranks; speed from the slowest rank (they run together)."""
    import json

    per_rank = [json.loads(directory.run_stats(rank, context.world_size).read_text()) for rank in range(context.world_size)]
    run = {key: sum(stats[key] for stats in per_rank) for key in dataclasses.asdict(_RunCounts())}
    seconds = max(stats["seconds"] for stats in per_rank)
    run.update(processes=context.world_size, seconds=round(seconds, 3))
    run["samples_per_second"] = round((run["finished"] + run["video_failures"]) / seconds, 3) if seconds else 0.0
    return run


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
    context = process_context()
    if not Path(config.video_root).is_dir():
        # every sample would become a failure line, and a rerun with the right root would skip them
        raise ConfigError(f"video_root: {config.video_root} is not a directory")
    directory = GenerationDir(Path(config.output_dir))
    family = backend = None
    if answerer is None:
        from llava_star.generation.backends import choose_backend
        from llava_star.models.loading import model_family

        family = model_family(config.model)
        backend = choose_backend(config.backend, family)
    with _ranks_together(config, context, backend) as ranks, \
            exclusive_directory_for_job(directory.path, "generate", context, ranks.broadcast):  # fmt: skip
        if context.is_main:
            write_json_atomic(directory.config, {**config.to_dict(), "world_size": context.world_size})
        done = written_ids(directory.generation_shards() + directory.failure_shards())
        if answerer is None:
            from llava_star.generation.backends import build_answerer

            answerer = build_answerer(config.model, config, backend=backend, family=family, device=ranks.device)
        read_video = read_video or frame_reader(config.video_root, config.num_frames)
        started = time.perf_counter()
        counts = _generate_shard(config, context, answerer, read_video, done)
        stats = {**dataclasses.asdict(counts), "seconds": time.perf_counter() - started}
        write_json_atomic(directory.run_stats(context.rank, context.world_size), stats)
        ranks.barrier()
        summary: dict[str, Any] = {}
        if context.is_main:
            summary = {**summarize(directory.path), "this_run": _this_run(directory, context)}
            summary.update(model=config.model, cycle=config.cycle, backend=backend or "given")
            write_json_atomic(directory.summary, summary)
            logger.info("%s in %s, %d videos failed", format_kept(summary), directory.path, summary["video_failures"])
    return summary


@dataclass(frozen=True)
class _Ranks:
    """This rank's device and how the ranks meet: a barrier, and rank 0's value to all
    (``None``: over the process group)."""

    device: str
    barrier: Callable[[], None]
    broadcast: Callable[[str | None], str | None] | None = None


@contextmanager
def _ranks_together(config: GenerateConfig, context: ProcessContext, backend: str | None) -> Iterator[_Ranks]:
    """The ranks of this run, met in the way the backend that will answer allows.

    A vLLM engine sets up torch.distributed for itself, so its ranks meet through the store
    alone, and each rank's engine sees only its own GPUs (set before anything touches CUDA).
    """
    if backend == "vllm":
        if context.is_distributed:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = engine_gpus(context, config.tensor_parallel_size, visible)
        group = store_group(context)
        yield _Ranks("engine", group.barrier, group.broadcast)
        return
    device = device_for(context, config.device)
    # The last wait is for the slowest rank's share, which may take hours longer than the
    # fastest one's: the group's barrier polls its store, so no timeout ends it (torchrun
    # stops every rank when one fails, so a crashed rank is not waited for).
    with process_group(context, device, timeout=datetime.timedelta(seconds=config.ddp_timeout)) as barrier:
        yield _Ranks(device, barrier)


_FLAG_HELP = {
    "model": "hub id or directory of a supported video LVLM",
    "samples": "samples JSONL (llava-star prepare / synthetic)",
    "video_root": "directory the samples' video paths are relative to",
    "output_dir": "directory for the shards and summary",
    "num_frames": "frames sampled per video (Video-LLaVA: 8)",
    "temperature": "0 for greedy decoding",
    "rationalize": "ask failed samples again with the label as a hint (--no-rationalize: direct answers only)",
    "cycle": "self-training cycle number stored in each line",
    "num_workers": "DataLoader processes decoding videos",
    "dtype": "auto, float32, bfloat16 or float16",
    "device": "auto (this rank's GPU, else CPU), cpu, cuda:N",
    "attn_implementation": "flash_attention_2, sdpa or eager (default: flash_attention_2 when usable, else sdpa)",
    "seed": "seed of sampling when --temperature > 0",
    "backend": "hf (transformers generate), vllm (LLaVA-NeXT-Video, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL), "
    "or auto (vllm where installed and supported, else hf)",
    "tensor_parallel_size": "vllm: GPUs per engine; torchrun ranks x this = GPUs used",
    "gpu_memory_utilization": "vllm: fraction of each GPU the engine may take",
    "max_model_len": "vllm: context length (default: the checkpoint's)",
    "limit": "only the first N samples of the file",
    "ddp_timeout": "torchrun on the HF backend: seconds a collective waits for the other ranks "
    "(the final wait for the slowest rank has no limit)",
}


def parse_args(argv: list[str] | None) -> GenerateConfig:
    parser = argparse.ArgumentParser(
        prog="llava-star generate",
        description="Answer samples with step-by-step reasoning, verify, rationalize the failures.",
    )
    parser.add_argument("--config", help="YAML of GenerateConfig keys (what the cycle writes for a launcher)")
    add_config_flags(parser, GenerateConfig, help=_FLAG_HELP, flags={"output_dir": ("-o", "--output-dir")})
    args = parser.parse_args(argv)
    return config_from_flags(GenerateConfig, args, getattr(args, "config", None))


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0
