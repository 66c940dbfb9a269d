"""Tiny models with the real checkpoints' geometry and files (issue 18).

The tiny models of :mod:`llava_star.models.tiny` see 32-pixel frames through the
project's own chat templates and a default generation config; real checkpoints differ
in exactly the places that matter. ``tests/real_checkpoints/<name>.json`` records, per
hub checkpoint, what it ships (vision image and patch size, feature layer and strategy,
its processor files as the hub repo has them, including a missing
``video_preprocessor_config.json``, its chat template, its ``generation_config``, its
special tokens), each with a ``sources`` entry saying where the value comes from.
:func:`build_real_geometry_model` writes a directory in the hub's layout with those
files, around a model of that vision geometry at tiny widths (hidden size 32, two
layers), so ``load_model`` meets what it meets on a real checkpoint. Token ids are the
local tokenizer's, found by the real token strings (the real ids are in the fixture).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "real_checkpoints"
CHECKPOINTS = (
    "video_llava",
    "llava_next_video",
    "llava_onevision",
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "qwen3_vl_moe",
    "qwen3_5",
)
# the processor_config.json keys of each processor class (the rest of the saved file is
# the nested image / video processors, which the hub keeps in their own files)
_PROCESSOR_KEYS = ("patch_size", "vision_feature_select_strategy", "num_additional_image_tokens", "num_image_tokens")


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def _real_vision_geometry(config: Any, facts: dict[str, Any]) -> None:
    """Put the checkpoint's vision geometry (sizes, feature layer, pooling) on a tiny config."""
    vision = facts["vision"]
    if config.model_type.startswith(("qwen2", "qwen3")):
        config.vision_config.patch_size = vision["patch_size"]
        if "num_position_embeddings" in vision:  # Qwen3-VL's learned grid (48 x 48), interpolated
            config.vision_config.num_position_embeddings = vision["num_position_embeddings"]
        config.vision_config.spatial_merge_size = vision["spatial_merge_size"]
        config.vision_config.temporal_patch_size = vision["temporal_patch_size"]
        if "window_size" in vision:
            config.vision_config.window_size = vision["window_size"]
            config.vision_config.tokens_per_second = vision["tokens_per_second"]
        return
    config.vision_config.image_size = vision["image_size"]
    config.vision_config.patch_size = vision["patch_size"]
    config.vision_feature_layer = vision["vision_feature_layer"]
    config.vision_feature_select_strategy = vision["vision_feature_select_strategy"]
    for key, value in facts["config"].items():
        if hasattr(config, key):
            setattr(config, key, value)
    if hasattr(config, "image_grid_pinpoints"):  # one pinpoint at the frame size: images stay small
        size = vision["image_size"]
        config.image_grid_pinpoints = [[size, size]]


def build_real_geometry_model(name: str, out_dir: str | Path, *, seed: int = 0) -> Path:
    """Write a loadable checkpoint directory of ``name`` (a fixture) in the hub's file layout."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer, GenerationConfig

    from llava_star.models.checkpoints import write_hub_weight_names
    from llava_star.models.tiny import build_tiny_model

    facts = fixture(name)
    out = Path(out_dir)
    build_tiny_model(name, out, seed=seed)  # the local tokenizer and a starting config
    config = AutoConfig.from_pretrained(out)
    _real_vision_geometry(config, facts)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config)
    tokenizer = AutoTokenizer.from_pretrained(out)
    generation = dict(facts["generation_config"])
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key in generation:  # the real ids, mapped to the local tokenizer by token text
            generation[key] = _local_ids(generation[key], facts, tokenizer)
    model.generation_config = GenerationConfig(**generation)
    model.save_pretrained(out)
    write_hub_weight_names(out)
    _write_hub_processor_files(out, facts)
    return out


def _local_ids(real: int | list[int], facts: dict[str, Any], tokenizer: Any) -> int | list[int]:
    by_real_id = {token_id: text for text, token_id in facts["special_tokens"].values()}
    # an id the fixture does not name (vicuna's pad_token_id 0 is <unk>) becomes the local pad
    local = [
        tokenizer.convert_tokens_to_ids(by_real_id[token_id]) if token_id in by_real_id else tokenizer.pad_token_id
        for token_id in ([real] if isinstance(real, int) else real)
    ]
    return local[0] if isinstance(real, int) else local


def _write_hub_processor_files(out: Path, facts: dict[str, Any]) -> None:
    """processor_config.json, preprocessor_config.json, video_preprocessor_config.json (or none)
    and the chat template, as the hub repo has them."""
    saved = json.loads((out / "processor_config.json").read_text(encoding="utf-8"))
    processor = {key: saved[key] for key in ("processor_class", "image_token", "video_token") if key in saved}
    processor.update({key: value for key, value in facts["processor_config"].items() if key in _PROCESSOR_KEYS})
    (out / "processor_config.json").write_text(json.dumps(processor, indent=1), encoding="utf-8")
    (out / "preprocessor_config.json").write_text(json.dumps(facts["preprocessor_config"], indent=1), encoding="utf-8")
    video = out / "video_preprocessor_config.json"
    if facts["video_preprocessor_config"] is None:
        video.unlink(missing_ok=True)
    else:
        video.write_text(json.dumps(facts["video_preprocessor_config"], indent=1), encoding="utf-8")
    (out / "chat_template.jinja").write_text(facts["chat_template"], encoding="utf-8")
