"""Stage 5b: instruction-tune a video LVLM on LLaVA conversation JSON with the HF Trainer.

``llava-star train --model M --data train.json --video-root DIR [--image-root DIR] -o CKPT_DIR``
runs one plain ``transformers.Trainer`` over :mod:`llava_star.training.data` (video,
image and text-only records in one run, the paper's mixture; frames and images decoded in
DataLoader workers, inputs built through the model's chat template, loss on assistant
tokens only). Defaults are the paper's: 1 epoch, lr 2e-5, cosine schedule, 3% warmup,
vision tower frozen, projector and language model trained. ``--lora`` trains LoRA
adapters on the language model through peft instead (merged into the weights at the
end); ``--deepspeed scripts/zero2.json`` shards optimizer state across GPUs.

The output directory is a ``save_pretrained`` checkpoint with its processor, so
``llava-star generate --model CKPT_DIR`` and lmms-eval load it like a hub model. The
resolved config goes to ``CKPT_DIR/llava_star_train_config.json``, samples that could not
be used to ``CKPT_DIR/train_failures.jsonl``, and the run's figures to
``CKPT_DIR/train_summary.json``.

This file is the recipe; what it is built from lives in :mod:`llava_star.training`: the
config (``training/config.py``), the model's parts (``parts.py``), LoRA (``lora.py``),
DeepSpeed (``deepspeed.py``), the Trainer (``trainer.py``) and the saved checkpoint
(``checkpoints.py``). ``scripts/train_mem.py`` maps LLaVA / Video-LLaVA's flag names onto
:class:`TrainConfig`.
"""

from __future__ import annotations

import argparse
import logging
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from llava_star.config import config_to_dict
from llava_star.errors import ConfigError, MissingDependencyError, RecordError
from llava_star.llava_json import media_paths
from llava_star.log import is_main_process
from llava_star.models.checkpoints import save_under_standard_names
from llava_star.models.families import FAMILIES
from llava_star.models.loading import load_model
from llava_star.models.original import load_projector_weights
from llava_star.records import write_json_atomic
from llava_star.runs import exclusive_directory
from llava_star.training.checkpoints import save_checkpoint
from llava_star.training.config import (
    CONFIG_FILE,
    FAILURES_FILE,
    SUMMARY_FILE,
    TrainConfig,
    add_train_flags,
    config_from_args,
    make_config,
    model_dtype,
    training_attention,
)
from llava_star.training.data import (
    ConversationDataset,
    ExampleSettings,
    PaddingCollator,
    failures_in,
    image_pad_colour,
)
from llava_star.training.data_lists import load_records
from llava_star.training.deepspeed import (
    check_deepspeed_optimizer,
    deepspeed_stage,
    group_by_media_needed,
    share_process_group_with_deepspeed,
)
from llava_star.training.lora import add_lora
from llava_star.training.parts import part_learning_rates, set_trainable
from llava_star.training.precision import log_memory_estimate, upcast_trained_weights
from llava_star.training.record_media import every_record_failed
from llava_star.training.resume import (
    checkpoint_to_resume,
    clear_earlier_attempt,
    deduplicate_lines,
    verify_before_resume,
)

# the stage's surface: the cycle and the demo build its config and read its summary from here
__all__ = ["CONFIG_FILE", "FAILURES_FILE", "SUMMARY_FILE", "TrainConfig", "build_parser", "main", "make_config", "run"]

logger = logging.getLogger(__name__)


TRAINING_TRANSFORMERS = "5.23"  # TrainingArguments(activation_checkpointing=...) is 5.23's name


def check_transformers_for_training() -> None:
    """Refuse, naming the way out, an environment whose transformers predates the training API used.

    The vLLM environment has transformers 5.19 (vLLM 0.32 pins <5.20): generation runs
    there, training in the environment of requirements/lock.txt. Checked here, before
    training/trainer.py imports transformers' Trainer.
    """
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) < Version(TRAINING_TRANSFORMERS):
        raise MissingDependencyError(
            f"train needs transformers >= {TRAINING_TRANSFORMERS}, this environment has {transformers.__version__} "
            "(vLLM 0.32 pins < 5.20): train in the environment of requirements/lock.txt "
            "(the cycle's launch.train: [PATH/.venv/bin/python, -m, llava_star])"
        )


def run(config: TrainConfig) -> dict[str, Any]:
    """Fine-tune ``config.model`` on ``config.data``; return the run's summary (also written to disk).

    Rank 0 holds the output directory for the job: a second copy stops at once (and a
    launcher such as torchrun stops the copy's other ranks with it).
    """
    check_transformers_for_training()
    with ExitStack() as held:
        if is_main_process():
            held.enter_context(exclusive_directory(config.output_dir, "train"))
        return _train(config)


def _train(config: TrainConfig) -> dict[str, Any]:
    import torch

    # imports transformers: only when a run starts
    from llava_star.training.trainer import ConversationTrainer, build_training_arguments, log_history_values

    # setup: the data, the Trainer's arguments, the model with the parts that train
    stage = deepspeed_stage(config.deepspeed)
    check_deepspeed_optimizer(config)
    from llava_star.training import dpo

    records = dpo.load_pairs(config.data) if config.objective == "dpo" else load_records(config.data, config.seed)
    output_dir = Path(config.output_dir)
    # TrainingArguments first: under ZeRO-3 it must exist before the model loads (zero.Init partitions it)
    training_arguments = build_training_arguments(config)
    world_size = training_arguments.world_size
    if stage == 3 and world_size > 1:
        share_process_group_with_deepspeed()
    # a rerun goes on from the last complete checkpoint; nothing of it loads before its manifest is checked
    run_settings = config_to_dict(config)
    resume = checkpoint_to_resume(output_dir, config.resume_from_checkpoint)
    if resume is not None and not config.trust_checkpoint:
        verify_before_resume(resume, run_settings, same_settings=config.resume_from_checkpoint is None)
    if is_main_process():
        if resume is None:
            clear_earlier_attempt(output_dir, config.failures_path)
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output_dir / CONFIG_FILE, run_settings)
    attention = training_attention(config, cuda=torch.cuda.is_available())
    # loaded on the CPU (ZeRO-3 partitions it there); the Trainer moves it to its GPU
    loaded = load_model(
        config.model,
        dtype=model_dtype(config),
        device="cpu",
        attn_implementation=attention,
        compute_device="cuda" if torch.cuda.is_available() else "cpu",
        autocast=config.bf16 or config.fp16,
        video_token_budget=config.video_token_budget,
        cache_dir=config.cache_dir,
    )
    model, processor, family = loaded.model, loaded.processor, FAMILIES[loaded.family]
    if stage == 3:
        save_under_standard_names(model)
    if not family.videos and any(media_paths(record, "video") for record in records):
        count = sum(1 for record in records if media_paths(record, "video"))
        raise ConfigError(
            f"model: {config.model} ({loaded.family}) is an image model; {count} records have videos "
            "(train a video LVLM on them, or leave them out)"
        )
    if config.prompt_template == "plain":  # saved with the processor: generation prompts the same way
        processor.chat_template = family.plain_template
    if config.projector_weights:
        loaded_keys = load_projector_weights(model, config.projector_weights)
        logger.info("train: projector weights %s loaded from %s", ", ".join(loaded_keys), config.projector_weights)
    counts = set_trainable(model, config)
    if config.lora:
        model = add_lora(model, config)
        counts["lora"] = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name and p.requires_grad)
    if config.deepspeed is None:  # DeepSpeed keeps fp32 master weights itself
        upcast_trained_weights(model)
    logger.info(
        "train: %s (%s), %d records, trainable parameters %s", config.model, loaded.family, len(records), counts
    )
    memory = log_memory_estimate(
        model, weight_bytes=4 if model_dtype(config) == "float32" else 2, stage=stage, world_size=world_size
    )
    settings = ExampleSettings(
        video_root=config.video_root,
        image_root=config.image_root,
        num_frames=config.num_frames,
        model_max_length=config.model_max_length,
        failures_path=str(config.failures_path),
        image_pad_colour=image_pad_colour(processor) if config.image_aspect_ratio == "pad" else None,
        time_instruction=config.video_time_instruction,
    )
    tokenizer = processor.tokenizer
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    dataset = (dpo.PairDataset if config.objective == "dpo" else ConversationDataset)(records, processor, settings)
    placeholders = dataset.usable_example_of_each_kind()
    for kind, example in placeholders.items():
        logger.info("train: the first usable %s record is %d tokens long", kind, len(example["input_ids"]))
    group_by_media = group_by_media_needed(config, stage, world_size, dataset.kinds)
    collator: Any = PaddingCollator(pad_token_id=pad_token_id, placeholders=placeholders)
    trainer_class, objective_settings = ConversationTrainer, {}
    if config.objective == "dpo":
        collator, trainer_class = dpo.PairCollator(collator), dpo.PreferenceTrainer
        reference = dpo.reference_model(config, loaded.family)
        objective_settings = {"reference": reference, "beta": config.dpo_beta, "sft_weight": config.dpo_sft_weight}
    trainer = trainer_class(
        model=model,
        args=training_arguments,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
        group_by_media=group_by_media,
        group_by_length=config.group_by_length,
        part_learning_rates=part_learning_rates(config),
        run_settings=run_settings,
        **objective_settings,
    )

    # work
    started = time.perf_counter()
    if resume is not None:
        logger.info("train: resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=None if resume is None else str(resume))
    seconds = time.perf_counter() - started

    # write: the checkpoint, then the run's figures (a sample met again after a resume is one failure)
    save_checkpoint(trainer, processor, config)
    if is_main_process():
        deduplicate_lines(config.failures_path)
    if every_record_failed(config.failures_path, records):
        raise RecordError(
            f"every one of the {len(records)} records was skipped (reasons in {config.failures_path}): "
            "nothing was trained on; check --video-root / --image-root and the data's paths"
        )
    losses = log_history_values(trainer.state.log_history, "loss")
    summary = {
        "model": config.model,
        "family": loaded.family,
        "records": len(records),
        "failures": failures_in(config.failures_path),
        "global_step": result.global_step,
        "resumed_from": None if resume is None else str(resume),
        "training_loss": result.training_loss,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "losses": losses,
        # before clipping; the equivalence tests compare them, since Adam's update hides a gradient's scale
        "grad_norms": log_history_values(trainer.state.log_history, "grad_norm"),
        "train_seconds": seconds,
        "train_samples_per_second": result.metrics.get("train_samples_per_second"),
        "trainable_parameters": counts,
        "attn_implementation": attention,
        "deepspeed_stage": stage,
        "memory_estimate_gib": memory,
        "deepspeed_enabled": bool(trainer.is_deepspeed_enabled),
        "group_by_media": group_by_media or config.group_by_length,
        "group_by_length": config.group_by_length,
        "learning_rates": getattr(trainer, "built_learning_rates", None),
        "world_size": world_size,
        "objective": config.objective,
    }
    if config.objective == "dpo":
        summary.update(dpo.summary_figures(trainer.state.log_history))
    if is_main_process():
        write_json_atomic(output_dir / SUMMARY_FILE, summary)
        logger.info(
            "train: %d steps, loss %.4f -> %.4f, %d failed samples, checkpoint %s",
            result.global_step,
            summary["first_loss"] or float("nan"),
            summary["last_loss"] or float("nan"),
            summary["failures"],
            output_dir,
        )
    return summary


def build_parser() -> argparse.ArgumentParser:
    """Flags generated from :class:`TrainConfig`: the config is the command line."""
    parser = argparse.ArgumentParser(prog="llava-star train", description=__doc__.split("\n\n")[0])
    add_train_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    run(config_from_args(build_parser().parse_args(argv)))
    return 0
