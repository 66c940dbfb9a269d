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
