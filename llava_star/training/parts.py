"""The parts of a LLaVA-family model a run trains: vision tower, projector, language model.

Which parameter belongs to which part is a fact of its family (``vision_parts`` and
``projector_parts`` in :mod:`llava_star.models.families`); here the parts are frozen or
trained as the config says, given learning rates of their own (LLaVA's ``--mm_projector_lr``,
``--mm_vision_tower_lr``) and anchored to the loss so that ranks with different media stay
in step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from llava_star.errors import ConfigError
from llava_star.models.families import FAMILIES, ORIGINAL_PROJECTOR_PART

if TYPE_CHECKING:
    from llava_star.training.config import TrainConfig

PARTS = ("vision", "projector", "language")
# every family's names: a parameter name says its part whatever the family (none is ambiguous)
_PROJECTOR_PARTS = tuple(
    dict.fromkeys([part for family in FAMILIES.values() for part in family.projector_parts] + [ORIGINAL_PROJECTOR_PART])
)
_VISION_PARTS = tuple(dict.fromkeys(part for family in FAMILIES.values() for part in family.vision_parts))


def parameter_group(name: str) -> str:
    """Which part of a LLaVA-family model a parameter belongs to, from its name.

    The part names are the families' (:mod:`llava_star.models.families`): transformers'
    Video-LLaVA, LLaVA-NeXT-Video, LLaVA-OneVision and Qwen2-VL (where the projector is the
    vision tower's ``merger``).

    >>> parameter_group("model.video_tower.encoder.layers.0.mlp.fc1.weight")
    'vision'
    >>> parameter_group("model.visual.merger.mlp.0.weight"), parameter_group("model.multi_modal_projector.linear_1.bias")
    ('projector', 'projector')
    >>> parameter_group("model.language_model.layers.0.self_attn.q_proj.weight"), parameter_group("lm_head.weight")
    ('language', 'language')
    >>> parameter_group("model.image_newline")
    'projector'
    """
    if any(part in name for part in _PROJECTOR_PARTS):
        return "projector"
    if any(part in name for part in _VISION_PARTS):
        return "vision"
    return "language"


def trainable_groups(config: TrainConfig) -> set[str]:
    """The parts whose own weights train (with LoRA the adapters train, not the language model's weights)."""
    groups = set(PARTS)
    if config.freeze_vision_tower:
        groups.discard("vision")
    if config.freeze_projector:
        groups.discard("projector")
    if config.freeze_language_model or config.lora:
        groups.discard("language")
    return groups


def set_trainable(model: Any, config: TrainConfig) -> dict[str, int]:
    """Freeze the parts the config keeps fixed; return trainable parameter counts per part."""
    groups = trainable_groups(config)
    counts = dict.fromkeys(PARTS, 0)
    found = set()
    for name, parameter in model.named_parameters():
        group = parameter_group(name)
        found.add(group)
        parameter.requires_grad_(group in groups)
        if group in groups:  # under ZeRO-3 a parameter is a shard; ds_numel is its full size
            counts[group] += getattr(parameter, "ds_numel", parameter.numel())
    missing = {"vision", "projector"} - found
    if missing:  # an unknown part name would silently train (or freeze) as the language model
        modules = sorted(
            {
                name.split(".")[1] if name.startswith("model.") else name.split(".")[0]
                for name, _ in model.named_parameters()
            }
        )
        raise ConfigError(
            f"model: no {' or '.join(sorted(missing))} parameters recognised among {modules}; add this "
            "architecture's part names to its family in llava_star.models.families (vision_parts, projector_parts)"
        )
    return counts


def part_learning_rates(config: TrainConfig) -> dict[str, float]:
    """The parts with a learning rate of their own (LLaVA's --mm_projector_lr, --mm_vision_tower_lr).

    >>> from llava_star.training.config import TrainConfig
    >>> part_learning_rates(TrainConfig(model="m", data=("d.json",), output_dir="o", projector_learning_rate=1e-4))
    {'projector': 0.0001}
    >>> lora = TrainConfig(model="m", data=("d.json",), output_dir="o", lora=True)
    >>> lora.learning_rate, part_learning_rates(lora)  # adapters at 2e-4, the fully trained projector at 2e-5
    (0.0002, {'projector': 2e-05})
    """
    rates = {"projector": config.projector_learning_rate, "vision": config.vision_learning_rate}
    return {part: rate for part, rate in rates.items() if rate is not None and rate != config.learning_rate}


def optimizer_parameter_groups(
    named_parameters: Iterable[tuple[str, Any]], rates: Mapping[str, float], decay_names: set[str], weight_decay: float
) -> list[dict[str, Any]]:
    """The optimizer's parameter groups as LLaVA's ``LLaVATrainer.create_optimizer`` makes
    them: by weight decay (none on biases and norms) and, for the parts in ``rates``, with
    their own ``lr``; the others keep the Trainer's learning rate. The schedule scales
    every group's rate by the same factor."""
    groups: dict[tuple[str | None, bool], dict[str, Any]] = {}
    for name, parameter in named_parameters:
        if not parameter.requires_grad:
            continue
        part = parameter_group(name)
        own = part if part in rates else None
        decay = name in decay_names
        group = groups.setdefault((own, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0})
        if own is not None:
            group["lr"] = rates[own]
        group["params"].append(parameter)
    return list(groups.values())


def learning_rates_by_part(model: Any, optimizer: Any) -> dict[str, list[float]]:
    """The initial learning rates the built optimizer gives each part's parameters."""
    part_of = {id(parameter): parameter_group(name) for name, parameter in model.named_parameters()}
    rates: dict[str, set[float]] = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if id(parameter) in part_of:
                rates.setdefault(part_of[id(parameter)], set()).add(float(group.get("initial_lr", group["lr"])))
    return {part: sorted(values) for part, values in sorted(rates.items())}


def parameter_anchor(model: Any) -> Any:
    """Zero times the sum of every trainable media parameter (vision tower, projector,
    ``image_newline``); add it to the loss, computed before the forward pass.

    In a mixed batch (video, image, text-only records) ranks use different modules: a
    rank whose batch is text only never reaches the projector. DDP then waits for
    gradients that never come (with gradient checkpointing, which turns off its
    unused-parameter search) and ZeRO-2 reduces gradient buckets of different contents
    ("collective mismatch"). Summing those parameters first, before the forward pass,
    gives each one a (zero) gradient on every rank, and since these sums are the oldest
    nodes of the graph, autograd finishes their gradients last and in the same order on
    every rank, whatever the batch held. The language model is left out: every batch
    runs all of it, in the same order on every rank, so its gradients are ready as the
    backward pass goes and their communication overlaps it (with every parameter
    anchored, none was ready before the backward pass ended).
    """
    import torch

    terms = [
        parameter.sum(dtype=torch.float32)
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and parameter_group(name) != "language"
    ]
    return torch.stack(terms).sum() * 0.0 if terms else None
