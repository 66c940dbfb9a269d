"""What a run under DeepSpeed needs beyond the Trainer's own integration: the ZeRO stage of a
JSON, a check that the parts' learning rates survive its optimizer, the process group ZeRO-3
counts ranks by, and when batches must hold one media kind per step."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from llava_star.errors import ConfigError
from llava_star.training.parts import part_learning_rates

if TYPE_CHECKING:
    from llava_star.training.config import TrainConfig

logger = logging.getLogger(__name__)


def deepspeed_stage(path: str | None) -> int:
    """The ZeRO stage a DeepSpeed JSON asks for (0 without one).

    >>> deepspeed_stage(None)
    0
    """
    if path is None:
        return 0
    try:
        with open(path, encoding="utf-8") as handle:
            return int(json.load(handle).get("zero_optimization", {}).get("stage", 0))
    except (OSError, ValueError) as error:
        raise ConfigError(f"deepspeed: cannot read {path}: {error}") from None


def check_deepspeed_optimizer(config: TrainConfig) -> None:
    """A DeepSpeed JSON with an ``optimizer`` section builds one optimizer of one learning
    rate from it (transformers hands DeepSpeed the bare parameters), so the parts' own
    rates would be lost."""
    if not config.deepspeed or not part_learning_rates(config):
        return
    with open(config.deepspeed, encoding="utf-8") as handle:
        sections = json.load(handle)
    if "optimizer" in sections:
        raise ConfigError(
            f"projector_learning_rate, vision_learning_rate: {config.deepspeed} builds DeepSpeed's own optimizer "
            "(its 'optimizer' section), which takes one learning rate; use a config without one "
            "(scripts/zero2.json, zero2_offload.json, zero3.json) so the Trainer's optimizer keeps the parts' rates"
        )


def share_process_group_with_deepspeed() -> None:
    """ZeRO-3 partitions the model while it loads (``zero.Init``) and counts the ranks
    through DeepSpeed's own communication layer. On GPUs accelerate sets that layer up; on
    CPUs it starts a plain gloo group DeepSpeed does not see, and every rank would believe
    it runs alone ("train_batch_size is not equal to ... world_size"). Hand it that group."""
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        import deepspeed

        deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())


def group_by_media_needed(config: TrainConfig, stage: int, world_size: int, kinds: Sequence[str]) -> bool:
    """Whether batches must hold one media kind at each step on every rank.

    ZeRO-3 gathers a module's weights from every rank as the module runs, so all ranks
    must run the same modules at each step: a rank with a text-only batch that skips the
    vision tower another rank runs stops gloo with a "collective mismatch" and hangs NCCL
    until its timeout. (The zero-times-every-parameter anchor that keeps DDP and ZeRO-2 in
    step cannot help: under ZeRO-3 a parameter outside its forward pass is an empty shard.)
    """
    if config.group_by_media:
        return True
    present = sorted(set(kinds))
    if stage == 3 and world_size > 1 and len(present) > 1:
        logger.info(
            "train: ZeRO-3 over %d processes with %s records: batches of one kind per step",
            world_size,
            ", ".join(present),
        )
        return True
    return False
