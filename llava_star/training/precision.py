"""Which dtype each weight trains in, and what that costs per GPU.

Mixed precision needs an fp32 copy of every weight the optimizer updates. An AdamW update
at lr 2e-5 is below half a bf16 step for most weights of a 7B model (std ~0.02), so a
pure-bf16 weight rounds most updates away: on a tiny Video-LLaVA, 30 steps of pure-bf16
AdamW moved 28.5% of the language model's entries and dropped the loss half as much as
fp32 did. DeepSpeed keeps fp32 master weights itself; without it, the weights that train
are kept in fp32 here and only the frozen ones (the vision tower, or the base weights under
LoRA) stay 16-bit, with bf16 autocast doing the compute either way.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

GIB = 1024**3
# under DeepSpeed: the fp32 master weight and the two moments, partitioned from ZeRO-1
_DEEPSPEED_OPTIMIZER_BYTES = 12


def load_dtype(*, bf16: bool, fp16: bool, deepspeed: bool) -> str:
    """The dtype the weights load in: 16-bit with bf16 (the trained ones are then upcast
    without DeepSpeed: :func:`upcast_trained_weights`), fp16 only under DeepSpeed (the
    Trainer's fp16 loss scaler needs fp32 weights), float32 otherwise.

    >>> load_dtype(bf16=True, fp16=False, deepspeed=False), load_dtype(bf16=False, fp16=True, deepspeed=False)
    ('bfloat16', 'float32')
    """
    if bf16:
        return "bfloat16"
    if fp16 and deepspeed:
        return "float16"
    return "float32"


def upcast_trained_weights(model: Any) -> int:
    """Make every trainable parameter fp32 (the optimizer's master copy); return how many
    elements changed dtype. Frozen parameters keep their 16-bit dtype and memory."""
    import torch

    upcast = 0
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype in (torch.bfloat16, torch.float16):
            parameter.data = parameter.data.float()
            upcast += parameter.numel()
    if upcast:
        logger.info("train: %d trained weights kept in fp32 for the optimizer (frozen ones stay 16-bit)", upcast)
    return upcast


def estimate_memory_per_gpu(
    total_parameters: int, trainable_parameters: int, *, weight_bytes: int, stage: int, world_size: int
) -> dict[str, float]:
    """GiB per GPU of weights, gradients and AdamW states (activations not included).

    ``weight_bytes`` is the size of a loaded (frozen) weight. Without DeepSpeed a trained
    weight is fp32 with an fp32 gradient and two fp32 moments (16 bytes), all on every
    GPU. Under DeepSpeed the weights and gradients are 16-bit and the optimizer keeps fp32
    master weights and moments (12 bytes a trained parameter), partitioned over the GPUs
    from ZeRO-1, with the gradients from ZeRO-2 and the weights at ZeRO-3.

    Video-LLaVA-7B (7.3B parameters, 6.76B trained) on 8 GPUs in bf16:

    >>> figures = estimate_memory_per_gpu(7_300_000_000, 6_760_000_000, weight_bytes=2, stage=2, world_size=8)
    >>> round(figures["total"], 1)
    24.6
    >>> round(estimate_memory_per_gpu(7_300_000_000, 6_760_000_000, weight_bytes=2, stage=0, world_size=8)["total"])
    102
    """
    frozen = total_parameters - trainable_parameters
    if stage == 0:
        weights = frozen * weight_bytes + trainable_parameters * 4
        gradients = trainable_parameters * 4
        optimizer = trainable_parameters * 8  # two fp32 AdamW moments
    else:
        weights = total_parameters * weight_bytes
        gradients = trainable_parameters * weight_bytes
        optimizer = trainable_parameters * _DEEPSPEED_OPTIMIZER_BYTES / world_size
        if stage >= 2:
            gradients /= world_size
        if stage >= 3:
            weights /= world_size
    figures = {"weights": weights / GIB, "gradients": gradients / GIB, "optimizer": optimizer / GIB}
    figures["total"] = sum(figures.values())
    return figures


def log_memory_estimate(model: Any, *, weight_bytes: int, stage: int, world_size: int) -> dict[str, float]:
    """:func:`estimate_memory_per_gpu` of a loaded model (whole sizes under ZeRO-3's
    partitioning), logged; the run's summary keeps it."""
    sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in model.parameters()]
    memory = estimate_memory_per_gpu(
        sum(size for size, _ in sizes),
        sum(size for size, trained in sizes if trained),
        weight_bytes=weight_bytes,
        stage=stage,
        world_size=world_size,
    )
    logger.info(
        "train: per-GPU memory estimate %.1f GiB (weights %.1f, gradients %.1f, optimizer %.1f; activations not "
        "included) for ZeRO stage %d over %d processes",
        memory["total"],
        memory["weights"],
        memory["gradients"],
        memory["optimizer"],
        stage,
        world_size,
    )
    return memory
