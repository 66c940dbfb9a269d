"""Checkpoints and weights in the original LLaVA repositories' layout, recognised and read
into transformers' classes.

LLaVA, Video-LLaVA and LLaVA-NeXT save the projector as ``model.mm_projector.{0,2}.*``
(an ``nn.Sequential`` of Linear, GELU, Linear: ``mlp2x_gelu``); transformers names the
same two layers ``multi_modal_projector.linear_1`` / ``linear_2`` (the mapping of
transformers' ``convert_llava_weights_to_hf.py``). Files are read with
``torch.load(weights_only=True)`` or safetensors: a ``.bin`` from elsewhere is untrusted.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llava_star.errors import ConfigError

ORIGINAL_ARCHITECTURES = (
    "LlavaLlamaForCausalLM",
    "LlavaMistralForCausalLM",
    "LlavaQwenForCausalLM",
    "LlavaMptForCausalLM",
)
ORIGINAL_MODEL_TYPES = ("llava_llama", "llava_qwen", "llava_mistral", "llava_mpt")
# index in LLaVA's mlp2x_gelu nn.Sequential -> transformers' projector layer
PROJECTOR_LAYERS = {"0": "linear_1", "2": "linear_2"}
_PROJECTOR_KEY = re.compile(r"^(?:model\.)?mm_projector\.(\d+)\.(weight|bias)$")


def projector_key(key: str) -> str | None:
    """transformers' projector key of a LLaVA key, ``None`` for a key outside the projector.

    >>> projector_key("model.mm_projector.0.weight"), projector_key("model.mm_projector.2.bias")
    ('linear_1.weight', 'linear_2.bias')
    >>> projector_key("model.layers.0.mlp.up_proj.weight") is None
    True
    """
    match = _PROJECTOR_KEY.match(key)
    if match is None:
        if "mm_projector" in key:
            raise ConfigError(
                f"{key}: not an mlp2x_gelu projector weight (transformers' LLaVA classes have only that "
                "projector: Linear, GELU, Linear)"
            )
        return None
    index, kind = match.groups()
    if index not in PROJECTOR_LAYERS:
        raise ConfigError(
            f"{key}: projector layer {index} is not in mlp2x_gelu (layers 0 and 2); "
            "mlp3x_gelu and deeper projectors have no transformers class"
        )
    return f"{PROJECTOR_LAYERS[index]}.{kind}"


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Tensors of a ``.bin`` (tensors only: ``weights_only``) or ``.safetensors`` file."""
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as error:  # a pickle of more than tensors
        raise ConfigError(f"{path}: not a tensors-only checkpoint file: {error}") from None
    if not isinstance(state, Mapping) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ConfigError(f"{path}: expected a mapping of parameter names to tensors")
    return dict(state)


def projector_module(model: Any) -> Any:
    """The ``multi_modal_projector`` of a transformers LLaVA-family model."""
    found = [module for name, module in model.named_modules() if name.split(".")[-1] == "multi_modal_projector"]
    if len(found) != 1:
        raise ConfigError(f"{type(model).__name__}: no multi_modal_projector (an mlp2x_gelu projector) to load into")
    return found[0]


def load_projector_weights(model: Any, path: str | os.PathLike[str]) -> list[str]:
    """Load LLaVA's ``mm_projector.bin`` (``--pretrain_mm_mlp_adapter``) into the model's
    projector, every weight of both layers, shapes checked; returns the keys loaded.

    Under ZeRO-3 the projector is partitioned as it loads; its weights are gathered,
    written on rank 0 and partitioned again.
    """
    state = read_state_dict(path)
    mapped = {projector_key(key): value for key, value in state.items()}
    mapped.pop(None, None)
    projector = projector_module(model)
    expected = {name: parameter for name, parameter in projector.named_parameters()}
    missing, unexpected = sorted(expected.keys() - mapped.keys()), sorted(mapped.keys() - expected.keys())
    if missing or unexpected:
        raise ConfigError(
            f"{path}: projector weights do not match the model's projector: missing {missing}, "
            f"unexpected {unexpected} (keys in the file: {sorted(state)[:6]})"
        )
    parameters = list(projector.parameters())
    with _gathered(parameters):
        for name, parameter in expected.items():
            shape = tuple(getattr(parameter, "ds_shape", parameter.shape))
            if tuple(mapped[name].shape) != shape:
                raise ConfigError(
                    f"{path}: {name} has shape {tuple(mapped[name].shape)}, the model's projector {shape} "
                    "(a projector for another vision tower or language model)"
                )
            with _no_grad():
                parameter.copy_(mapped[name].to(parameter.dtype))
    return sorted(state)


def _gathered(parameters: list[Any]) -> Any:
    """Whole ZeRO-3 parameters for the block (written back from rank 0); a no-op otherwise."""
    from contextlib import nullcontext

    if not any(hasattr(parameter, "ds_id") for parameter in parameters):
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(parameters, modifier_rank=0)


def _no_grad() -> Any:
    import torch

    return torch.no_grad()


def original_kind(config: Mapping[str, Any]) -> str | None:
    """Which original family a config is (``llava``, ``llava_next`` for LLaVA-NeXT's image
    models, ``video_llava``, ``llava_next_video``, ``llava_onevision``), ``None`` for a
    transformers one.

    >>> original_kind({"architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava", "video_tower": "x"})
    'video_llava'
    >>> original_kind({"architectures": ["LlavaQwenForCausalLM"], "model_type": "llava"})
    'llava_onevision'
    >>> original_kind({"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava"}) is None
    True
    """
    architectures = config.get("architectures") or []
    if (
        not any(name in ORIGINAL_ARCHITECTURES for name in architectures)
        and config.get("model_type") not in ORIGINAL_MODEL_TYPES
    ):
        return None
    if config.get("video_tower") or config.get("image_tower"):
        return "video_llava"
    if "LlavaQwenForCausalLM" in architectures or config.get("model_type") == "llava_qwen":
        return "llava_onevision"  # LLaVA-OneVision and LLaVA-Video (Qwen2 language models)
    if config.get("mm_resampler_type") == "spatial_pool" or "mm_spatial_pool_stride" in config:
        return "llava_next_video"
    if str(config.get("mm_patch_merge_type", "flat")).startswith("spatial"):
        return "llava_next"
    return "llava"


def convert_command(source: str) -> str:
    """The command that converts ``source``, for error messages elsewhere."""
    return f"llava-star convert {source} -o {source.rstrip('/')}-hf"
