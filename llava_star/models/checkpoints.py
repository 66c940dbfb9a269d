"""Checkpoint files as every loader reads them: vision-tower weights under the hub's names.

transformers 5 saves the CLIP / SigLIP vision tower of LLaVA-NeXT-Video and
LLaVA-OneVision without its ``vision_model`` level (``vision_tower.encoder...``) and loads
both spellings; vLLM 0.32, like the hub checkpoints, has only ``vision_tower.vision_model.
encoder...``. Checkpoints llava_star writes (``tiny-model``, ``train``) are renamed after
saving, so either backend can load them.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# a vision-tower weight saved without the level the hub names carry
_BARE_TOWER_KEY = re.compile(r"^((?:model\.)?vision_tower\.)(?!vision_model\.)")
_TOWERS_WITH_VISION_MODEL = frozenset({"clip_vision_model", "siglip_vision_model"})


def hub_weight_name(key: str) -> str:
    """The hub's name of a weight.

    >>> hub_weight_name("vision_tower.encoder.layers.0.mlp.fc1.weight")
    'vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight'
    >>> hub_weight_name("language_model.model.norm.weight")
    'language_model.model.norm.weight'
    """
    return _BARE_TOWER_KEY.sub(r"\1vision_model.", key)


def write_hub_weight_names(directory: str | Path) -> bool:
    """Rename the vision-tower weights of a saved checkpoint in place; True when it had any to rename."""
    from safetensors.torch import load_file, save_file

    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    if config.get("vision_config", {}).get("model_type") not in _TOWERS_WITH_VISION_MODEL:
        return False
    renamed_any = False
    for path in sorted(directory.glob("*.safetensors")):
        weights = load_file(path)
        renamed = {hub_weight_name(key): tensor for key, tensor in weights.items()}
        if renamed.keys() != weights.keys():
            save_file(renamed, path, metadata={"format": "pt"})
            renamed_any = True
    index = directory / "model.safetensors.index.json"
    if index.exists():
        content = json.loads(index.read_text())
        content["weight_map"] = {hub_weight_name(key): file for key, file in content["weight_map"].items()}
        index.write_text(json.dumps(content, indent=2))
    if renamed_any:
        logger.debug("%s: vision-tower weights under the hub's names", directory)
    return renamed_any


def save_under_standard_names(model: Any) -> None:
    """Make ``save_pretrained`` write the standard (hub) weight names after a ZeRO-3 load.

    transformers 5.23 loading under ZeRO-3 (``zero.Init``) records its legacy renamings and a
    prefix change among the model's ``_weight_conversions``; ``save_pretrained`` reverses all
    of them, and the saved language model comes out as ``language_model.model.model.*``
    (LLaVA family) or ``model.model.*`` (Qwen2-VL). transformers maps those back when it
    loads, but vLLM and the other readers of hub layouts do not. Without recorded
    conversions ``save_pretrained`` reverses the registered standard mapping, as it does for
    a model loaded without DeepSpeed. Remove when a ZeRO-3 load records the same
    conversions as a plain one (tests/test_train_resume.py checks the saved names).
    """
    if getattr(model, "_weight_conversions", None) is not None:
        model._weight_conversions = None


def without_tied_copies(model: Any, state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` without the targets of tied weights (``lm_head.weight`` when it is the
    input embedding), as ``save_pretrained`` writes them for a model saved without DeepSpeed.

    DeepSpeed hands the Trainer a gathered copy of the weights in which a tied pair comes back
    as two tensors, so ``save_pretrained`` wrote both (Gemma 4 under ZeRO-2): loaders tie them
    again, but the checkpoint differed from a plain run's by one tensor.

    >>> class Tied:
    ...     all_tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    >>> sorted(without_tied_copies(Tied(), {"lm_head.weight": 1, "model.embed_tokens.weight": 1}))
    ['model.embed_tokens.weight']
    """
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    return {key: value for key, value in state_dict.items() if not (key in tied and tied[key] in state_dict)}
