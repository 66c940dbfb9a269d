#!/usr/bin/env python3
"""Drop-in for LLaVA's / Video-LLaVA's ``train_mem.py``: the same flag names, our trainer.

A launch script written for LLaVA works after swapping the script path::

    deepspeed scripts/train_mem.py --deepspeed scripts/zero2.json \\
        --model_name_or_path LanguageBind/Video-LLaVA-7B-hf \\
        --data_path train.json --video_folder videos/ --bf16 True --tf32 True ...

Flags map onto :class:`llava_star.training.config.TrainConfig`. Our ``model_max_length`` counts the
video tokens the processor expands, so Video-LLaVA's ``--tokenizer_model_max_length``
(its limit after expansion) takes precedence over its ``--model_max_length`` when given.
Honoured as LLaVA does: ``--mm_projector_lr`` / ``--mm_vision_tower_lr`` (parameter groups
of their own), ``--pretrain_mm_mlp_adapter`` (LLaVA's ``mm_projector.bin`` loaded into the
projector), ``--image_aspect_ratio pad`` (images padded to a square with the processor's
mean), ``--group_by_modality_length`` (batches by media kind and length), ``--cache_dir``,
``--version plain`` (LLaVA's pretraining prompt), LoRA under ZeRO-3, and LLaVA-NeXT's
``--mm_tunable_parts``, ``--frames_upbound`` with ``--force_sample True``,
``--add_time_instruction`` and YAML data lists. Flags that describe the architecture
(``--vision_tower``, ``--mm_vision_select_layer``, ``--image_grid_pinpoints`` ...) are fixed
by the transformers checkpoint's config and processor, so they are accepted and ignored
with a note (values no transformers class has, such as ``--mm_projector_type mlp3x_gelu``,
are refused). Flags for things this trainer does not do the same way (4/8-bit training,
LLaVA-NeXT's per-row video newlines, frame sampling by fps ...) are errors that say what
to use instead. docs/train.md lists every flag. Any other ``--name
value`` that is a ``transformers.TrainingArguments`` field (``--run_name``,
``--torch_compile``, ``--dataloader_drop_last`` ...) is passed through, as LLaVA's
HfArgumentParser did.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

# run as a file (`python scripts/train_mem.py`, `deepspeed scripts/train_mem.py`) from a checkout
_REPO_ROOT = Path(__file__).resolve().parents[1]
if (_REPO_ROOT / "llava_star").is_dir() and str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from llava_star.distributed import die_with_launcher
from llava_star.errors import ConfigError, LlavaStarError
from llava_star.log import configure_logging
from llava_star.stages.train import run
from llava_star.training.config import TrainConfig, make_config, parse_key_value

logger = logging.getLogger("train_mem")

# fixed by the checkpoint's config.json / processor, so nothing to do
IGNORED_FLAGS = (
    "vision_tower",
    "image_tower",
    "video_tower",
    "mm_projector_type",
    "mm_vision_select_layer",
    "mm_vision_select_feature",
    "mm_use_im_start_end",
    "mm_use_im_patch_token",
    "mm_patch_merge_type",
    "image_grid_pinpoints",
    "lazy_preprocess",
    "is_multimodal",
    "per_device_eval_batch_size",
    "X",
    "double_quant",
    "quant_type",
    "lora_weight_path",
    "mpt_attn_impl",
    "remove_unused_columns",
    "freeze_mm_vision_resampler",
)


def str_to_bool(text: str) -> bool:
    """HfArgumentParser's booleans: ``--bf16 True``, ``--bf16 false``, ``--bf16 1``.

    >>> str_to_bool("True"), str_to_bool("no")
    (True, False)
    """
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "y"):
        return True
    if lowered in ("false", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train_mem.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)

    def flag(name: str, kind: Any = str, **options: Any) -> None:
        if kind is bool:
            options.update(type=str_to_bool, nargs="?", const=True)
        else:
            options.setdefault("type", kind)
        parser.add_argument("--" + name, **options)

    flag("model_name_or_path", required=True)
    flag("data_path", nargs="+", required=True)
    flag("video_folder")
    flag("image_folder")
    flag("output_dir", required=True)
    flag("num_frames", int)
    for name in (
        "num_train_epochs",
        "learning_rate",
        "weight_decay",
        "warmup_ratio",
        "lora_dropout",
        "mm_projector_lr",
        "mm_vision_tower_lr",
    ):
        flag(name, float)
    for name in (
        "max_steps",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "model_max_length",
        "dataloader_num_workers",
        "seed",
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "lora_r",
        "lora_alpha",
        "bits",
        "local_rank",
        "tokenizer_model_max_length",
    ):
        flag(name, int)
    for name in (
        "bf16",
        "fp16",
        "tf32",
        "gradient_checkpointing",
        "lora_enable",
        "freeze_backbone",
        "tune_mm_mlp_adapter",
        "freeze_mm_mlp_adapter",
        "unfreeze_mm_vision_tower",
        "group_by_modality_length",
    ):
        flag(name, bool)
    flag("lr_scheduler_type")
    flag("save_strategy")
    flag("evaluation_strategy")
    flag("eval_strategy")
    flag("deepspeed")
    flag("attn_implementation")
    flag("lora_bias")
    flag("pretrain_mm_mlp_adapter")
    flag("version")
    flag("image_aspect_ratio")
    flag("cache_dir")
    flag("resume_from_checkpoint")
    flag("trust_checkpoint", bool)  # llava-star's: resume a checkpoint without its manifest
    # LLaVA-NeXT's video training (scripts/video/train/*.sh)
    flag("mm_tunable_parts")
    flag("frames_upbound", int)
    flag("force_sample", bool)
    flag("video_fps", int)
    flag("add_time_instruction", bool)
    flag("mm_newline_position")
    flag("mm_spatial_pool_stride", int)
    flag("mm_spatial_pool_mode")
    flag("report_to", nargs="+")
    for name in IGNORED_FLAGS:
        flag(name, nargs="*")
    return parser


def passthrough_arguments(rest: list[str]) -> dict[str, Any]:
    """``--name value`` / ``--name=value`` / ``--name`` pairs left over, for TrainingArguments."""
    extras: dict[str, Any] = {}
    index = 0
    while index < len(rest):
        token = rest[index]
        if not token.startswith("--"):
            raise ConfigError(f"unexpected argument {token!r}")
        name, separator, value = token[2:].partition("=")
        if not separator:
            has_value = index + 1 < len(rest) and not rest[index + 1].startswith("--")
            value = rest[index + 1] if has_value else "true"
            index += has_value
        extras[name] = parse_key_value(f"{name}={value}")[1]
        index += 1
    return extras


def _check_training_argument_names(extras: dict[str, Any]) -> None:
    if not extras:
        return
    import dataclasses

    from transformers import TrainingArguments

    known = {field.name for field in dataclasses.fields(TrainingArguments)}
    for name in extras:
        if name not in known:
            raise ConfigError(
                f"--{name}: unknown flag (neither a LLaVA train_mem.py flag nor a TrainingArguments field)"
            )


def _reject_unsupported(args: argparse.Namespace) -> None:
    if args.bits not in (None, 16):
        raise ConfigError("--bits: 4/8-bit (QLoRA) training is not supported; use --bits 16 with --lora_enable True")
    if args.lora_bias not in (None, "none"):
        raise ConfigError(f"--lora_bias: only 'none' is supported, got {args.lora_bias!r}")
    for name in ("evaluation_strategy", "eval_strategy"):
        if getattr(args, name) not in (None, "no"):
            raise ConfigError(f"--{name}: evaluation during training is not supported; use `llava-star eval`")
    _reject_unsupported_video_options(args)
    _reject_other_architectures(args)


# architecture flags whose other values no transformers LLaVA class has: value -> why
_ARCHITECTURE_VALUES = {
    "mm_projector_type": (("mlp2x_gelu",), "transformers' LLaVA classes have the mlp2x_gelu projector alone"),
    "mm_use_im_start_end": (("False", "false"), "transformers' LLaVA classes put no <im_start>/<im_end> around images"),
    "mm_use_im_patch_token": (("False", "false"), "transformers' LLaVA classes have no <im_patch> tokens"),
    "mm_vision_select_feature": (("patch", "cls_patch"), "transformers' LLaVA classes select patch or cls_patch"),
}


def _reject_other_architectures(args: argparse.Namespace) -> None:
    """An architecture flag is the checkpoint's; a value no transformers class has cannot be it."""
    for name, (allowed, why) in _ARCHITECTURE_VALUES.items():
        values = getattr(args, name) or []
        if any(value not in allowed for value in values):
            raise ConfigError(f"--{name} {' '.join(values)}: {why}; pass {allowed[0]} (or leave the flag out)")


def _reject_unsupported_video_options(args: argparse.Namespace) -> None:
    """LLaVA-NeXT's video options that transformers' LLaVA-OneVision / LLaVA-NeXT-Video fix otherwise."""
    if args.mm_newline_position not in (None, "one_token"):
        raise ConfigError(
            f"--mm_newline_position {args.mm_newline_position}: transformers' LlavaOnevisionForConditionalGeneration "
            "appends one image_newline after each video's tokens (LLaVA-NeXT's one_token) and cannot place them per "
            "row or frame; pass --mm_newline_position one_token"
        )
    if args.mm_spatial_pool_stride not in (None, 2):
        raise ConfigError(
            f"--mm_spatial_pool_stride {args.mm_spatial_pool_stride}: transformers' LLaVA-OneVision "
            "pools video features by 2 (fixed in the class); pass 2"
        )
    if args.mm_spatial_pool_mode not in (None, "bilinear"):
        raise ConfigError(
            f"--mm_spatial_pool_mode {args.mm_spatial_pool_mode}: transformers' LLaVA-OneVision pools "
            "video features bilinearly (fixed in the class); pass bilinear"
        )
    if (args.frames_upbound is not None or args.video_fps is not None) and not args.force_sample:
        raise ConfigError(
            "--frames_upbound/--video_fps without --force_sample True: LLaVA-NeXT then samples one frame per "
            "second (up to frames_upbound); this trainer samples frames uniformly over the clip: pass "
            "--frames_upbound N --force_sample True (or --num_frames N)"
        )


# LLaVA-NeXT's --mm_tunable_parts -> the TrainConfig freeze flag of each part
_TUNABLE_PARTS = {
    "mm_vision_tower": "freeze_vision_tower",
    "mm_mlp_adapter": "freeze_projector",
    "mm_language_model": "freeze_language_model",
}


def tunable_parts(text: str) -> dict[str, bool]:
    """``mm_vision_tower,mm_mlp_adapter`` -> the freeze flags (parts not named are frozen).

    >>> tunable_parts("mm_mlp_adapter,mm_language_model")
    {'freeze_vision_tower': True, 'freeze_projector': False, 'freeze_language_model': False}
    """
    parts = [part.strip() for part in text.split(",") if part.strip()]
    for part in parts:
        if part not in _TUNABLE_PARTS:
            what = "no vision resampler in transformers' LLaVA classes" if part == "mm_vision_resampler" else "unknown"
            raise ConfigError(f"--mm_tunable_parts: {part!r}: {what}; known: {', '.join(_TUNABLE_PARTS)}")
    return {key: part not in parts for part, key in _TUNABLE_PARTS.items()}


def prompt_template(version: str) -> str:
    """LLaVA's --version -> TrainConfig's prompt_template: ``plain`` is LLaVA's pretraining
    format; a conversation template (v1, qwen_1_5 ...) is the checkpoint's own chat template.

    >>> prompt_template("plain"), prompt_template("v1")
    ('plain', 'checkpoint')
    """
    if version == "plain":
        return "plain"
    logger.info(
        "--version %s: prompts use the checkpoint's own chat template (saved with it, so generation "
        "and evaluation prompt the same way)",
        version,
    )
    return "checkpoint"


def image_aspect_ratio(text: str) -> str:
    """LLaVA's --image_aspect_ratio -> TrainConfig's (anyres: the checkpoint's processor tiles).

    >>> image_aspect_ratio("pad"), image_aspect_ratio("anyres_max_9")
    ('pad', 'square')
    """
    if text in ("pad", "square"):
        return text
    if text == "anyres" or text.startswith("anyres_max_"):
        logger.info(
            "--image_aspect_ratio %s: LLaVA-NeXT / OneVision processors tile images themselves "
            "(image_grid_pinpoints in the checkpoint's config)",
            text,
        )
        return "square"
    raise ConfigError(f"--image_aspect_ratio {text}: expected pad, square, anyres or anyres_max_N")


# LLaVA flag -> TrainConfig key, where the value carries over unchanged
_RENAMED = {
    "model_name_or_path": "model",
    "data_path": "data",
    "video_folder": "video_root",
    "image_folder": "image_root",
    "lora_enable": "lora",
    "freeze_backbone": "freeze_language_model",
    "freeze_mm_mlp_adapter": "freeze_projector",
    "group_by_modality_length": "group_by_media",
    "mm_projector_lr": "projector_learning_rate",
    "mm_vision_tower_lr": "vision_learning_rate",
    "pretrain_mm_mlp_adapter": "projector_weights",
    "add_time_instruction": "video_time_instruction",
}
_SAME = (
    "output_dir",
    "num_frames",
    "num_train_epochs",
    "max_steps",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_ratio",
    "weight_decay",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "model_max_length",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "bf16",
    "fp16",
    "tf32",
    "gradient_checkpointing",
    "deepspeed",
    "attn_implementation",
    "dataloader_num_workers",
    "seed",
    "logging_steps",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "report_to",
    "resume_from_checkpoint",
    "trust_checkpoint",
    "cache_dir",
)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """LLaVA-style command line -> TrainConfig (errors name the flag)."""
    args, rest = build_parser().parse_known_args(argv)
    _reject_unsupported(args)
    ignored = sorted(name for name in IGNORED_FLAGS if getattr(args, name) is not None)
    if ignored:
        logger.info("ignoring %s: fixed by the checkpoint's config", ", ".join("--" + name for name in ignored))
    values: dict[str, Any] = {key: getattr(args, flag) for flag, key in _RENAMED.items()}
    values.update({key: getattr(args, key) for key in _SAME})
    if args.tokenizer_model_max_length:  # Video-LLaVA's limit after expanding media tokens, i.e. ours
        values["model_max_length"] = args.tokenizer_model_max_length
    if args.tune_mm_mlp_adapter:  # LLaVA's pretraining stage: only the projector learns
        values.update(freeze_language_model=True, freeze_vision_tower=True)
    if args.unfreeze_mm_vision_tower:
        values["freeze_vision_tower"] = False
    if args.mm_tunable_parts:  # LLaVA-NeXT: replaces the other freezing flags
        values.update(tunable_parts(args.mm_tunable_parts))
    if args.group_by_modality_length:  # LLaVA's LengthGroupedSampler: by modality and by length
        values["group_by_length"] = True
    if args.version is not None:
        values["prompt_template"] = prompt_template(args.version)
    if args.image_aspect_ratio is not None:
        values["image_aspect_ratio"] = image_aspect_ratio(args.image_aspect_ratio)
    if args.frames_upbound is not None:  # with --force_sample True: exactly this many, uniformly
        values["num_frames"] = args.frames_upbound
    if args.lora_enable and args.mm_projector_lr is None and args.learning_rate is not None:
        # LLaVA's create_optimizer puts the projector in the main group: it learns at --learning_rate
        values["projector_learning_rate"] = args.learning_rate
    if values.get("report_to") == ["none"]:
        values["report_to"] = []
    extras = passthrough_arguments(rest)
    _check_training_argument_names(extras)
    values["trainer_args"] = extras
    return make_config({key: value for key, value in values.items() if value is not None})


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    die_with_launcher()  # a torchrun rank ends with its launcher, kill -9 included
    try:
        run(parse_args(argv))
    except LlavaStarError as error:
        logger.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
