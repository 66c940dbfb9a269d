"""Which engine answers: HF ``generate`` (every family) or vLLM (the families it serves).

``hf`` is transformers' batched ``generate``; ``vllm`` is :class:`~llava_star.generation.
vllm_answerer.VllmAnswerer` (LLaVA-NeXT-Video, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5, Gemma 4);
``auto`` is vLLM when it is installed and serves the family, else HF, and says which.
Both take the same options with the same meaning (frames, sampling, token budget), so a
generation config runs on either.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from llava_star.errors import ConfigError
from llava_star.generation.answerer import ModelAnswerer
from llava_star.generation.options import BACKENDS, GenerationOptions, check_backend
from llava_star.models.families import FAMILIES
from llava_star.models.loading import load_model
from llava_star.optional import is_available, require

if TYPE_CHECKING:
    from llava_star.generation.answerer import Answerer

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "build_answerer", "choose_backend"]


def choose_backend(requested: str, family: str, model_type: str | None = None) -> str:
    """``hf`` or ``vllm`` for a model of ``family`` (and ``model_type``, where the family's
    model types differ), logged; an impossible request is an error.

    >>> choose_backend("auto", "video_llava")
    'hf'
    >>> choose_backend("hf", "qwen2_vl")
    'hf'
    >>> choose_backend("auto", "qwen3_vl", "qwen3_vl_moe")
    'hf'
    """
    check_backend(requested)

    entry = FAMILIES[family]
    # vLLM 0.32 serves Video-LLaVA text-only, and loads no transformers-5 Qwen3-VL-MoE: those stay on HF
    served = entry.vllm_videos and model_type not in entry.vllm_unserved
    if model_type in entry.vllm_unserved:
        family = f"{family} ({model_type})"
    if requested == "vllm":
        if not served:
            raise ConfigError(f"backend: vllm does not answer videos of {family} models; use hf or auto")
        require("vllm", "backend vllm")
    if requested == "auto":
        installed = is_available("vllm")
        chosen = "vllm" if served and installed else "hf"
        reason = (
            "vllm is not installed" if not installed else f"vllm {'serves' if served else 'does not serve'} {family}"
        )
        logger.info("backend auto: %s (%s)", chosen, reason)
        return chosen
    return requested


def build_answerer(model: str, options: GenerationOptions, *, backend: str, family: str, device: str) -> Answerer:
    """The answerer of ``backend`` for ``model`` with the generation ``options``."""
    if backend == "vllm":
        from llava_star.generation.vllm_answerer import VllmAnswerer

        return VllmAnswerer(
            model,
            family=family,
            max_new_tokens=options.max_new_tokens,
            temperature=options.temperature,
            seed=options.seed,
            top_p=options.top_p,
            top_k=options.top_k,
            dtype=options.dtype,
            tensor_parallel_size=options.tensor_parallel_size,
            gpu_memory_utilization=options.gpu_memory_utilization,
            max_model_len=options.max_model_len,
            video_token_budget=options.video_token_budget,
        )

    loaded = load_model(
        model,
        dtype=options.dtype,
        device=device,
        attn_implementation=options.attn_implementation,
        video_token_budget=options.video_token_budget,
    )
    return ModelAnswerer(
        loaded,
        max_new_tokens=options.max_new_tokens,
        temperature=options.temperature,
        seed=options.seed,
        top_p=options.top_p,
        top_k=options.top_k,
    )
