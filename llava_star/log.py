"""Logging that is quiet on non-zero ranks.

Modules call ``logging.getLogger(__name__)``; only entry points call
:func:`configure_logging`, so importing the package never touches logging handlers.
Under torchrun every rank runs the same code, and N copies of each progress line help
nobody: ranks other than 0 log warnings and errors only, prefixed with their rank.
"""

from __future__ import annotations

import logging
import sys

from llava_star.distributed import process_context


def process_rank() -> int:
    """This process's global rank as set by torchrun / accelerate / deepspeed (0 when alone)."""

    return process_context().rank


def is_main_process() -> bool:
    return process_rank() == 0


def configure_logging(verbosity: int = 0) -> None:
    """Set up the root handler for a command-line run (``-v`` for debug)."""
    rank = process_rank()
    level = logging.DEBUG if verbosity > 0 else logging.INFO
    if rank != 0:
        level = logging.WARNING
    prefix = f"[rank {rank}] " if rank else ""
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    # third-party libraries are chatty at INFO; keep their warnings
    for noisy in ("httpx", "urllib3", "filelock", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
