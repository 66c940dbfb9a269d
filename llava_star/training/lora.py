"""LoRA on the language model (peft), and its merge into plain weights when the run saves.

LLaVA's ``finetune_lora.sh`` trains adapters on every linear layer of the language model and
the projector in full; the saved checkpoint here is the merged model, so generation and
lmms-eval load it like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llava_star.errors import ConfigError
from llava_star.optional import require
from llava_star.training.deepspeed import deepspeed_stage
from llava_star.training.parts import parameter_group, trainable_groups

if TYPE_CHECKING:
    from llava_star.training.config import TrainConfig


def language_linear_modules(model: Any) -> list[str]:
    """Names of the language model's linear layers, the LoRA targets (LLaVA's choice)."""
    import torch

    return sorted(
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and parameter_group(name + ".") == "language"
        and not name.endswith("lm_head")
    )


def add_lora(model: Any, config: TrainConfig) -> Any:
    """Wrap ``model`` with peft LoRA adapters on the language model's linear layers."""
    import torch

    peft = require("peft", "LoRA fine-tuning (--lora)")
    targets = language_linear_modules(model)
    if not targets:
        raise ConfigError(f"lora: found no linear layers in the language model of {config.model}")
    lora_config = peft.LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    # ZeRO-3 flattens each parameter group into one buffer of one dtype ("assert
    # len(set(t.dtype for t in tensors)) == 1"), so there the adapters take the weights'
    # dtype (bf16 with --bf16; LLaVA casts the model after adding LoRA); elsewhere peft's
    # fp32 adapters are kept
    zero3 = deepspeed_stage(config.deepspeed) == 3
    # the adapters' random start (lora_A) comes from the config's seed, not from whatever the
    # global RNG holds here: the Trainer seeds only later, and ZeRO-3's partitioned loading
    # draws from it first (ZeRO-3 and plain runs of one seed started from different adapters)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = peft.get_peft_model(model, lora_config, autocast_adapter_dtype=not zero3)
    # get_peft_model freezes everything but the adapters; the projector keeps training unless frozen
    groups = trainable_groups(config)
    for name, parameter in model.named_parameters():
        if "lora_" not in name and parameter_group(name) in groups:
            parameter.requires_grad_(True)
    return model


def is_peft(model: Any) -> bool:
    """Whether ``model`` is wrapped by peft (holds adapters)."""
    return hasattr(model, "peft_config")


def save_merged_lora(trainer: Any, processor: Any, config: TrainConfig) -> None:
    """The LoRA-merged model and the processor, written by rank 0 (every rank gathers under ZeRO-3)."""
    trainer.accelerator.wait_for_everyone()
    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    if deepspeed_stage(config.deepspeed) == 3:
        state = trainer.accelerator.get_state_dict(trainer.deepspeed)  # every rank takes part; rank 0 gets it
        if trainer.is_world_process_zero():
            from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

            from llava_star.models.loading import model_from_state

            lora = peft_model.peft_config["default"]
            unset_hf_deepspeed_config()  # the merged model is built whole: transformers must not partition it
            try:
                base = peft_model.base_model.model
                merged = model_from_state(type(base), base.config, merged_lora_state(state, lora.lora_alpha / lora.r))
                merged.generation_config = base.generation_config
            finally:
                set_hf_deepspeed_config(trainer.args.hf_deepspeed_config)
            merged.save_pretrained(config.output_dir)
            processor.save_pretrained(config.output_dir)
    elif trainer.is_world_process_zero():
        merged = peft_model.merge_and_unload()
        merged.save_pretrained(config.output_dir)
        processor.save_pretrained(config.output_dir)


def merged_lora_state(state: Mapping[str, Any], scaling: float, adapter: str = "default") -> dict[str, Any]:
    """A peft LoRA model's whole state dict as the plain model's: every adapted weight
    ``W + scaling * B @ A`` (peft's merge, ``scaling = lora_alpha / r``), names without
    peft's ``base_model.model.`` and ``.base_layer``.

    >>> import torch
    >>> state = {"base_model.model.fc.base_layer.weight": torch.zeros(2, 2), "base_model.model.fc.base_layer.bias": torch.ones(2),
    ...          "base_model.model.fc.lora_A.default.weight": torch.ones(1, 2), "base_model.model.fc.lora_B.default.weight": torch.ones(2, 1)}
    >>> merged = merged_lora_state(state, 2.0)
    >>> sorted(merged), merged["fc.weight"].tolist()
    (['fc.bias', 'fc.weight'], [[2.0, 2.0], [2.0, 2.0]])
    """
    prefix = "base_model.model."
    a_part, b_part = f".lora_A.{adapter}.", f".lora_B.{adapter}."
    merged = {
        key.removeprefix(prefix).replace(".base_layer.", "."): value
        for key, value in state.items()
        if ".lora_A." not in key and ".lora_B." not in key
    }
    for key, down in state.items():
        if a_part not in key:
            continue
        up = state[key.replace(a_part, b_part)]
        target = key.split(a_part)[0].removeprefix(prefix) + ".weight"
        weight = merged[target]
        merged[target] = (weight.float() + scaling * (up.float() @ down.float())).to(weight.dtype)
    return merged
