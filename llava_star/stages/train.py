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

``scripts/train_mem.py`` maps LLaVA / Video-LLaVA's flag names onto :class:`TrainConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_star.errors import ConfigError, MissingDependencyError
from llava_star.models.families import FAMILIES
from llava_star.models.loading import VIDEO_TOKEN_BUDGET
from llava_star.optional import require
from llava_star.records import write_json_atomic
from llava_star.runs import exclusive_directory
from llava_star.training.precision import estimate_memory_per_gpu, load_dtype, upcast_trained_weights

logger = logging.getLogger(__name__)

CONFIG_FILE = "llava_star_train_config.json"
FAILURES_FILE = "train_failures.jsonl"
SUMMARY_FILE = "train_summary.json"
SAVE_STRATEGIES = ("no", "steps", "epoch")
IMAGE_ASPECT_RATIOS = ("square", "pad")
PROMPT_TEMPLATES = ("checkpoint", "plain")
LR_SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")
FULL_LEARNING_RATE = 2e-5  # the paper's (and LLaVA's finetune.sh) rate for full fine-tuning
LORA_LEARNING_RATE = 2e-4  # LLaVA's finetune_lora.sh: adapters learn at 10x the full rate
# TrainingArguments that TrainConfig sets itself; passing them as extras would be ambiguous
_OWNED_TRAINING_ARGUMENTS = frozenset({
    "output_dir", "num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type", "warmup_steps",
    "weight_decay", "per_device_train_batch_size", "gradient_accumulation_steps", "bf16", "fp16", "tf32",
    "gradient_checkpointing", "gradient_checkpointing_kwargs", "activation_checkpointing",
    "activation_checkpointing_kwargs", "deepspeed", "dataloader_num_workers", "seed",
    "logging_steps", "save_strategy", "save_steps", "save_total_limit", "report_to", "remove_unused_columns",
    "use_cpu", "dataloader_pin_memory",
})  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """Everything a fine-tuning run depends on; written next to the checkpoint.

    ``trainer_args`` passes further ``transformers.TrainingArguments`` (``max_grad_norm``,
    ``optim``, ``run_name`` ...) through unchanged, as LLaVA's HfArgumentParser did.
    """

    model: str
    data: tuple[str, ...]
    output_dir: str
    video_root: str | None = None
    image_root: str | None = None
    num_frames: int = 8
    # the paper's schedule (Video-STaR, section 4): 1 epoch, lr 2e-5, cosine, warmup 0.03
    num_train_epochs: float = 1.0
    max_steps: int = -1
    # None: 2e-5 for full fine-tuning (the paper), 2e-4 for LoRA adapters (LLaVA's finetune_lora.sh)
    learning_rate: float | None = None
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    # counts the expanded video tokens (Video-LLaVA-7B: 8 frames x 257), unlike LLaVA's
    # --model_max_length, which counted one token per <video>; padding is per batch, so a
    # generous cap costs nothing
    model_max_length: int = 4096
    # video tokens per video for processors that size frames by pixels (Qwen2-VL / 2.5-VL);
    # saved with the checkpoint's processor, so generation after training uses it too
    video_token_budget: int | None = VIDEO_TOKEN_BUDGET
    # which parts train: the paper tunes the projector and the language model
    freeze_vision_tower: bool = True
    freeze_projector: bool = False
    freeze_language_model: bool = False
    # learning rates of their own for the projector / vision tower (LLaVA's --mm_projector_lr,
    # --mm_vision_tower_lr); None: ``learning_rate``, except that with LoRA the projector, trained
    # in full, keeps the full fine-tuning rate 2e-5 (finetune_lora.sh: --mm_projector_lr 2e-5)
    projector_learning_rate: float | None = None
    vision_learning_rate: float | None = None
    # LLaVA's mm_projector.bin (--pretrain_mm_mlp_adapter), loaded over the checkpoint's projector
    projector_weights: str | None = None
    lora: bool = False
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    # hardware
    bf16: bool = False
    fp16: bool = False
    tf32: bool | None = None
    gradient_checkpointing: bool = False
    deepspeed: str | None = None
    # batches of one media kind (video, image, text only) at each step on every rank, as
    # LLaVA's --group_by_modality_length; turned on by itself for ZeRO-3 over several
    # processes when the data mixes kinds (see MediaGroupedSampler)
    group_by_media: bool = False
    # within a media kind, batches of records of similar length (LLaVA's
    # --group_by_modality_length groups by modality and length); implies group_by_media
    group_by_length: bool = False
    # "square": the processor's own geometry (CLIP: resize and centre-crop; LLaVA-NeXT and
    # OneVision: anyres tiles); "pad": pad images to a square with the processor's mean
    # colour first, as LLaVA's --image_aspect_ratio pad (expand2square)
    image_aspect_ratio: str = "square"
    # "checkpoint": the checkpoint's chat template; "plain": LLaVA's --version plain (pretraining:
    # the media, then the answer), saved as the trained checkpoint's template
    prompt_template: str = "checkpoint"
    # LLaVA-NeXT's --add_time_instruction: "The video lasts for ... seconds ..." before each video question
    video_time_instruction: bool = False
    # where from_pretrained keeps hub downloads (LLaVA's --cache_dir)
    cache_dir: str | None = None
    attn_implementation: str | None = None
    dataloader_num_workers: int = 2
    seed: int = 0
    logging_steps: int = 1
    save_strategy: str = "no"
    save_steps: int = 500
    save_total_limit: int | None = 1
    report_to: tuple[str, ...] = ()
    resume_from_checkpoint: str | None = None
    trainer_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)

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
        positive = ("num_frames", "per_device_train_batch_size", "gradient_accumulation_steps", "model_max_length",
                    "lora_r", "lora_alpha", "logging_steps")  # fmt: skip
        for key in positive:
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ConfigError(f"{key}: expected a positive integer, got {getattr(self, key)!r}")
        if self.video_token_budget is not None and self.video_token_budget < 1:
            raise ConfigError(f"video_token_budget: expected a positive integer or null, got {self.video_token_budget!r}")
        for key in ("learning_rate", "projector_learning_rate", "vision_learning_rate"):
            rate = getattr(self, key)
            if rate is not None and not (rate > 0 and math.isfinite(rate)):
                raise ConfigError(f"{key}: expected a positive number, got {rate!r}")
        if self.prompt_template not in PROMPT_TEMPLATES:
            raise ConfigError(f"prompt_template: expected one of {', '.join(PROMPT_TEMPLATES)}, got {self.prompt_template!r}")
        if self.image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
            raise ConfigError(f"image_aspect_ratio: expected one of {', '.join(IMAGE_ASPECT_RATIOS)}, got {self.image_aspect_ratio!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio: expected a fraction in [0, 1), got {self.warmup_ratio!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout: expected a fraction in [0, 1), got {self.lora_dropout!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay: expected >= 0, got {self.weight_decay!r}")
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("num_train_epochs: expected > 0 (or set max_steps)")
        if self.lr_scheduler_type not in LR_SCHEDULERS:
            raise ConfigError(f"lr_scheduler_type: expected one of {', '.join(LR_SCHEDULERS)}, got {self.lr_scheduler_type!r}")
        if self.bf16 and self.fp16:
            raise ConfigError("bf16, fp16: choose one mixed precision")
        if self.dataloader_num_workers < 0:
            raise ConfigError(f"dataloader_num_workers: expected >= 0, got {self.dataloader_num_workers!r}")
        if self.save_strategy not in SAVE_STRATEGIES:
            raise ConfigError(f"save_strategy: expected one of {', '.join(SAVE_STRATEGIES)}, got {self.save_strategy!r}")
        if self.save_steps < 1:
            raise ConfigError(f"save_steps: expected a positive integer, got {self.save_steps!r}")
        if self.freeze_vision_tower and self.freeze_projector and self.freeze_language_model and not self.lora:
            raise ConfigError("freeze_vision_tower, freeze_projector, freeze_language_model: nothing left to train")
        for key in self.trainer_args:
            if key in _OWNED_TRAINING_ARGUMENTS or key.replace("-", "_") in {f.name for f in dataclasses.fields(self)}:
                raise ConfigError(f"trainer_args.{key}: set it through the config's own '{key}' option")

    @property
    def failures_path(self) -> Path:
        return Path(self.output_dir) / FAILURES_FILE

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["trainer_args"] = dict(self.trainer_args)
        return out


def parameter_group(name: str) -> str:
    """Which part of a LLaVA-family model a parameter belongs to, from its name.

    The part names are those of transformers' Video-LLaVA, LLaVA-NeXT-Video,
    LLaVA-OneVision and Qwen2-VL (where the projector is the vision tower's ``merger``).

    >>> parameter_group("model.video_tower.encoder.layers.0.mlp.fc1.weight")
    'vision'
    >>> parameter_group("model.visual.merger.mlp.0.weight"), parameter_group("model.multi_modal_projector.linear_1.bias")
    ('projector', 'projector')
    >>> parameter_group("model.language_model.layers.0.self_attn.q_proj.weight"), parameter_group("lm_head.weight")
    ('language', 'language')
    >>> parameter_group("model.image_newline")
    'projector'
    """
    # image_newline (LLaVA-NeXT, OneVision) is the projector's learned separator of image rows
    if any(part in name for part in ("multi_modal_projector", "mm_projector", "visual.merger", "image_newline")):
        return "projector"
    if any(part in name for part in ("vision_tower", "video_tower", "image_tower", "visual.")):
        return "vision"
    return "language"


def trainable_groups(config: TrainConfig) -> set[str]:
    groups = {"vision", "projector", "language"}
    if config.freeze_vision_tower:
        groups.discard("vision")
    if config.freeze_projector:
        groups.discard("projector")
    if config.freeze_language_model or config.lora:  # with LoRA the adapters train, not the base weights
        groups.discard("language")
    return groups


def set_trainable(model: Any, config: TrainConfig) -> dict[str, int]:
    """Freeze the parts the config keeps fixed; return trainable parameter counts per part."""
    groups = trainable_groups(config)
    counts = {"vision": 0, "projector": 0, "language": 0}
    found = set()
    for name, parameter in model.named_parameters():
        group = parameter_group(name)
        found.add(group)
        parameter.requires_grad_(group in groups)
        if group in groups:  # under ZeRO-3 a parameter is a shard; ds_numel is its full size
            counts[group] += getattr(parameter, "ds_numel", parameter.numel())
    missing = {"vision", "projector"} - found
    if missing:  # an unknown part name would silently train (or freeze) as the language model
        modules = sorted({name.split(".")[1] if name.startswith("model.") else name.split(".")[0] for name, _ in model.named_parameters()})
        raise ConfigError(
            f"model: no {' or '.join(sorted(missing))} parameters recognised among {modules}; "
            "add this architecture's part names to llava_star.stages.train.parameter_group"
        )
    return counts


def language_linear_modules(model: Any) -> list[str]:
    """Names of the language model's linear layers, the LoRA targets (LLaVA's choice)."""
    import torch

    return sorted(
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and parameter_group(name + ".") == "language" and not name.endswith("lm_head")
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


def deepspeed_stage(path: str | None) -> int:
    """The ZeRO stage a DeepSpeed JSON asks for (0 without one)."""
    if path is None:
        return 0
    try:
        with open(path, encoding="utf-8") as handle:
            return int(json.load(handle).get("zero_optimization", {}).get("stage", 0))
    except (OSError, ValueError) as error:
        raise ConfigError(f"deepspeed: cannot read {path}: {error}") from None


def share_process_group_with_deepspeed() -> None:
    """ZeRO-3 partitions the model while it loads (``zero.Init``) and counts the ranks
    through DeepSpeed's own communication layer. On GPUs accelerate sets that layer up; on
    CPUs it starts a plain gloo group DeepSpeed does not see, and every rank would believe
    it runs alone ("train_batch_size is not equal to ... world_size"). Hand it that group."""
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        import deepspeed

        deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())


def group_by_media_needed(config: TrainConfig, stage: int, world_size: int, kinds: Sequence[str]) -> bool:
    """Whether batches must hold one media kind at each step on every rank.

    ZeRO-3 gathers a module's weights from every rank as the module runs, so all ranks
    must run the same modules at each step: a rank with a text-only batch that skips the
    vision tower another rank runs stops gloo with a "collective mismatch" and hangs NCCL
    until its timeout. (The zero-times-every-parameter anchor that keeps DDP and ZeRO-2 in
    step cannot help: under ZeRO-3 a parameter outside its forward pass is an empty shard.)
    """
    if config.group_by_media:
        return True
    present = sorted(set(kinds))
    if stage == 3 and world_size > 1 and len(present) > 1:
        logger.info("train: ZeRO-3 over %d processes with %s records: batches of one kind per step",
                    world_size, ", ".join(present))  # fmt: skip
        return True
    return False


def build_training_arguments(config: TrainConfig) -> Any:
    """The ``transformers.TrainingArguments`` of a config (plus its ``trainer_args``)."""
    import torch
    from transformers import TrainingArguments

    known = {field.name for field in dataclasses.fields(TrainingArguments)}
    extras = dict(config.trainer_args)
    for key in extras:
        if key not in known:
            raise ConfigError(f"trainer_args.{key}: not a transformers.TrainingArguments field")
    return TrainingArguments(
        output_dir=config.output_dir,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,  # transformers 5 reads a float < 1 as a ratio of the steps
        weight_decay=config.weight_decay,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        bf16=config.bf16,
        fp16=config.fp16,
        tf32=config.tf32,
        activation_checkpointing=config.gradient_checkpointing,
        # non-reentrant checkpointing needs no input grads, so a frozen vision tower is fine
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        deepspeed=config.deepspeed,
        dataloader_num_workers=config.dataloader_num_workers,
        dataloader_persistent_workers=False,
        seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy=config.save_strategy,  # the final model is always saved, to output_dir itself
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=list(config.report_to) or "none",
        remove_unused_columns=False,  # the collator's batch is exactly what the model takes
        dataloader_pin_memory=torch.cuda.is_available(),
        # without CUDA, accelerate only sets up a (gloo) process group for torchrun when told it runs on CPU
        use_cpu=not torch.cuda.is_available(),
        **extras,
    )


# flags whose name is not simply --field-name
_FLAG_NAMES = {
    "model": ("--model",), "data": ("--data",), "output_dir": ("-o", "--output-dir"),
    "num_train_epochs": ("--epochs", "--num-train-epochs"), "per_device_train_batch_size": ("--batch-size",),
    "gradient_accumulation_steps": ("--grad-accum", "--gradient-accumulation-steps"),
    "dataloader_num_workers": ("--num-workers",), "lora": ("--lora",),
    "image_root": ("--image-root", "--image-folder"),
}  # fmt: skip
_HELP = {
    "model": "hub id or local checkpoint directory of a supported video LVLM",
    "data": "LLaVA conversation JSON file(s), e.g. the output of `llava-star export`",
    "video_root": "folder the records' `video` paths are relative to",
    "image_root": "folder the records' `image` paths are relative to (LLaVA's --image_folder)",
    "output_dir": "checkpoint directory to write (loads with from_pretrained)",
    "freeze_vision_tower": "keep the vision tower fixed (default; --no-freeze-vision-tower trains it)",
    "lora": "train LoRA adapters on the language model (peft), merged into the saved weights",
    "deepspeed": "DeepSpeed JSON, e.g. scripts/zero2.json",
    "group_by_media": "batches of one media kind per step on all ranks (LLaVA's --group_by_modality_length); "
    "on by itself for ZeRO-3 over several processes with mixed media",
    "projector_learning_rate": "learning rate of the projector's own parameter group (LLaVA's --mm_projector_lr)",
    "vision_learning_rate": "learning rate of the vision tower's own parameter group (--mm_vision_tower_lr)",
    "projector_weights": "LLaVA's mm_projector.bin loaded into the projector first (--pretrain_mm_mlp_adapter)",
    "group_by_length": "within a media kind, even total length per rank at each step (--group_by_modality_length)",
    "image_aspect_ratio": "square (the processor's geometry) | pad (to a square of the processor's mean, as LLaVA)",
    "prompt_template": "checkpoint (its chat template) | plain (LLaVA's pretraining format, saved with the checkpoint)",
    "video_time_instruction": "LLaVA-NeXT's 'The video lasts for ... seconds' sentence before video questions",
    "cache_dir": "where from_pretrained keeps hub downloads",
    "attn_implementation": "flash_attention_2 | sdpa | eager (default: flash_attention_2 when usable, else sdpa)",
    "trainer_args": "further transformers.TrainingArguments as KEY=VALUE (e.g. max_grad_norm=1.0)",
}


def build_parser() -> argparse.ArgumentParser:
    """Flags generated from :class:`TrainConfig`: the config is the command line."""
    from llava_star.config import add_config_flags

    parser = argparse.ArgumentParser(prog="llava-star train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="YAML file of TrainConfig keys (flags override it)")
    add_config_flags(parser, TrainConfig, help=_HELP, flags=_FLAG_NAMES, skip=("trainer_args",))
    parser.add_argument("--trainer-arg", dest="trainer_args", action="append", default=argparse.SUPPRESS,
                        metavar="KEY=VALUE", help=_HELP["trainer_args"])  # fmt: skip
    return parser


def parse_key_value(text: str) -> tuple[str, Any]:
    """``key=value`` with a YAML value, for config overrides (``2e-5`` is a number).

    >>> parse_key_value("max_grad_norm=0.5"), parse_key_value("learning_rate=2e-5")
    (('max_grad_norm', 0.5), ('learning_rate', 2e-05))
    """
    from llava_star.config import numbers_in_scientific_notation, parse_override

    path, value = parse_override(text)
    return ".".join(path), numbers_in_scientific_notation(value)


def load_yaml_config(path: Path) -> dict[str, Any]:
    """The TrainConfig keys of a YAML file, read as the cycle's configs are (``2e-5`` is a number)."""
    from llava_star.config import numbers_in_scientific_notation, read_yaml_mapping

    return numbers_in_scientific_notation(read_yaml_mapping(path))


def make_config(values: Mapping[str, Any]) -> TrainConfig:
    """A TrainConfig from a mapping; an unknown key is an error naming it."""
    from llava_star.config import config_from_mapping

    known = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown training option; known: {', '.join(sorted(known))}")
    values = dict(values)
    for key in ("data", "report_to"):  # one file is a list of one
        if isinstance(values.get(key), str):
            values[key] = [values[key]]
    # the one loader: every value checked against its field's type (`bf16: "no"` is an error)
    return config_from_mapping(TrainConfig, values)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = vars(args).copy()
    config_file = values.pop("config", None)
    merged = load_yaml_config(config_file) if config_file else {}
    trainer_args = dict(merged.pop("trainer_args", None) or {})
    trainer_args.update(parse_key_value(item) for item in values.pop("trainer_args", []))
    merged.update(values)
    merged["trainer_args"] = trainer_args
    return make_config(merged)


def load_records(paths: Sequence[str], seed: int = 0) -> list[dict[str, Any]]:
    """The records of training-data files (any format export writes, detected per file:
    docs/export.md) and LLaVA-NeXT YAML data lists, in order, in the project's form."""
    from llava_star.training.data_lists import is_data_list, read_data_list, read_records_file

    records: list[dict[str, Any]] = []
    for path in paths:
        records.extend(read_data_list(path, seed) if is_data_list(path) else read_records_file(Path(path)))
    if not records:
        raise ConfigError(f"data: no records in {', '.join(paths)}")
    return records


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
    from llava_star.models.loading import choose_attention

    return choose_attention(
        config.attn_implementation, "cuda" if cuda else "cpu", half_precision=config.bf16 or config.fp16
    )


def parameter_anchor(model: Any) -> Any:
    """Zero times the sum of every trainable media parameter (vision tower, projector,
    ``image_newline``); add it to the loss, computed before the forward pass.

    In a mixed batch (video, image, text-only records) ranks use different modules: a
    rank whose batch is text only never reaches the projector. DDP then waits for
    gradients that never come (with gradient checkpointing, which turns off its
    unused-parameter search) and ZeRO-2 reduces gradient buckets of different contents
    ("collective mismatch"). Summing those parameters first, before the forward pass,
    gives each one a (zero) gradient on every rank, and since these sums are the oldest
    nodes of the graph, autograd finishes their gradients last and in the same order on
    every rank, whatever the batch held. The language model is left out: every batch
    runs all of it, in the same order on every rank, so its gradients are ready as the
    backward pass goes and their communication overlaps it (with every parameter
    anchored, none was ready before the backward pass ended).
    """
    import torch

    terms = [
        parameter.sum(dtype=torch.float32)
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and parameter_group(name) != "language"
    ]
    return torch.stack(terms).sum() * 0.0 if terms else None


def part_learning_rates(config: TrainConfig) -> dict[str, float]:
    """The parts with a learning rate of their own (LLaVA's --mm_projector_lr, --mm_vision_tower_lr).

    >>> part_learning_rates(TrainConfig(model="m", data=("d.json",), output_dir="o", projector_learning_rate=1e-4))
    {'projector': 0.0001}
    >>> lora = TrainConfig(model="m", data=("d.json",), output_dir="o", lora=True)
    >>> lora.learning_rate, part_learning_rates(lora)  # adapters at 2e-4, the fully trained projector at 2e-5
    (0.0002, {'projector': 2e-05})
    """
    rates = {"projector": config.projector_learning_rate, "vision": config.vision_learning_rate}
    return {part: rate for part, rate in rates.items() if rate is not None and rate != config.learning_rate}


def optimizer_parameter_groups(
    named_parameters: Any, rates: Mapping[str, float], decay_names: set[str], weight_decay: float
) -> list[dict[str, Any]]:
    """The optimizer's parameter groups as LLaVA's ``LLaVATrainer.create_optimizer`` makes
    them: by weight decay (none on biases and norms) and, for the parts in ``rates``, with
    their own ``lr``; the others keep the Trainer's learning rate. The schedule scales
    every group's rate by the same factor."""
    groups: dict[tuple[str | None, bool], dict[str, Any]] = {}
    for name, parameter in named_parameters:
        if not parameter.requires_grad:
            continue
        part = parameter_group(name)
        own = part if part in rates else None
        decay = name in decay_names
        group = groups.setdefault((own, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0})
        if own is not None:
            group["lr"] = rates[own]
        group["params"].append(parameter)
    return list(groups.values())


def learning_rates_by_part(model: Any, optimizer: Any) -> dict[str, list[float]]:
    """The initial learning rates the built optimizer gives each part's parameters."""
    part_of = {id(parameter): parameter_group(name) for name, parameter in model.named_parameters()}
    rates: dict[str, set[float]] = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if id(parameter) in part_of:
                rates.setdefault(part_of[id(parameter)], set()).add(float(group.get("initial_lr", group["lr"])))
    return {part: sorted(values) for part, values in sorted(rates.items())}


def check_deepspeed_optimizer(config: TrainConfig) -> None:
    """A DeepSpeed JSON with an ``optimizer`` section builds one optimizer of one learning
    rate from it (transformers hands DeepSpeed the bare parameters), so the parts' own
    rates would be lost."""
    if not config.deepspeed or not part_learning_rates(config):
        return
    with open(config.deepspeed, encoding="utf-8") as handle:
        sections = json.load(handle)
    if "optimizer" in sections:
        raise ConfigError(
            f"projector_learning_rate, vision_learning_rate: {config.deepspeed} builds DeepSpeed's own optimizer "
            "(its 'optimizer' section), which takes one learning rate; use a config without one "
            "(scripts/zero2.json, zero2_offload.json, zero3.json) so the Trainer's optimizer keeps the parts' rates"
        )


def _trainer_class() -> Any:
    from transformers import Trainer

    from llava_star.training.data import IGNORE_INDEX, MediaGroupedSampler

    class ConversationTrainer(Trainer):
        """The HF Trainer, plus a zero-loss step for a batch whose samples all failed, and
        batches of one media kind per step when ``group_by_media``.

        The forward pass of a failed batch still runs (on the collator's placeholder
        example of the batch's media kind) so that DDP and DeepSpeed ranks stay in step;
        its loss is multiplied by zero, so nothing is learned from it. In a run of several
        processes every trainable parameter is anchored to the loss (:func:`parameter_anchor`,
        not under ZeRO-3, which needs ``group_by_media`` instead), so batches of different
        media keep the ranks in step.
        """

        def __init__(
            self, *args: Any, group_by_media: bool = False, group_by_length: bool = False,
            part_learning_rates: Mapping[str, float] | None = None, **kwargs: Any,
        ) -> None:  # fmt: skip
            super().__init__(*args, **kwargs)
            self.group_by_media = group_by_media or group_by_length
            self.group_by_length = group_by_length
            self.part_learning_rates = dict(part_learning_rates or {})

        def _get_train_sampler(self, train_dataset=None):  # type: ignore[override]
            if not self.group_by_media:
                return super()._get_train_sampler(train_dataset)
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            world_size = self.args.world_size
            return MediaGroupedSampler(
                dataset.kinds, self._train_batch_size * world_size, self.args.seed,
                lengths=dataset.lengths if self.group_by_length else None, world_size=world_size,
            )  # fmt: skip

        def create_optimizer(self, model=None):  # type: ignore[override]
            if self.optimizer is None and self.part_learning_rates:
                opt_model = self.model if model is None else model
                groups = optimizer_parameter_groups(
                    opt_model.named_parameters(), self.part_learning_rates,
                    set(self.get_decay_parameter_names(opt_model)), self.args.weight_decay,
                )  # fmt: skip
                optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
                self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
            optimizer = super().create_optimizer(model)
            # each part's rates as built, before DeepSpeed flattens the groups' parameters
            self.built_learning_rates = learning_rates_by_part(self.model if model is None else model, optimizer)
            return optimizer

        def _save(self, output_dir=None, state_dict=None):  # type: ignore[override]
            super()._save(output_dir, state_dict)
            # a LoRA checkpoint holds only the adapters: keep the projector trained beside them
            if _is_peft(self.model) and not self.is_deepspeed_enabled:
                from llava_star.training.resume import save_non_adapter_weights

                save_non_adapter_weights(self.accelerator.unwrap_model(self.model), output_dir or self.args.output_dir)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):  # type: ignore[override]
            """Every weight of the checkpoint, under the names it was saved with, or an error
            (transformers 5.23 loads none of them for a LLaVA-family model: training/resume.py)."""
            from llava_star.training.resume import load_model_weights, load_non_adapter_weights

            model = self.model if model is None else model
            if _is_peft(model):
                super()._load_from_checkpoint(resume_from_checkpoint, model)  # the adapters, as peft saved them
                load_non_adapter_weights(model, resume_from_checkpoint)
            else:
                load_model_weights(model, resume_from_checkpoint)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
            from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

            # under ZeRO-3 a parameter outside its module's forward pass is an empty shard
            anchored = self.args.world_size > 1 and not is_deepspeed_zero3_enabled()
            anchor = parameter_anchor(model) if anchored else None
            if bool((inputs["labels"] != IGNORE_INDEX).any()):
                result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            else:
                outputs = model(**{key: value for key, value in inputs.items() if key != "labels"})
                loss = outputs.logits.float().sum() * 0.0
                result = (loss, outputs) if return_outputs else loss
            if anchor is None:
                return result
            if return_outputs:
                return result[0] + anchor.to(result[0].dtype), result[1]
            return result + anchor.to(result.dtype)

    return ConversationTrainer


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def _log_history_values(log_history: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """One logged figure (``loss``, ``grad_norm``) at each logging step, in order."""
    return [float(entry[key]) for entry in log_history if key in entry]


TRAINING_TRANSFORMERS = "5.23"  # TrainingArguments(activation_checkpointing=...) is 5.23's name


def check_transformers_for_training() -> None:
    """Refuse, naming the way out, an environment whose transformers predates the training API used.

    The vLLM environment has transformers 5.19 (vLLM 0.32 pins <5.20): generation runs
    there, training in the environment of requirements/lock.txt.
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
    from llava_star.log import is_main_process

    check_transformers_for_training()
    with ExitStack() as held:
        if is_main_process():
            held.enter_context(exclusive_directory(config.output_dir, "train"))
        return _train(config)


def _train(config: TrainConfig) -> dict[str, Any]:
    import torch

    from llava_star.llava_json import media_paths
    from llava_star.log import is_main_process
    from llava_star.models.loading import load_model
    from llava_star.training.data import ConversationDataset, ExampleSettings, PaddingCollator, failures_in

    stage = deepspeed_stage(config.deepspeed)
    check_deepspeed_optimizer(config)
    records = load_records(config.data, config.seed)
    output_dir = Path(config.output_dir)
    # TrainingArguments first: under ZeRO-3 it must exist before the model loads (zero.Init partitions it)
    training_arguments = build_training_arguments(config)
    if stage == 3 and training_arguments.world_size > 1:
        share_process_group_with_deepspeed()
    if is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output_dir / CONFIG_FILE, config.to_dict())
    attention = training_attention(config, cuda=torch.cuda.is_available())
    # loaded on the CPU (ZeRO-3 partitions it there); the Trainer moves it to its GPU
    loaded = load_model(
        config.model, dtype=model_dtype(config), device="cpu", attn_implementation=attention,
        compute_device="cuda" if torch.cuda.is_available() else "cpu", autocast=config.bf16 or config.fp16,
        video_token_budget=config.video_token_budget, cache_dir=config.cache_dir,
    )  # fmt: skip
    model, processor = loaded.model, loaded.processor
    if stage == 3:
        from llava_star.models.checkpoints import save_under_standard_names

        save_under_standard_names(model)
    if not FAMILIES[loaded.family].videos and any(media_paths(record, "video") for record in records):
        count = sum(1 for record in records if media_paths(record, "video"))
        raise ConfigError(f"model: {config.model} ({loaded.family}) is an image model; {count} records have videos "
                          "(train a video LVLM on them, or leave them out)")  # fmt: skip
    if config.prompt_template == "plain":  # saved with the processor: generation prompts the same way

        processor.chat_template = FAMILIES[loaded.family].plain_template
    if config.projector_weights:
        from llava_star.models.original import load_projector_weights

        loaded_keys = load_projector_weights(model, config.projector_weights)
        logger.info("train: projector weights %s loaded from %s", ", ".join(loaded_keys), config.projector_weights)
    counts = set_trainable(model, config)
    if config.lora:
        model = add_lora(model, config)
        counts["lora"] = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name and p.requires_grad)
    if config.deepspeed is None:  # DeepSpeed keeps fp32 master weights itself
        upcast_trained_weights(model)
    logger.info("train: %s (%s), %d records, trainable parameters %s", config.model, loaded.family, len(records), counts)
    memory = estimate_memory_per_gpu(
        sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters()),
        sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad),
        weight_bytes=4 if model_dtype(config) == "float32" else 2,
        stage=stage,
        world_size=training_arguments.world_size,
    )
    logger.info(
        "train: per-GPU memory estimate %.1f GiB (weights %.1f, gradients %.1f, optimizer %.1f; activations not "
        "included) for ZeRO stage %d over %d processes", memory["total"], memory["weights"], memory["gradients"],
        memory["optimizer"], stage, training_arguments.world_size,
    )  # fmt: skip
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
    dataset = ConversationDataset(records, processor, settings)
    placeholders = dataset.usable_example_of_each_kind()
    for kind, example in placeholders.items():
        logger.info("train: the first usable %s record is %d tokens long", kind, len(example["input_ids"]))
    group_by_media = group_by_media_needed(config, stage, training_arguments.world_size, dataset.kinds)
    trainer = _trainer_class()(
        model=model,
        args=training_arguments,
        train_dataset=dataset,
        data_collator=PaddingCollator(pad_token_id=pad_token_id, placeholders=placeholders),
        processing_class=processor,
        group_by_media=group_by_media,
        group_by_length=config.group_by_length,
        part_learning_rates=part_learning_rates(config),
    )
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    seconds = time.perf_counter() - started
    save_checkpoint(trainer, processor, config)
    losses = _log_history_values(trainer.state.log_history, "loss")
    summary = {
        "model": config.model,
        "family": loaded.family,
        "records": len(records),
        "failures": failures_in(config.failures_path),
        "global_step": result.global_step,
        "training_loss": result.training_loss,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "losses": losses,
        # before clipping; the equivalence tests compare them, since Adam's update hides a gradient's scale
        "grad_norms": _log_history_values(trainer.state.log_history, "grad_norm"),
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
        "world_size": training_arguments.world_size,
    }
    if is_main_process():
        write_json_atomic(output_dir / SUMMARY_FILE, summary)
        logger.info(
            "train: %d steps, loss %.4f -> %.4f, %d failed samples, checkpoint %s",
            result.global_step, summary["first_loss"] or float("nan"), summary["last_loss"] or float("nan"),
            summary["failures"], output_dir,
        )  # fmt: skip
    return summary


def image_pad_colour(processor: Any) -> tuple[int, int, int]:
    """The pad colour of ``image_aspect_ratio: pad``: the processor's mean, as LLaVA's expand2square."""
    from llava_star.media.images import pad_colour

    image_processor = getattr(processor, "image_processor", None)
    mean = getattr(image_processor, "image_mean", None)
    if mean is None:
        raise ConfigError(f"image_aspect_ratio: pad needs the processor's image_mean; {type(processor).__name__} has none")
    return pad_colour(mean)


def save_checkpoint(trainer: Any, processor: Any, config: TrainConfig) -> None:
    """Write a from_pretrained-loadable model + processor to ``config.output_dir``.

    LoRA adapters are merged into the base weights, so generation and lmms-eval load a
    plain checkpoint; under ZeRO-3 ``trainer.save_model`` gathers the 16-bit weights
    (``stage3_gather_16bit_weights_on_model_save`` in scripts/zero3*.json), and with LoRA
    the gathered weights are merged on rank 0 (:func:`merged_lora_state`), since the
    partitioned model cannot merge itself (LLaVA's finetune_lora.sh runs LoRA on ZeRO-3).
    Vision-tower weights are written under the hub's names, which vLLM needs
    (models/checkpoints.py).
    """
    from llava_star.models.checkpoints import write_hub_weight_names

    if config.lora:
        save_merged_lora(trainer, processor, config)
    else:
        trainer.save_model(config.output_dir)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        write_hub_weight_names(config.output_dir)
    trainer.accelerator.wait_for_everyone()


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


def main(argv: list[str] | None = None) -> int:
    config = config_from_args(build_parser().parse_args(argv))
    run(config)
    return 0
