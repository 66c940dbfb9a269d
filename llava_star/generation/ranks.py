"""How the ranks of a generation run meet, in the way the backend that answers allows."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from llava_star.distributed import ProcessContext, device_for, engine_gpus, process_group, store_group
from llava_star.generation.options import GenerationOptions


@dataclass(frozen=True)
class Ranks:
    """This rank's device and how the ranks meet: a barrier, and rank 0's value to all
    (``None``: over the process group)."""

    device: str
    barrier: Callable[[], None]
    broadcast: Callable[[str | None], str | None] | None = None


@contextmanager
def ranks_together(options: GenerationOptions, context: ProcessContext, backend: str | None) -> Iterator[Ranks]:
    """The ranks of this run, met in the way the backend that will answer allows.

    A vLLM engine sets up torch.distributed for itself, so its ranks meet through the store
    alone, and each rank's engine sees only its own GPUs (set before anything touches CUDA).
    """
    if backend == "vllm":
        if context.is_distributed:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = engine_gpus(context, options.tensor_parallel_size, visible)
        group = store_group(context)
        yield Ranks("engine", group.barrier, group.broadcast)
        return
    device = device_for(context, options.device)
    # The last wait is for the slowest rank's share, which may take hours longer than the
    # fastest one's: the group's barrier polls its store, so no timeout ends it (torchrun
    # stops every rank when one fails, so a crashed rank is not waited for).
    with process_group(context, device, timeout=datetime.timedelta(seconds=options.ddp_timeout)) as barrier:
        yield Ranks(device, barrier)
