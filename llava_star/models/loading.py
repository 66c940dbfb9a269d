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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llava_star.errors import ConfigError
from llava_star.models.families import FAMILIES, family_of
from llava_star.models.original import convert_command, original_kind
from llava_star.optional import is_available, require

logger = logging.getLogger(__name__)

ATTENTION_IMPLEMENTATIONS = ("flash_attention_2", "sdpa", "eager")
# Video tokens one video may cost in the language model, for processors that size frames
# by a pixel budget (Qwen2-VL, Qwen2.5-VL). Their hub repos ship only the image processor's
# config, so the video processor inherits the image budget (max_pixels 12845056 per frame):
# 8 frames of 720p became 4,784 tokens, past a 4096-token model_max_length. 2048 keeps 8
# frames of 854x480 as they were (2,040) and bounds 720p and 1080p alike.
VIDEO_TOKEN_BUDGET = 2048
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


def choose_attention(requested: str | None, device: str, *, half_precision: bool = True) -> str:
    """The attention kernel to load with: the one requested, else the fastest that can run.

    ``device`` is where the model will compute, which for training is not where it loads
    (the Trainer moves a CPU-loaded model to its GPU). flash-attn takes only fp16/bf16
    inputs, so without ``half_precision`` (fp32 weights, no autocast) it is never chosen
    by itself, and asking for it is an error.

    >>> choose_attention(None, "cpu")
    'sdpa'
    """
    if requested is None:
        if device.startswith("cuda") and half_precision and is_available("flash_attn"):
            return "flash_attention_2"
        return "sdpa"
    if requested not in ATTENTION_IMPLEMENTATIONS:
        raise ConfigError(
            f"attn_implementation: expected one of {', '.join(ATTENTION_IMPLEMENTATIONS)}, got {requested!r}"
        )
    if requested == "flash_attention_2":
        if not device.startswith("cuda"):
            raise ConfigError(f"attn_implementation: flash_attention_2 needs a CUDA device, not {device!r}")
        if not half_precision:
            raise ConfigError(
                "attn_implementation: flash_attention_2 needs bf16 or fp16 (flash-attn refuses fp32); "
                "add --bf16 or choose sdpa"
            )
        if not is_available("flash_attn"):
            require("flash_attn", "attn_implementation=flash_attention_2")
    return requested


def apply_video_token_budget(processor: Any, budget: int | None) -> int | None:
    """Bound the video tokens per video of a pixel-budget video processor; returns the
    budget applied (``None`` for processors whose token count the geometry fixes).

    transformers' ``cap_pixels_per_frame`` gives each frame an even share of
    ``0.9 * max_video_tokens`` tokens' worth of pixels, so the whole video stays within
    ``budget`` whatever its frame count and resolution.
    """
    video_processor = getattr(processor, "video_processor", None)
    if budget is None or not hasattr(video_processor, "max_video_tokens"):
        return None
    if budget < 1:
        raise ConfigError(f"video_token_budget: expected a positive number of tokens, got {budget!r}")
    video_processor.cap_pixels_per_frame = True
    if type(video_processor).__name__ in _WHOLE_VIDEO_PIXEL_BUDGET:
        _budget_whole_video_pixels(video_processor, budget)
    else:
        video_processor.max_video_tokens = budget * 10 // 9
    return budget


# Video processors whose ``size["longest_edge"]`` is the whole video's pixels (frames x height
# x width) and whose ``max_video_tokens`` is a per-frame ceiling (768), not a video total
_WHOLE_VIDEO_PIXEL_BUDGET = frozenset({"Qwen3VLVideoProcessor"})


def _budget_whole_video_pixels(video_processor: Any, budget: int) -> None:
    """Qwen3-VL: each token is a (patch x merge)^2 square over ``temporal_patch_size`` frames,
    so ``budget`` tokens are ``budget * factor^2 * temporal_patch_size`` pixels of video. The
    hub's 25,165,824 (12,288 tokens) gave 8 frames of 720p 3,520 tokens and of 1080p 8,160."""
    factor = video_processor.patch_size * video_processor.merge_size
    size = dict(video_processor.size)
    size["longest_edge"] = budget * factor * factor * video_processor.temporal_patch_size
    video_processor.size = size


# what an original-repository checkpoint of each family is, in words
_ORIGINAL_KINDS = {
    "video_llava": "an original Video-LLaVA checkpoint",
    "llava": "an original LLaVA-1.5 checkpoint (an image model)",
    "llava_next_video": "an original LLaVA-NeXT-Video checkpoint",
    "llava_onevision": "an original LLaVA-OneVision / LLaVA-Video checkpoint",
    "llava_next": "an original LLaVA-NeXT image checkpoint (an image model)",
}


def refuse_original_checkpoint(name: str, cache_dir: str | None = None) -> None:
    """Stop with the command to run when ``name`` is in the original LLaVA repositories'
    layout (``LlavaLlamaForCausalLM``...), which transformers would misread as its own
    ``llava`` model type or refuse as an unknown architecture."""
    from transformers import PretrainedConfig

    try:
        raw, _ = PretrainedConfig.get_config_dict(name, cache_dir=cache_dir)
    except (OSError, ValueError):
        return  # AutoConfig reports it
    kind = original_kind(raw)
    if kind is None and raw.get("model_type") in ("llama", "mistral", "qwen2") and "text_config" not in raw:
        raise ConfigError(
            f"model: {name} is a language model alone ({raw.get('model_type')}); LLaVA's pretrain/finetune scripts "
            "add --vision_tower and the projector at train time, here they are built into one checkpoint first: "
            f"`llava-star convert {name} --vision-tower CLIP_DIR [--projector mm_projector.bin] -o DIR`, then train DIR "
            "(Video-LLaVA's scripts, whose LanguageBind towers are not composed here: start from "
            "LanguageBind/Video-LLaVA-7B-hf)"
        )
    if kind is None:
        return
    what, converted = _ORIGINAL_KINDS[kind], FAMILIES[kind].example
    how = f"convert it with `{convert_command(name)}`"
    raise ConfigError(
        f"model: {name} is {what} ({', '.join(raw.get('architectures') or [raw.get('model_type')])}), "
        f"not a transformers one; {how}, or load a converted checkpoint such as {converted}"
    )


def model_family(name: str, cache_dir: str | None = None) -> str:
    """The family of a hub id or checkpoint directory, from its config alone (no weights);
    an original-repository checkpoint stops here with the command that converts it."""
    return model_family_and_type(name, cache_dir)[0]


def model_family_and_type(name: str, cache_dir: str | None = None) -> tuple[str, str]:
    """:func:`model_family` and the checkpoint's ``model_type`` (a family's variants differ in
    what serves them)."""
    from transformers import AutoConfig

    refuse_original_checkpoint(name, cache_dir)
    try:
        config = AutoConfig.from_pretrained(name, cache_dir=cache_dir)
    except (OSError, ValueError) as error:
        raise ConfigError(f"model: cannot load a config from {name!r}: {error}") from None
    return family_of(config.model_type), config.model_type


def load_processor(
    name: str, family: str, video_token_budget: int | None = VIDEO_TOKEN_BUDGET, cache_dir: str | None = None
) -> Any:
    """The checkpoint's processor with a chat template and the video token budget: every
    backend renders prompts and sizes videos through it."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(name, cache_dir=cache_dir)
    if getattr(processor, "chat_template", None) is None:
        logger.warning("%s has no chat template; using llava_star's %s template", name, family)
        processor.chat_template = FAMILIES[family].chat_template
    apply_video_token_budget(processor, video_token_budget)
    return processor


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: str = "auto",
    device: str = "auto",
    attn_implementation: str | None = None,
    compute_device: str | None = None,
    autocast: bool = False,
    video_token_budget: int | None = VIDEO_TOKEN_BUDGET,
    cache_dir: str | None = None,
) -> LoadedModel:
    """Load a supported video LVLM and its processor, ready for inference.

    ``name_or_path`` is a hub id (e.g. ``LanguageBind/Video-LLaVA-7B-hf``) or a directory
    written by ``save_pretrained`` (e.g. by ``llava-star tiny-model``). ``compute_device``
    is where the model will run when that is not ``device`` (training loads on the CPU
    and the Trainer moves the model to its GPU); the attention kernel must suit it.
    ``autocast`` says the forward pass runs under bf16/fp16 autocast (mixed-precision
    training of fp32 weights), which flash-attn accepts too. ``video_token_budget`` bounds
    the video tokens per video where the processor sizes frames by pixels (Qwen2-VL,
    Qwen2.5-VL; :func:`apply_video_token_budget`); ``None`` keeps the checkpoint's setting.
    ``cache_dir`` is where hub downloads are kept (from_pretrained's, LLaVA's --cache_dir).
    """
    import torch
    from transformers import AutoModelForImageTextToText

    name = str(name_or_path)
    family = model_family(name, cache_dir)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    run_on = resolve_device(compute_device) if compute_device is not None else device
    half = autocast or torch_dtype in (torch.bfloat16, torch.float16)
    attention = choose_attention(attn_implementation, run_on, half_precision=half)
    model = AutoModelForImageTextToText.from_pretrained(
        name, dtype=torch_dtype, attn_implementation=attention, cache_dir=cache_dir
    )
    model.to(device)
    model.eval()
    processor = load_processor(name, family, video_token_budget, cache_dir)
    logger.info("loaded %s (%s, %s, %s attention) on %s", name, family, torch_dtype, attention, device)
    return LoadedModel(model=model, processor=processor, family=family, name=name)


def model_from_state(model_class: Any, config: Any, state: Mapping[str, Any]) -> Any:
    """A ``model_class(config)`` holding ``state``: every key, every shape, strictly (no
    weight missing or left over). Built on the meta device, the tensors of ``state`` become
    its parameters: no second copy, and no ZeRO-3 partitioning."""
    import torch

    with torch.device("meta"):
        model = model_class(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model
