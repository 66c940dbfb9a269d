"""Load a transformers video LVLM and its processor from a hub id or a local directory.

Every supported family is a transformers model class reachable through
``AutoModelForImageTextToText`` / ``AutoProcessor``, so one loader serves them all; the
family name (from ``config.model_type``) is kept because a few things differ per family
(which video placeholder the chat template writes, how the vision features are laid out).

FlashAttention-2 is used when it can run (flash-attn importable and a CUDA device);
everything else gets PyTorch's ``sdpa``, which needs no extra package.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from llava_star.errors import ConfigError
from llava_star.models.templates import CHAT_TEMPLATES
from llava_star.optional import is_available, require

logger = logging.getLogger(__name__)

# config.model_type -> the family name used across llava_star
FAMILY_OF_MODEL_TYPE = {
    "video_llava": "video_llava",
    "llava_next_video": "llava_next_video",
    "llava_onevision": "llava_onevision",
    "qwen2_vl": "qwen2_vl",
    "qwen2_5_vl": "qwen2_vl",
}
ATTENTION_IMPLEMENTATIONS = ("flash_attention_2", "sdpa", "eager")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode, its processor, and which family it belongs to."""

    model: Any
    processor: Any
    family: str
    name: str

    @property
    def device(self) -> Any:
        return self.model.device


def family_of(model_type: str) -> str:
    """The llava_star family of a transformers ``model_type``.

    >>> family_of("qwen2_5_vl")
    'qwen2_vl'
    """
    try:
        return FAMILY_OF_MODEL_TYPE[model_type]
    except KeyError:
        supported = ", ".join(sorted(FAMILY_OF_MODEL_TYPE))
        raise ConfigError(f"model: unsupported model type {model_type!r}; supported: {supported}") from None


def resolve_device(device: str) -> str:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    """``auto`` is bfloat16 on a GPU that supports it and float32 elsewhere (CPU half is slow)."""
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def choose_attention(requested: str | None, device: str) -> str:
    """The attention kernel to load with: the one requested, else the fastest that can run.

    >>> choose_attention(None, "cpu")
    'sdpa'
    """
    if requested is None:
        if device.startswith("cuda") and is_available("flash_attn"):
            return "flash_attention_2"
        return "sdpa"
    if requested not in ATTENTION_IMPLEMENTATIONS:
        raise ConfigError(
            f"attn_implementation: expected one of {', '.join(ATTENTION_IMPLEMENTATIONS)}, got {requested!r}"
        )
    if requested == "flash_attention_2":
        if not device.startswith("cuda"):
            raise ConfigError(f"attn_implementation: flash_attention_2 needs a CUDA device, not {device!r}")
        require("flash_attn", "attn_implementation=flash_attention_2")
    return requested


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: str = "auto",
    device: str = "auto",
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load a supported video LVLM and its processor, ready for inference.

    ``name_or_path`` is a hub id (e.g. ``LanguageBind/Video-LLaVA-7B-hf``) or a directory
    written by ``save_pretrained`` (e.g. by ``llava-star tiny-model``).
    """
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    name = str(name_or_path)
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise ConfigError(f"model: cannot load a config from {name!r}: {error}") from None
    family = family_of(config.model_type)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    attention = choose_attention(attn_implementation, device)
    model = AutoModelForImageTextToText.from_pretrained(name, dtype=torch_dtype, attn_implementation=attention)
    model.to(device)
    model.eval()
    processor = AutoProcessor.from_pretrained(name)
    if getattr(processor, "chat_template", None) is None:
        logger.warning("%s has no chat template; using llava_star's %s template", name, family)
        processor.chat_template = CHAT_TEMPLATES[family]
    logger.info("loaded %s (%s, %s, %s attention) on %s", name, family, torch_dtype, attention, device)
    return LoadedModel(model=model, processor=processor, family=family, name=name)
