"""The pieces of converting an original LLaVA-family checkpoint (``llava-star convert``):
weight names, configs, vision towers, projector, tokens, processor. The stage
(:mod:`llava_star.stages.convert`) says what is converted and why; this module holds how.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llava_star.errors import ConfigError
from llava_star.models.families import FAMILIES
from llava_star.models.original import projector_key, read_state_dict
from llava_star.models.templates import LLAVA_TEMPLATE

logger = logging.getLogger(__name__)

EMBEDDING_MULTIPLE = 64  # transformers' conversion scripts pad the vocabulary to this
# rename prefixes, longest first (transformers' KEYS_TO_MODIFY_MAPPING, in transformers 5's layout)
_RENAMES = (
    ("model.image_tower.image_tower.", "model.image_tower."),
    ("model.video_tower.video_tower.", "model.video_tower."),
    ("model.vision_tower.vision_tower.vision_model.", "model.vision_tower."),
    ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("model.image_newline", "model.image_newline"),
    ("lm_head.", "lm_head."),
    ("model.", "model.language_model."),
)


def converted_key(key: str) -> str | None:
    """transformers' name of an original parameter (``None``: a buffer not kept).

    >>> converted_key("model.layers.0.self_attn.q_proj.weight")
    'model.language_model.layers.0.self_attn.q_proj.weight'
    >>> converted_key("model.video_tower.video_tower.encoder.layers.1.mlp.fc1.bias")
    'model.video_tower.encoder.layers.1.mlp.fc1.bias'
    >>> converted_key("model.mm_projector.2.weight"), converted_key("model.layers.0.self_attn.rotary_emb.inv_freq")
    ('model.multi_modal_projector.linear_2.weight', None)
    """
    if key.endswith(".inv_freq"):
        return None
    if "temporal_" in key and "_tower." in key:
        raise ConfigError(
            f"{key}: the video tower has temporal attention (LanguageBind add_time_attn), which "
            "transformers' VideoLlava video tower (a CLIP vision model) does not have"
        )
    for old, new in _RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    raise ConfigError(f"{key}: not a parameter name of an original LLaVA checkpoint (expected model.* or lm_head.*)")


def read_shards(directory: Path) -> dict[str, Any]:
    """Every tensor of a checkpoint directory's ``*.safetensors`` or ``pytorch_model*.bin`` shards."""

    shards = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("pytorch_model*.bin"))
    if not shards:
        raise ConfigError(f"{directory}: no *.safetensors or pytorch_model*.bin weight files")
    state: dict[str, Any] = {}
    for shard in shards:
        for key, value in read_state_dict(shard).items():
            if key in state:
                raise ConfigError(f"{shard}: {key} is also in another shard")
            state[key] = value
    return state


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON: {error}") from None


def text_config_of(original: Mapping[str, Any], kind: str) -> Any:
    """The language model's config: the original config's own LLaMA fields (Qwen2 for
    OneVision, Mistral for llava-v1.6-mistral)."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    mistral = (
        "LlavaMistralForCausalLM" in (original.get("architectures") or [])
        or original.get("model_type") == "llava_mistral"
    )
    config_class = Qwen2Config if kind == "llava_onevision" else MistralConfig if mistral else LlamaConfig
    fields = set(config_class().to_dict()) - {
        "architectures",
        "model_type",
        "transformers_version",
        "dtype",
        "torch_dtype",
    }
    return config_class(**{key: value for key, value in original.items() if key in fields})


def _clip_large(image_size: int) -> tuple[str, dict[str, int]]:
    """CLIP ViT-L/14 at ``image_size``: LanguageBind's tower (224) and LLaVA-NeXT's (336)."""
    layout = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16}
    return "clip", {**layout, "image_size": image_size, "patch_size": 14, "projection_dim": 768}


# the vision tower each family's original names by hub id, when --vision-tower gives no config
_DEFAULT_VISION = {
    "video_llava": _clip_large(224),
    "llava_next": _clip_large(336),
    "llava_next_video": _clip_large(336),
    "llava_onevision": (  # SigLIP so400m
        "siglip",
        {
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "image_size": 384,
            "patch_size": 14,
        },
    ),
}


def vision_tower_of(path: Path | None, kind: str) -> tuple[Any, dict[str, Any]]:
    """The vision config of ``--vision-tower`` (default: the tower the family's original names)
    and, for LLaVA-1.5, whose shards lack them, its weights keyed as in the converted model."""
    from transformers import CLIPVisionConfig, SiglipVisionConfig

    if path is None:
        if kind not in _DEFAULT_VISION:
            raise ConfigError("--vision-tower: needed for this checkpoint")
        family, values = _DEFAULT_VISION[kind]
        return (SiglipVisionConfig if family == "siglip" else CLIPVisionConfig)(**values), {}
    config = read_json(path / "config.json")
    model_type = config.get("model_type")
    vision = config.get("vision_config", config) if model_type in ("clip", "siglip") else config
    if model_type not in ("clip", "clip_vision_model", "siglip", "siglip_vision_model"):
        raise ConfigError(f"{path}/config.json: expected a CLIP or SigLIP vision model, got model_type {model_type!r}")
    config_class = SiglipVisionConfig if model_type.startswith("siglip") else CLIPVisionConfig
    weights: dict[str, Any] = {}
    if kind == "llava":  # a CLIPVisionModel or a whole CLIPModel: its vision_model part
        text_parts = ("text_model.", "visual_projection.", "text_projection.", "logit_scale")
        weights = {
            "model.vision_tower." + key.removeprefix("vision_model."): value
            for key, value in read_shards(path).items()
            if not key.startswith(text_parts) and not key.endswith("position_ids")
        }
    fields = set(config_class().to_dict()) - {"model_type", "architectures", "transformers_version"}
    return config_class(**{key: value for key, value in vision.items() if key in fields}), weights


def fit_vision_layers(vision: Any, state: Mapping[str, Any], select_layer: int) -> int:
    """Match the vision config to the layers the shards hold; return the feature layer.

    LLaVA-NeXT's SigLIP tower deletes its last layer (and its head) and takes the last
    hidden state (transformers' conversion: 26 layers, feature layer -1, no head), so a
    tower saved with fewer layers than its config gets the config of what is there, and the
    layer LLaVA selected keeps its place counted from the end.
    """
    layers = {int(key.split(".")[4]) for key in state if key.startswith("model.vision_tower.encoder.layers.")}
    if not layers or len(layers) >= vision.num_hidden_layers:
        return select_layer
    dropped = vision.num_hidden_layers - len(layers)
    vision.num_hidden_layers = len(layers)
    return min(select_layer + dropped, -1)


def projector_weights(path: str | None, text_size: int, vision_size: int) -> dict[str, Any]:
    """The projector of a composed model: LLaVA's ``mm_projector.bin``, or two freshly
    initialised layers (nn.Linear's own initialisation, as LLaVA's pretraining starts)."""
    import torch

    if path is None:
        logger.info("convert: no --projector; the projector starts from nn.Linear's initialisation (pretraining)")
        layers = {
            "linear_1": torch.nn.Linear(vision_size, text_size),
            "linear_2": torch.nn.Linear(text_size, text_size),
        }
        return {
            f"model.multi_modal_projector.{name}.{kind}": getattr(layer, kind).detach()
            for name, layer in layers.items()
            for kind in ("weight", "bias")
        }
    weights = {}
    for key, value in read_state_dict(path).items():
        mapped = projector_key(key)
        if mapped is not None:
            weights["model.multi_modal_projector." + mapped] = value
    return weights


def add_media_tokens(tokenizer: Any, names: tuple[str, ...]) -> dict[str, int]:
    from transformers import AddedToken

    tokenizer.add_tokens([AddedToken(name, special=True, normalized=False) for name in names], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return {name: tokenizer.convert_tokens_to_ids(name) for name in names}


def grow_embeddings(state: dict[str, Any], size: int) -> int:
    """Embedding and output rows up to ``size`` (the tokenizer with its new tokens) rounded to
    64, new rows the mean row; a matrix already that large (Qwen2's 152,064 rows for a
    151,646-token vocabulary) is kept as it is. Returns the rows, the new vocab_size.

    >>> import torch
    >>> state = {"model.language_model.embed_tokens.weight": torch.ones(100, 2), "lm_head.weight": torch.ones(100, 2)}
    >>> grow_embeddings(state, 102), grow_embeddings({k: torch.ones(200, 2) for k in state}, 102)
    (128, 200)
    """
    import torch

    rows = max(
        math.ceil(size / EMBEDDING_MULTIPLE) * EMBEDDING_MULTIPLE,
        state["model.language_model.embed_tokens.weight"].shape[0],
    )
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        weight = state[key]
        extra = rows - weight.shape[0]
        if extra > 0:
            mean = weight.float().mean(dim=0, keepdim=True).to(weight.dtype)
            state[key] = torch.cat([weight, mean.expand(extra, -1)], dim=0)
    return rows


# the tokens each family adds, in transformers' conversion scripts' order
MEDIA_TOKENS = {
    "llava": ("<image>",),
    "llava_next": ("<image>",),
    "video_llava": ("<image>", "<video>"),
    "llava_next_video": ("<video>", "<image>"),
    "llava_onevision": ("<image>", "<video>"),
}


def grid_pinpoints(original: Mapping[str, Any], size: int) -> list[list[int]]:
    """LLaVA-NeXT's ``image_grid_pinpoints``: a list of [h, w], or ``"(1x1),...,(6x6)"`` in tiles.

    >>> grid_pinpoints({"image_grid_pinpoints": "(1x1),...,(2x2)"}, 384)
    [[384, 384], [384, 768], [768, 384], [768, 768]]
    """
    value = original.get("image_grid_pinpoints")
    if value is None:
        return [[size, size]]
    if isinstance(value, str):
        import re

        found = [tuple(map(int, pair)) for pair in re.findall(r"\((\d+)x(\d+)\)", value)]
        if len(found) != 2:
            raise ConfigError(f"config.json: image_grid_pinpoints {value!r}: expected a list or '(1x1),...,(NxM)'")
        (low_h, low_w), (high_h, high_w) = found
        return [[h * size, w * size] for h in range(low_h, high_h + 1) for w in range(low_w, high_w + 1)]
    return [list(map(int, pair)) for pair in value]


def check_video_layout(kind: str, original: Mapping[str, Any]) -> None:
    """The original's video pooling and newline options must be what the transformers class does."""
    if kind != "llava_onevision":
        return
    newline = original.get("mm_newline_position", "one_token")
    if newline != "one_token":
        raise ConfigError(
            f"config.json: mm_newline_position {newline!r}: transformers' LlavaOnevisionForConditionalGeneration "
            "appends one image_newline after each video (one_token), so this model's video tokens would be "
            "laid out otherwise than it was trained"
        )
    if original.get("mm_spatial_pool_mode", "bilinear") != "bilinear" or original.get("mm_spatial_pool_stride", 2) != 2:
        raise ConfigError(
            "config.json: mm_spatial_pool_mode/stride: transformers' LLaVA-OneVision pools video "
            "features bilinearly by 2"
        )


def build_model_config(
    kind: str, original: Mapping[str, Any], text: Any, vision: Any, tokens: dict[str, int], feature_layer: int
) -> Any:
    from transformers import LlavaConfig, LlavaNextConfig, LlavaNextVideoConfig, LlavaOnevisionConfig, VideoLlavaConfig

    strategy = {"patch": "default", "cls_patch": "full"}.get(original.get("mm_vision_select_feature", "patch"))
    if strategy is None:
        raise ConfigError(
            f"config.json: mm_vision_select_feature {original['mm_vision_select_feature']!r}; "
            "expected patch or cls_patch"
        )
    if vision.model_type.startswith("siglip"):
        strategy = "full"  # SigLIP has no CLS token: LLaVA's "patch" is every token
    if original.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ConfigError(
            f"config.json: mm_projector_type {original['mm_projector_type']!r}; transformers' "
            "LLaVA classes have only mlp2x_gelu"
        )
    patches = (vision.image_size // vision.patch_size) ** 2
    common = {
        "text_config": text,
        "vision_config": vision,
        "vision_feature_layer": feature_layer,
        "vision_feature_select_strategy": strategy,
        "image_token_index": tokens["<image>"],
    }
    if kind == "video_llava":
        frames = int(original.get("num_frames", 8))
        return VideoLlavaConfig(
            **common,
            video_token_index=tokens["<video>"],
            image_seq_length=patches,
            video_seq_length=(patches + 1) * frames,
        )
    if kind == "llava_next_video":
        stride = int(original.get("mm_spatial_pool_stride", 2))
        mode = original.get("mm_spatial_pool_mode", "average")
        if mode not in ("average", "max"):
            raise ConfigError(
                f"config.json: mm_spatial_pool_mode {mode!r}: transformers' LLaVA-NeXT-Video pools by average or max"
            )
        return LlavaNextVideoConfig(
            **common,
            video_token_index=tokens["<video>"],
            image_grid_pinpoints=grid_pinpoints(original, vision.image_size),
            spatial_pool_mode=mode,
            spatial_pool_stride=stride,
            image_seq_length=patches,
            video_seq_length=patches // stride**2,
        )
    if kind == "llava_next":
        return LlavaNextConfig(
            **common, image_grid_pinpoints=grid_pinpoints(original, vision.image_size), image_seq_length=patches
        )
    if kind == "llava_onevision":
        aspect = original.get("image_aspect_ratio", "anyres_max_9")
        return LlavaOnevisionConfig(
            **common,
            video_token_index=tokens["<video>"],
            image_grid_pinpoints=grid_pinpoints(original, vision.image_size),
            vision_aspect_ratio=aspect if str(aspect).startswith("anyres_max_") else "anyres_max_9",
        )
    return LlavaConfig(**common, image_seq_length=patches)


def build_processor(kind: str, tokenizer: Any, vision: Any, model_config: Any) -> Any:
    import transformers

    size = vision.image_size
    geometry = {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}}
    strategy = model_config.vision_feature_select_strategy
    settings = {
        "tokenizer": tokenizer,
        "patch_size": vision.patch_size,
        "vision_feature_select_strategy": strategy,
        "num_additional_image_tokens": 1,
    }
    if kind == "video_llava":
        return transformers.VideoLlavaProcessor(
            image_processor=transformers.VideoLlavaImageProcessor(**geometry),
            video_processor=transformers.VideoLlavaVideoProcessor(**geometry),
            chat_template=FAMILIES["video_llava"].chat_template,
            **settings,
        )
    if kind == "llava_next_video":
        return transformers.LlavaNextVideoProcessor(
            image_processor=transformers.LlavaNextImageProcessor(
                image_grid_pinpoints=model_config.image_grid_pinpoints, **geometry
            ),
            video_processor=transformers.LlavaNextVideoVideoProcessor(**geometry),
            chat_template=FAMILIES["llava_next_video"].chat_template,
            **settings,
        )
    if kind == "llava_next":
        return transformers.LlavaNextProcessor(
            image_processor=transformers.LlavaNextImageProcessor(
                image_grid_pinpoints=model_config.image_grid_pinpoints, **geometry
            ),
            chat_template=LLAVA_TEMPLATE,
            **settings,
        )
    if kind == "llava_onevision":
        square = {"height": size, "width": size}
        norm = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3} if vision.model_type.startswith("siglip") else {}
        return transformers.LlavaOnevisionProcessor(
            image_processor=transformers.LlavaOnevisionImageProcessor(
                size=square, image_grid_pinpoints=model_config.image_grid_pinpoints, **norm
            ),
            video_processor=transformers.LlavaOnevisionVideoProcessor(size=square, **norm),
            tokenizer=tokenizer,
            num_image_tokens=(size // vision.patch_size) ** 2,
            vision_feature_select_strategy=strategy,
            chat_template=FAMILIES["llava_onevision"].chat_template,
        )
    return transformers.LlavaProcessor(
        image_processor=transformers.CLIPImageProcessor(**geometry), chat_template=LLAVA_TEMPLATE, **settings
    )


MODEL_CLASSES = {
    "llava": "LlavaForConditionalGeneration",
    "llava_next": "LlavaNextForConditionalGeneration",
    "video_llava": "VideoLlavaForConditionalGeneration",
    "llava_next_video": "LlavaNextVideoForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
}
