"""The checkpoint a run leaves: a ``from_pretrained``-loadable model and its processor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llava_star.models.checkpoints import write_hub_weight_names
from llava_star.training.lora import save_merged_lora

if TYPE_CHECKING:
    from llava_star.training.config import TrainConfig


def save_checkpoint(trainer: Any, processor: Any, config: TrainConfig) -> None:
    """Write a from_pretrained-loadable model + processor to ``config.output_dir``.

    LoRA adapters are merged into the base weights, so generation and lmms-eval load a
    plain checkpoint; under ZeRO-3 ``trainer.save_model`` gathers the 16-bit weights
    (``stage3_gather_16bit_weights_on_model_save`` in scripts/zero3*.json), and with LoRA
    the gathered weights are merged on rank 0 (:func:`~llava_star.training.lora.merged_lora_state`),
    since the partitioned model cannot merge itself (LLaVA's finetune_lora.sh runs LoRA on ZeRO-3).
    Vision-tower weights are written under the hub's names, which vLLM needs
    (models/checkpoints.py).
    """
    if config.lora:
        save_merged_lora(trainer, processor, config)
    else:
        trainer.save_model(config.output_dir)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        write_hub_weight_names(config.output_dir)
    trainer.accelerator.wait_for_everyone()
