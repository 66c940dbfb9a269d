"""Which process this is, which share of the work is its own, and where it writes.

Under ``torchrun`` (one node or many) every process runs the same command; RANK,
WORLD_SIZE and LOCAL_RANK tell them apart. Work is split by position in the input
(sample i goes to rank i mod world size), which every rank computes alike from the same
file without talking to the others; each rank appends to its own shard file, so no two
processes ever write the same file. The process group is only needed for the final
barrier (so rank 0 summarises once every shard is complete).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")


@dataclass(frozen=True)
class ProcessContext:
    """This process's place among the ``world_size`` processes of a run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def process_context() -> ProcessContext:
    """Read the rank layout torchrun (or accelerate, deepspeed) puts in the environment."""
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    return ProcessContext(rank=rank, world_size=world_size, local_rank=local_rank)


def shard(items: Iterable[ItemT], rank: int, world_size: int) -> Iterator[ItemT]:
    """The items at positions ``rank``, ``rank + world_size``, ... (streamed, not copied).

    >>> list(shard("abcdefg", 1, 3))
    ['b', 'e']
    """
    return itertools.islice(items, rank, None, world_size)


def device_for(context: ProcessContext, device: str) -> str:
    """``auto`` under torchrun on GPUs is this process's own GPU (``cuda:LOCAL_RANK``)."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return f"cuda:{context.local_rank % torch.cuda.device_count()}"
        return "cpu"
    return device


def process_group_options(context: ProcessContext, device: str) -> dict[str, Any]:
    """``init_process_group`` keywords: nccl bound to this process's GPU (``device_id``,
    so NCCL need not guess the device from the rank), or gloo on CPUs.

    >>> process_group_options(ProcessContext(rank=1, world_size=2, local_rank=1), "cpu")
    {'backend': 'gloo'}
    """
    if not device.startswith("cuda"):
        return {"backend": "gloo"}
    import torch

    index = int(device.partition(":")[2] or context.local_rank)
    return {"backend": "nccl", "device_id": torch.device("cuda", index)}


@contextmanager
def process_group(context: ProcessContext, device: str) -> Iterator[None]:
    """Join the run's process group for the duration (nccl on GPUs, gloo on CPUs)."""
    import torch.distributed as dist

    if not context.is_distributed or dist.is_initialized():
        yield
        return
    options = process_group_options(context, device)
    if "device_id" in options:
        import torch

        torch.cuda.set_device(options["device_id"])  # NCCL's communicator and every default CUDA op on it
    backend = options["backend"]
    dist.init_process_group(rank=context.rank, world_size=context.world_size, **options)
    logger.debug("rank %d of %d joined the %s process group", context.rank, context.world_size, backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op when running alone)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
