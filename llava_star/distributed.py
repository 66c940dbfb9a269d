"""Which process this is, which share of the work is its own, and where it writes.

Under ``torchrun`` (one node or many) every process runs the same command; RANK,
WORLD_SIZE and LOCAL_RANK tell them apart. Work is split by position in the input
(sample i goes to rank i mod world size), which every rank computes alike from the same
file without talking to the others; each rank appends to its own shard file, so no two
processes ever write the same file. The ranks meet twice: at the start (who holds the
output) and at the end (so rank 0 summarises once every shard is complete). The final wait
is a barrier on the run's key-value store, which has no timeout: ranks may finish hours
apart, and a collective would kill the early ones when its timeout ran out.
"""

from __future__ import annotations

import datetime
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")

# Seconds a collective of the generate stage may wait (its ``ddp_timeout``): long, because
# a rank may wait at the start for another's model to load from a slow file system. NCCL's
# own default is 10 minutes; gloo's and DeepSpeed's 30.
DEFAULT_DDP_TIMEOUT = 6 * 3600


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


def die_with_parent(parent_pid: int, *_: object) -> None:
    """Have Linux SIGKILL this process when its parent dies (``PR_SET_PDEATHSIG``); a
    DataLoader ``worker_init_fn``.

    kill -9 of generate's main process left its decoding workers alive, blocked on a full
    queue (14 workers, 4.3 GB, up to 8 minutes). Called in each worker as it starts; a
    parent already gone by then (``getppid`` changed) ends the worker at once. Elsewhere
    than Linux it does nothing: the workers' own watchdog ends them within seconds of
    their next wait.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) != 0:
        logger.warning(
            "prctl(PR_SET_PDEATHSIG) failed (errno %d): workers may outlive a killed job", ctypes.get_errno()
        )
    if os.getppid() != parent_pid:
        os._exit(1)


def die_with_launcher(environ: Mapping[str, str] | None = None) -> bool:
    """Under torchrun, have Linux SIGKILL this rank when the launcher's agent dies; return
    whether it was armed.

    torchrun starts each rank in a session of its own (``Popen(start_new_session=True)``),
    so killing the launcher's process group, or kill -9 of the launcher, left the ranks
    running. torchrun forwards SIGTERM, SIGINT, SIGHUP and SIGQUIT to the ranks itself
    (``--signals-to-handle``); SIGKILL it cannot. Armed only under torchrun (its
    ``TORCHELASTIC_RUN_ID``): a command run from a shell must outlive the shell (``nohup``).

    >>> die_with_launcher({})
    False
    """
    environ = os.environ if environ is None else environ
    if "TORCHELASTIC_RUN_ID" not in environ or not sys.platform.startswith("linux"):
        return False
    die_with_parent(os.getppid())
    return True


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the number of ranks of the initialized process group ((0, 1) with none)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_from_every_rank(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` without a process group)."""
    import torch.distributed as dist

    world_size = rank_and_world_size()[1]
    if world_size == 1:
        return [value]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, value)
    return gathered


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
def process_group(context: ProcessContext, device: str, *, timeout: datetime.timedelta) -> Iterator[Callable[[], None]]:
    """Join the run's process group for the duration (nccl on GPUs, gloo on CPUs); yield
    the barrier that waits for every rank.

    ``timeout`` is how long a collective waits for the other ranks; it is always given,
    because the backend's default (10 minutes for NCCL) is shorter than uneven ranks need.
    The barrier is not a collective: it polls the group's own key-value store, so the
    fastest rank may wait at the end for the slowest as long as that one takes.
    """
    import torch.distributed as dist

    if not context.is_distributed:
        yield lambda: None
        return
    if dist.is_initialized():  # the caller's group, and its timeout
        yield dist.barrier
        return
    options = process_group_options(context, device)
    if "device_id" in options:
        import torch

        torch.cuda.set_device(options["device_id"])  # NCCL's communicator and every default CUDA op on it
    backend = options["backend"]
    # the store the group is built on (what init_process_group's env:// would make) serves the barrier
    store, _, _ = next(dist.rendezvous("env://", context.rank, context.world_size, timeout=timeout))
    dist.init_process_group(store=store, rank=context.rank, world_size=context.world_size, timeout=timeout, **options)
    logger.debug(
        "rank %d of %d joined the %s process group (timeout %s)", context.rank, context.world_size, backend, timeout
    )
    try:
        yield StoreGroup(context, store).barrier
    finally:
        dist.destroy_process_group()


@dataclass
class StoreGroup:
    """The run's processes meeting through torchrun's key-value store, with no process group.

    For processes that hold an engine with its own torch.distributed world (vLLM): a
    default process group of the run's ranks would become the engine's world. The store is
    the one ``env://`` names (torchrun's agent store, or rank 0's at MASTER_ADDR:MASTER_PORT);
    keys carry torchrun's restart count, so a restarted job never reads an earlier attempt's.
    """

    context: ProcessContext
    store: Any = None
    calls: int = 0

    def _key(self, kind: str) -> str:
        self.calls += 1
        return f"llava_star/{kind}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{self.calls}"

    def barrier(self) -> None:
        """Wait for every rank, however long: the store is polled, no collective times out."""
        if self.store is None:
            return
        key = self._key("barrier")
        if self.store.add(key, 1) == self.context.world_size:  # the last to arrive lets everybody go
            self.store.set(f"{key}/open", "1")
        while not self.store.check([f"{key}/open"]):
            time.sleep(0.2)

    def broadcast(self, value: str | None) -> str | None:
        """Rank 0's ``value`` on every rank."""
        if self.store is None:
            return value
        key = self._key("broadcast")
        if self.context.is_main:
            self.store.set(key, json.dumps(value))
            return value
        return json.loads(self.store.get(key))


def store_group(context: ProcessContext) -> StoreGroup:
    """Connect to the run's store (nothing to connect to when running alone)."""
    if not context.is_distributed:
        return StoreGroup(context)
    import torch.distributed as dist

    store, _, _ = next(dist.rendezvous("env://", context.rank, context.world_size))
    return StoreGroup(context, store)


def engine_gpus(context: ProcessContext, per_engine: int, visible: str | None) -> str:
    """The GPUs of this rank's engine (its tensor-parallel group), as ``CUDA_VISIBLE_DEVICES``:
    rank ``r`` of a node takes the ``r``-th ``per_engine`` GPUs of those visible to the node.

    >>> engine_gpus(ProcessContext(rank=1, world_size=2, local_rank=1), 2, None)
    '2,3'
    >>> engine_gpus(ProcessContext(rank=3, world_size=4, local_rank=1), 1, "4,5,6,7")
    '5'
    """
    first = context.local_rank * per_engine
    if visible is None:
        return ",".join(str(index) for index in range(first, first + per_engine))
    gpus = [gpu.strip() for gpu in visible.split(",") if gpu.strip()]
    if first + per_engine > len(gpus):
        raise ValueError(
            f"local rank {context.local_rank} needs GPUs {first}..{first + per_engine - 1} "
            f"of CUDA_VISIBLE_DEVICES={visible}"
        )
    return ",".join(gpus[first : first + per_engine])
