"""The train stage's settings: :class:`TrainConfig`, whose fields carry their own flag help,
and the ways to fill it (a mapping, a YAML file, ``key=value`` items, the command line).

Defaults are the paper's (Video-STaR, section 4): 1 epoch, lr 2e-5, cosine schedule, 3%
warmup, vision tower frozen, projector and language model trained.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_star.config import (
    add_config_flags,
    config_from_mapping,
    numbers_in_scientific_notation,
    option,
    parse_override,
    read_yaml_mapping,
)
from llava_star.errors import ConfigError
from llava_star.models.loading import VIDEO_TOKEN_BUDGET, choose_attention
from llava_star.training.precision import load_dtype

CONFIG_FILE = "llava_star_train_config.json"
FAILURES_FILE = "train_failures.jsonl"
SUMMARY_FILE = "train_summary.json"
SAVE_STRATEGIES = ("no", "steps", "epoch")
OBJECTIVES = ("sft", "dpo")
IMAGE_ASPECT_RATIOS = ("square", "pad")
PROMPT_TEMPLATES = ("checkpoint", "plain")
LR_SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")
FULL_LEARNING_RATE = 2e-5  # the paper's (and LLaVA's finetune.sh) rate for full fine-tuning
LORA_LEARNING_RATE = 2e-4  # LLaVA's finetune_lora.sh: adapters learn at 10x the full rate
# TrainingArguments that TrainConfig sets itself; passing them as extras would be ambiguous
_OWNED_TRAINING_ARGUMENTS = frozenset(
    {
        "output_dir",
        "num_train_epochs",
        "max_steps",
        "learning_rate",
        "lr_scheduler_type",
        "warmup_steps",
        "weight_decay",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "bf16",
        "fp16",
        "tf32",
        "gradient_checkpointing",
        "gradient_checkpointing_kwargs",
        "activation_checkpointing",
        "activation_checkpointing_kwargs",
        "deepspeed",
        "dataloader_num_workers",
        "seed",
        "logging_steps",
        "save_strategy",
        "save_steps",
        "save_total_limit",
        "report_to",
        "remove_unused_columns",
        "use_cpu",
        "dataloader_pin_memory",
    }
)
_POSITIVE = (
    "num_frames",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "model_max_length",
    "lora_r",
    "lora_alpha",
    "logging_steps",
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a fine-tuning run depends on; written next to the checkpoint.

    ``trainer_args`` passes further ``transformers.TrainingArguments`` (``max_grad_norm``,
    ``optim``, ``run_name`` ...) through unchanged, as LLaVA's HfArgumentParser did.
    """

    model: str = option(help="hub id or local checkpoint directory of a supported video LVLM", flags=("--model",))
    data: tuple[str, ...] = option(
        help="LLaVA conversation JSON file(s), e.g. the output of `llava-star export`", flags=("--data",)
    )
    output_dir: str = option(
        help="checkpoint directory to write (loads with from_pretrained)", flags=("-o", "--output-dir")
    )
    video_root: str | None = option(None, help="folder the records' `video` paths are relative to")
    image_root: str | None = option(
        None,
        help="folder the records' `image` paths are relative to (LLaVA's --image_folder)",
        flags=("--image-root", "--image-folder"),
    )
    num_frames: int = option(8, help="frames sampled per video")
    # the paper's schedule (Video-STaR, section 4): 1 epoch, lr 2e-5, cosine, warmup 0.03
    num_train_epochs: float = option(
        1.0, help="passes over the data (the paper: 1)", flags=("--epochs", "--num-train-epochs")
    )
    max_steps: int = option(-1, help="optimizer steps to stop after; -1: as many as the epochs take")
    learning_rate: float | None = option(
        None,
        help="peak learning rate; unset: 2e-5 for full fine-tuning (the paper), 2e-4 for LoRA adapters "
        "(LLaVA's finetune_lora.sh)",
    )
    lr_scheduler_type: str = option("cosine", help=f"learning-rate schedule: {' | '.join(LR_SCHEDULERS)}")
    warmup_ratio: float = option(0.03, help="fraction of the steps the learning rate warms up over")
    weight_decay: float = option(0.0, help="AdamW weight decay (none on biases and norms)")
    per_device_train_batch_size: int = option(4, help="records per batch on each process", flags=("--batch-size",))
    gradient_accumulation_steps: int = option(
        1, help="batches summed into one optimizer step", flags=("--grad-accum", "--gradient-accumulation-steps")
    )
    # counts the expanded video tokens (Video-LLaVA-7B: 8 frames x 257), unlike LLaVA's
    # --model_max_length, which counted one token per <video>; padding is per batch, so a
    # generous cap costs nothing
    model_max_length: int = option(
        4096, help="tokens per record after the media tokens are expanded; longer records are cut"
    )
    # saved with the checkpoint's processor, so generation after training uses it too
    video_token_budget: int | None = option(
        VIDEO_TOKEN_BUDGET,
        help="video tokens per video for processors that size frames by pixels (Qwen2-VL / 2.5-VL)",
    )
    # which parts train: the paper tunes the projector and the language model
    freeze_vision_tower: bool = option(
        True, help="keep the vision tower fixed (default; --no-freeze-vision-tower trains it)"
    )
    freeze_projector: bool = option(False, help="keep the projector fixed")
    freeze_language_model: bool = option(False, help="keep the language model fixed")
    # None: ``learning_rate``, except that with LoRA the projector, trained in full, keeps the
    # full fine-tuning rate 2e-5 (finetune_lora.sh: --mm_projector_lr 2e-5)
    projector_learning_rate: float | None = option(
        None, help="learning rate of the projector's own parameter group (LLaVA's --mm_projector_lr)"
    )
    vision_learning_rate: float | None = option(
        None, help="learning rate of the vision tower's own parameter group (--mm_vision_tower_lr)"
    )
    projector_weights: str | None = option(
        None, help="LLaVA's mm_projector.bin loaded into the projector first (--pretrain_mm_mlp_adapter)"
    )
    lora: bool = option(
        False, help="train LoRA adapters on the language model (peft), merged into the saved weights", flags=("--lora",)
    )
    lora_r: int = option(128, help="LoRA rank")
    lora_alpha: int = option(256, help="LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)")
    lora_dropout: float = option(0.05, help="dropout on the LoRA adapters' input")
    bf16: bool = option(False, help="bf16 mixed precision (trained weights kept in fp32)")
    fp16: bool = option(False, help="fp16 mixed precision with loss scaling")
    tf32: bool | None = option(None, help="allow TF32 matrix multiplies on Ampere and later GPUs")
    gradient_checkpointing: bool = option(False, help="recompute activations in the backward pass to save memory")
    deepspeed: str | None = option(None, help="DeepSpeed JSON, e.g. scripts/zero2.json")
    # turned on by itself for ZeRO-3 over several processes when the data mixes kinds (see MediaGroupedSampler)
    group_by_media: bool = option(
        False,
        help="batches of one media kind per step on all ranks (LLaVA's --group_by_modality_length); "
        "on by itself for ZeRO-3 over several processes with mixed media",
    )
    # LLaVA's --group_by_modality_length groups by modality and length; implies group_by_media
    group_by_length: bool = option(
        False, help="within a media kind, even total length per rank at each step (--group_by_modality_length)"
    )
    # "square": CLIP resizes and centre-crops, LLaVA-NeXT and OneVision tile (anyres); "pad" is
    # LLaVA's --image_aspect_ratio pad (expand2square)
    image_aspect_ratio: str = option(
        "square", help="square (the processor's geometry) | pad (to a square of the processor's mean, as LLaVA)"
    )
    # "plain": LLaVA's --version plain (pretraining: the media, then the answer)
    prompt_template: str = option(
        "checkpoint",
        help="checkpoint (its chat template) | plain (LLaVA's pretraining format, saved with the checkpoint)",
    )
    video_time_instruction: bool = option(
        False, help="LLaVA-NeXT's 'The video lasts for ... seconds' sentence before video questions"
    )
    cache_dir: str | None = option(None, help="where from_pretrained keeps hub downloads")
    attn_implementation: str | None = option(
        None, help="flash_attention_2 | sdpa | eager (default: flash_attention_2 when usable, else sdpa)"
    )
    dataloader_num_workers: int = option(
        2, help="DataLoader worker processes decoding frames and images", flags=("--num-workers",)
    )
    seed: int = option(0, help="seed of the data order, the LoRA initialisation and random data-list sampling")
    logging_steps: int = option(1, help="optimizer steps between logged losses")
    save_strategy: str = option("no", help=f"intermediate checkpoints: {' | '.join(SAVE_STRATEGIES)}")
    save_steps: int = option(500, help="optimizer steps between intermediate checkpoints (save_strategy steps)")
    save_total_limit: int | None = option(1, help="intermediate checkpoints kept")
    report_to: tuple[str, ...] = option((), help="experiment trackers to log to (wandb, tensorboard ...)")
    resume_from_checkpoint: str | None = option(
        None,
        help="a checkpoint-N folder to resume from; unset: the last complete one of the output directory "
        "(a rerun resumes); none: start afresh (the earlier attempt's checkpoints are removed)",
    )
    trust_checkpoint: bool = option(
        False, help="resume from a checkpoint without llava-star's manifest of file hashes (another tool's)"
    )
    objective: str = option(
        "sft",
        help="sft (instruction tuning on the answers) or dpo (preference pairs of `export --format dpo`: "
        "DPO's sigmoid loss against the starting checkpoint as the frozen reference)",
    )
    dpo_beta: float = option(0.1, help="objective dpo: DPO's beta (how far the policy may move from the reference)")
    dpo_sft_weight: float = option(
        0.0, help="objective dpo: weight of an SFT term (mean NLL of the chosen answers' tokens) added to the loss"
    )
    trainer_args: Mapping[str, Any] = option(
        help="further transformers.TrainingArguments as KEY=VALUE (e.g. max_grad_norm=1.0)", default_factory=dict
    )

    def __post_init__(self) -> None:
        for key in ("data", "report_to"):
            value = getattr(self, key)
            object.__setattr__(self, key, (value,) if isinstance(value, str) else tuple(str(v) for v in value))
        object.__setattr__(self, "trainer_args", dict(sorted(dict(self.trainer_args).items())))
        if self.learning_rate is None:
            object.__setattr__(self, "learning_rate", LORA_LEARNING_RATE if self.lora else FULL_LEARNING_RATE)
        if self.projector_learning_rate is None and self.lora and not self.freeze_projector:
            object.__setattr__(self, "projector_learning_rate", FULL_LEARNING_RATE)
        if not self.data:
            raise ConfigError("data: give at least one LLaVA JSON file")
        for key in _POSITIVE:
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ConfigError(f"{key}: expected a positive integer, got {getattr(self, key)!r}")
        if self.video_token_budget is not None and self.video_token_budget < 1:
            raise ConfigError(
                f"video_token_budget: expected a positive integer or null, got {self.video_token_budget!r}"
            )
        for key in ("learning_rate", "projector_learning_rate", "vision_learning_rate"):
            rate = getattr(self, key)
            if rate is not None and not (rate > 0 and math.isfinite(rate)):
                raise ConfigError(f"{key}: expected a positive number, got {rate!r}")
        _check_choice("prompt_template", self.prompt_template, PROMPT_TEMPLATES)
        _check_choice("image_aspect_ratio", self.image_aspect_ratio, IMAGE_ASPECT_RATIOS)
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio: expected a fraction in [0, 1), got {self.warmup_ratio!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout: expected a fraction in [0, 1), got {self.lora_dropout!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay: expected >= 0, got {self.weight_decay!r}")
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("num_train_epochs: expected > 0 (or set max_steps)")
        _check_choice("lr_scheduler_type", self.lr_scheduler_type, LR_SCHEDULERS)
        if self.bf16 and self.fp16:
            raise ConfigError("bf16, fp16: choose one mixed precision")
        if self.dataloader_num_workers < 0:
            raise ConfigError(f"dataloader_num_workers: expected >= 0, got {self.dataloader_num_workers!r}")
        _check_choice("save_strategy", self.save_strategy, SAVE_STRATEGIES)
        if self.save_steps < 1:
            raise ConfigError(f"save_steps: expected a positive integer, got {self.save_steps!r}")
        if self.freeze_vision_tower and self.freeze_projector and self.freeze_language_model and not self.lora:
            raise ConfigError("freeze_vision_tower, freeze_projector, freeze_language_model: nothing left to train")
        _check_choice("objective", self.objective, OBJECTIVES)
        if not (self.dpo_beta > 0 and math.isfinite(self.dpo_beta)) or not self.dpo_sft_weight >= 0:
            raise ConfigError(
                f"dpo_beta, dpo_sft_weight: expected > 0 and >= 0, got {self.dpo_beta}, {self.dpo_sft_weight}"
            )
        if self.objective == "dpo" and self.lora and not (self.freeze_projector and self.freeze_vision_tower):
            raise ConfigError(
                "objective: dpo with lora takes the model with its adapters off as the reference, so only the "
                "adapters may train: set freeze_projector (--freeze-projector) and freeze_vision_tower"
            )
        for key in self.trainer_args:
            if key in _OWNED_TRAINING_ARGUMENTS or key.replace("-", "_") in {f.name for f in dataclasses.fields(self)}:
                raise ConfigError(f"trainer_args.{key}: set it through the config's own '{key}' option")

    @property
    def failures_path(self) -> Path:
        return Path(self.output_dir) / FAILURES_FILE


def _check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: expected one of {', '.join(allowed)}, got {value!r}")


def make_config(values: Mapping[str, Any]) -> TrainConfig:
    """A TrainConfig from a mapping; an unknown key is an error naming it."""
    known = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown training option; known: {', '.join(sorted(known))}")
    values = dict(values)
    for key in ("data", "report_to"):  # one file is a list of one
        if isinstance(values.get(key), str):
            values[key] = [values[key]]
    # the one loader: every value checked against its field's type (`bf16: "no"` is an error)
    config = config_from_mapping(TrainConfig, values)
    check_trainer_args(config.trainer_args)
    return config


def check_trainer_args(trainer_args: Mapping[str, Any]) -> None:
    """Refuse a ``trainer_args`` key that is no ``transformers.TrainingArguments`` field, naming it.

    Checked when a config is made, so the cycle refuses it when it loads, not hours later when
    its train stage starts; transformers is imported only when there are keys to check.
    """
    if not trainer_args:
        return
    from transformers import TrainingArguments

    known = {field.name for field in dataclasses.fields(TrainingArguments)}
    for key in trainer_args:
        if key not in known:
            raise ConfigError(f"trainer_args.{key}: not a transformers.TrainingArguments field")


def parse_key_value(text: str) -> tuple[str, Any]:
    """``key=value`` with a YAML value, for config overrides (``2e-5`` is a number).

    >>> parse_key_value("max_grad_norm=0.5"), parse_key_value("learning_rate=2e-5")
    (('max_grad_norm', 0.5), ('learning_rate', 2e-05))
    """
    path, value = parse_override(text)
    return ".".join(path), numbers_in_scientific_notation(value)


def load_yaml_config(path: Path) -> dict[str, Any]:
    """The TrainConfig keys of a YAML file, read as the cycle's configs are (``2e-5`` is a number)."""
    return numbers_in_scientific_notation(read_yaml_mapping(path))


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """``--config``, one flag per :class:`TrainConfig` field, and ``--trainer-arg KEY=VALUE``."""
    parser.add_argument("--config", type=Path, help="YAML file of TrainConfig keys (flags override it)")
    add_config_flags(parser, TrainConfig, skip=("trainer_args",))
    trainer_args = next(field for field in dataclasses.fields(TrainConfig) if field.name == "trainer_args")
    parser.add_argument(
        "--trainer-arg",
        dest="trainer_args",
        action="append",
        default=argparse.SUPPRESS,
        metavar="KEY=VALUE",
        help=trainer_args.metadata["help"],
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config of :func:`add_train_flags`' flags: the ``--config`` YAML, then the flags."""
    values = vars(args).copy()
    config_file = values.pop("config", None)
    merged = load_yaml_config(config_file) if config_file else {}
    trainer_args = dict(merged.pop("trainer_args", None) or {})
    trainer_args.update(parse_key_value(item) for item in values.pop("trainer_args", []))
    merged.update(values)
    merged["trainer_args"] = trainer_args
    return make_config(merged)


def model_dtype(config: TrainConfig) -> str:
    """The dtype the weights load in (training/precision.py says why).

    >>> model_dtype(TrainConfig(model="m", data=("d.json",), output_dir="o", bf16=True))
    'bfloat16'
    """
    return load_dtype(bf16=config.bf16, fp16=config.fp16, deepspeed=config.deepspeed is not None)


def training_attention(config: TrainConfig, *, cuda: bool) -> str:
    """The attention kernel for training: chosen for the GPU the Trainer will use, not for
    the CPU the weights load on; flash-attn only with bf16/fp16 (it refuses fp32).

    >>> training_attention(TrainConfig(model="m", data=("d.json",), output_dir="o"), cuda=False)
    'sdpa'
    """
    return choose_attention(
        config.attn_implementation, "cuda" if cuda else "cpu", half_precision=config.bf16 or config.fp16
    )
