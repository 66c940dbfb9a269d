"""The HF Trainer as the train stage runs it: its ``TrainingArguments`` from a
:class:`~llava_star.training.config.TrainConfig`, and :class:`ConversationTrainer`.

Importing this module imports transformers: the stage imports it inside ``run``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import Trainer, TrainingArguments
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from llava_star.distributed import gather_from_every_rank, rank_and_world_size
from llava_star.models.checkpoints import without_tied_copies
from llava_star.training.config import check_trainer_args
from llava_star.training.data import IGNORE_INDEX, MediaGroupedSampler
from llava_star.training.lora import is_peft
from llava_star.training.manifest import checkpoint_files, file_entries, write_manifest
from llava_star.training.parts import learning_rates_by_part, optimizer_parameter_groups, parameter_anchor
from llava_star.training.resume import load_model_weights, load_non_adapter_weights, save_non_adapter_weights

if TYPE_CHECKING:
    from llava_star.training.config import TrainConfig


def build_training_arguments(config: TrainConfig) -> TrainingArguments:
    """The ``transformers.TrainingArguments`` of a config (plus its ``trainer_args``)."""
    extras = dict(config.trainer_args)
    check_trainer_args(extras)
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
        self,
        *args: Any,
        group_by_media: bool = False,
        group_by_length: bool = False,
        part_learning_rates: Mapping[str, float] | None = None,
        run_settings: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.group_by_media = group_by_media or group_by_length
        self.group_by_length = group_by_length
        self.part_learning_rates = dict(part_learning_rates or {})
        self.run_settings = dict(run_settings or {})

    def _get_train_sampler(self, train_dataset=None):  # type: ignore[override]
        if not self.group_by_media:
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        world_size = self.args.world_size
        return MediaGroupedSampler(
            dataset.kinds,
            self._train_batch_size * world_size,
            self.args.seed,
            lengths=dataset.lengths if self.group_by_length else None,
            world_size=world_size,
        )

    def create_optimizer(self, model=None):  # type: ignore[override]
        if self.optimizer is None and self.part_learning_rates:
            opt_model = self.model if model is None else model
            groups = optimizer_parameter_groups(
                opt_model.named_parameters(),
                self.part_learning_rates,
                set(self.get_decay_parameter_names(opt_model)),
                self.args.weight_decay,
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        optimizer = super().create_optimizer(model)
        # each part's rates as built, before DeepSpeed flattens the groups' parameters
        self.built_learning_rates = learning_rates_by_part(self.model if model is None else model, optimizer)
        return optimizer

    def _save(self, output_dir=None, state_dict=None):  # type: ignore[override]
        if state_dict is not None:  # DeepSpeed's gathered copy: a tied pair comes back as two tensors
            state_dict = without_tied_copies(self.accelerator.unwrap_model(self.model), state_dict)
        super()._save(output_dir, state_dict)
        # a LoRA checkpoint holds only the adapters: keep the projector trained beside them
        if is_peft(self.model) and not self.is_deepspeed_enabled:
            save_non_adapter_weights(self.accelerator.unwrap_model(self.model), output_dir or self.args.output_dir)

    def _save_checkpoint(self, model, trial):  # type: ignore[override]
        """The Trainer's checkpoint, then its manifest (training/manifest.py), then the rotation.

        Older checkpoints are deleted only once the new one has its manifest, so a kill at any
        moment leaves one complete checkpoint to resume from.
        """
        limit = self.args.save_total_limit
        self.args.save_total_limit = None  # the Trainer's own rotation would run before the manifest
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        run_dir = self._get_output_dir(trial=trial)
        folder = Path(run_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self.accelerator.wait_for_everyone()  # every rank's shards and RNG state are written
        # the ranks split the hashing (a 7B model's ZeRO checkpoint with Adam states is ~100 GB)
        names = checkpoint_files(folder)
        entries: dict[str, Any] = {}
        for share in gather_from_every_rank(file_entries(folder, names, rank_and_world_size())):
            entries.update(share)
        if self.args.should_save:
            write_manifest(folder, self.run_settings, entries)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):  # type: ignore[override]
        """Every weight of the checkpoint, under the names it was saved with, or an error
        (transformers 5.23 loads none of them for a LLaVA-family model: training/resume.py)."""
        model = self.model if model is None else model
        if is_peft(model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)  # the adapters, as peft saved them
            load_non_adapter_weights(model, resume_from_checkpoint)
        else:
            load_model_weights(model, resume_from_checkpoint)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
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


def log_history_values(log_history: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """One logged figure (``loss``, ``grad_norm``) at each logging step, in order.

    >>> log_history_values([{"loss": 2.0, "grad_norm": 1.5}, {"train_runtime": 3.0}, {"loss": 1.0}], "loss")
    [2.0, 1.0]
    """
    return [float(entry[key]) for entry in log_history if key in entry]
