"""DPO on video preference pairs (``llava-star train --objective dpo``).

The pairs are what ``llava-star export --format dpo`` writes (TRL's conversational
``prompt``/``chosen``/``rejected`` form plus the sample's ``video``/``start``/``end``).
Each pair becomes two LLaVA records, the question with the chosen answer and the question
with the rejected one, encoded by the SFT path (:func:`~llava_star.training.data.encode_example`:
the same chat template, media tokens and label masks) on frames decoded once. A batch of
B pairs is one forward pass of 2B rows, the chosen rows first.

The loss is DPO's sigmoid loss (Rafailov et al. 2023) on the summed log-probabilities of
the answer tokens (labels != -100), against a frozen reference: the starting checkpoint,
loaded once more and never trained; with LoRA, the same model with its adapters off
(peft's ``disable_adapter``), so no second copy is held. Under ZeRO-3 the reference is
partitioned as the policy is, in a DeepSpeed engine of its own without an optimizer. ``dpo_sft_weight`` adds the mean
negative log-likelihood of the chosen answers' tokens (TRL's ``loss_type=["sigmoid",
"sft"]``, RPO). The value equals TRL's on the same log-probabilities (tests/test_dpo.py).
Logged each step: ``rewards/chosen``, ``rewards/rejected`` (beta x the policy-reference
log-ratio), ``rewards/margins``, ``rewards/accuracies`` and ``logps/chosen``/``rejected``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from llava_star.errors import RecordError
from llava_star.llava_json import GPT, video_turns
from llava_star.training.data import IGNORE_INDEX, ConversationDataset, PaddingCollator, encode_example
from llava_star.training.trainer import ConversationTrainer

METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-probability of each next token (``[rows, length - 1]``, 0 where not an
    answer token) and the mask of answer tokens: logits at ``t`` predict the token at ``t + 1``.

    >>> logits = torch.zeros(1, 3, 4)  # uniform over 4 tokens
    >>> values, mask = token_log_probs(logits, torch.tensor([[-100, 2, 3]]))
    >>> values.exp().tolist(), mask.tolist()
    ([[0.25, 0.25]], [[True, True]])
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


@dataclass(frozen=True)
class DpoTerms:
    """The loss of a batch of pairs and what is logged about it (one value per pair)."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    *,
    beta: float,
) -> DpoTerms:
    """DPO's sigmoid loss, ``-log sigmoid(beta ((pc - rc) - (pr - rr)))`` averaged over the pairs,
    on summed answer log-probabilities; the rewards are ``beta`` times each side's log-ratio.

    >>> terms = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    >>> round(terms.loss.item(), 4), terms.chosen_rewards.tolist(), terms.rejected_rewards.tolist()
    (0.3133, [0.5], [-0.5])
    """
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return DpoTerms(losses.mean(), beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def preference_loss(
    policy_tokens: torch.Tensor,
    reference_tokens: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float,
    sft_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of rows ``[chosen..., rejected...]`` of per-token log-probabilities (from
    :func:`token_log_probs`) and the step's figures."""
    sums = policy_tokens.sum(-1)
    reference = reference_tokens.sum(-1)
    chosen, rejected = sums.chunk(2)
    terms = dpo_loss(chosen, rejected, *reference.chunk(2), beta=beta)
    loss = terms.loss
    if sft_weight:
        chosen_tokens, _ = policy_tokens.chunk(2)
        chosen_mask, _ = mask.chunk(2)
        loss = loss + sft_weight * -chosen_tokens[chosen_mask].mean()
    margins = terms.chosen_rewards - terms.rejected_rewards
    figures = {
        "rewards/chosen": terms.chosen_rewards.mean().item(),
        "rewards/rejected": terms.rejected_rewards.mean().item(),
        "rewards/margins": margins.mean().item(),
        "rewards/accuracies": (margins > 0).float().mean().item(),
        "logps/chosen": chosen.detach().mean().item(),
        "logps/rejected": rejected.detach().mean().item(),
    }
    return loss, figures


def _message_text(messages: Any, role: str, where: str) -> str:
    """The text of a one-message list of TRL's conversational form (content a string or parts)."""
    if not isinstance(messages, list) or len(messages) != 1 or not isinstance(messages[0], Mapping):
        raise RecordError(f"{where}: expected one {role} message")
    message = messages[0]
    if message.get("role") != role:
        raise RecordError(f"{where}: expected the role {role!r}, got {message.get('role')!r}")
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    if not isinstance(content, str) or not content.strip():
        raise RecordError(f"{where}: no text")
    return content


def pair_to_records(pair: Any, index: int) -> tuple[dict[str, Any], str]:
    """The LLaVA record of a pair's chosen answer, and its rejected answer's text; errors name the pair."""
    where = f"pair {index} (id {pair.get('id') if isinstance(pair, Mapping) else None!r})"
    if not isinstance(pair, Mapping) or not isinstance(pair.get("video"), str):
        raise RecordError(f"{where}: expected a preference pair with a video (llava-star export --format dpo)")
    question = _message_text(pair.get("prompt"), "user", f"{where}: prompt")
    record: dict[str, Any] = {"id": pair.get("id"), "video": pair["video"]}
    record.update((key, pair[key]) for key in ("start", "end") if pair.get(key) is not None)
    record["conversations"] = video_turns(question, _message_text(pair.get("chosen"), "assistant", f"{where}: chosen"))
    return record, _message_text(pair.get("rejected"), "assistant", f"{where}: rejected")


class PairDataset(ConversationDataset):
    """Preference pairs; ``dataset[i]`` is ``{"chosen": example, "rejected": example}`` (one
    video decoding for both) or a :class:`~llava_star.training.data.FailedSample`."""

    def __init__(self, pairs: Sequence[Any], processor: Any, settings: Any) -> None:
        converted = [pair_to_records(pair, index) for index, pair in enumerate(pairs)]
        super().__init__([record for record, _ in converted], processor, settings)
        self.rejected = [text for _, text in converted]

    def encode(self, index: int) -> dict[str, Any]:
        from llava_star.media.video import read_frames, resolve_video_path
        from llava_star.training.data import with_time_instruction

        record = self.records[index]
        path = resolve_video_path(self.settings.video_root, record["video"])
        frames = read_frames(path, self.settings.num_frames, start=record.get("start"), end=record.get("end"))
        if self.settings.time_instruction:
            record = with_time_instruction(record, frames)
        rejected = {
            **record,
            "conversations": [record["conversations"][0], {"from": GPT, "value": self.rejected[index]}],
        }
        length = self.settings.model_max_length
        return {
            "chosen": encode_example(self.processor, record, frames, length),
            "rejected": encode_example(self.processor, rejected, frames, length),
        }

    def usable_example_of_each_kind(self, attempts: int = 8) -> dict[str, dict[str, Any]]:
        """The chosen side of the first usable pair: the placeholder of a batch whose pairs all failed."""
        return {kind: pair["chosen"] for kind, pair in super().usable_example_of_each_kind(attempts).items()}


@dataclass(frozen=True)
class PairCollator:
    """Pairs as one batch of their chosen rows then their rejected rows (the SFT collator's
    padding and media stacking); a batch whose pairs all failed is the collator's placeholder."""

    collate: PaddingCollator

    def __call__(self, examples: Sequence[Any]) -> dict[str, Any]:
        pairs = [example for example in examples if isinstance(example, dict)]
        if not pairs:
            return self.collate(examples)
        return self.collate([pair["chosen"] for pair in pairs] + [pair["rejected"] for pair in pairs])


class PreferenceTrainer(ConversationTrainer):
    """The train stage's Trainer with DPO's loss against a frozen reference (see the module)."""

    def __init__(
        self, *args: Any, reference: Any = None, beta: float = 0.1, sft_weight: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if reference is not None and self.is_deepspeed_enabled and is_zero3(self.accelerator):
            reference = sharded_reference(reference, self.accelerator)
        self.reference, self.beta, self.sft_weight = reference, beta, sft_weight
        self.step_figures: dict[str, list[float]] = {key: [] for key in METRICS}

    def reference_context(self) -> contextlib.AbstractContextManager[Any]:
        """The reference model to call: the frozen copy, or this model with its adapters off."""
        if self.reference is not None:
            if (
                not hasattr(self.reference, "module")
                and next(self.reference.parameters()).device != self.accelerator.device
            ):
                self.reference.to(self.accelerator.device)
            return contextlib.nullcontext(self.reference)
        unwrapped = self.accelerator.unwrap_model(self.model)
        return _adapters_off(unwrapped, self.model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        labels = inputs["labels"]
        if labels.shape[0] % 2 or not bool((labels != IGNORE_INDEX).any()):  # a placeholder batch: learn nothing
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

        from llava_star.training.parts import parameter_anchor

        anchored = self.args.world_size > 1 and not is_deepspeed_zero3_enabled()
        anchor = parameter_anchor(model) if anchored else None
        model_inputs = {key: value for key, value in inputs.items() if key != "labels"}
        outputs = model(**model_inputs)
        policy_tokens, mask = token_log_probs(outputs.logits, labels)
        with torch.no_grad(), self.reference_context() as reference:
            reference_tokens, _ = token_log_probs(reference(**model_inputs).logits, labels)
        loss, figures = preference_loss(
            policy_tokens, reference_tokens, mask, beta=self.beta, sft_weight=self.sft_weight
        )
        for key, value in figures.items():
            self.step_figures[key].append(value)
        if anchor is not None:
            loss = loss + anchor.to(loss.dtype)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Each logged step carries the mean of the DPO figures since the last log."""
        if "loss" in logs:
            for key, values in self.step_figures.items():
                if values:
                    logs[key] = sum(values) / len(values)
                values.clear()
        super().log(logs, *args, **kwargs)


def is_zero3(accelerator: Any) -> bool:
    plugin = accelerator.state.deepspeed_plugin
    return plugin is not None and plugin.deepspeed_config.get("zero_optimization", {}).get("stage") == 3


def sharded_reference(model: Any, accelerator: Any) -> Any:
    """ZeRO-3: the reference partitioned as the policy is, in a DeepSpeed engine with no
    optimizer (the training run's DeepSpeed config without its optimizer, scheduler and
    optimizer offload; the bucket sizes the Trainer fills in only when training starts are
    set from the language model's hidden size, as transformers sets them)."""
    import copy

    import deepspeed

    settings = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    for key in ("optimizer", "scheduler"):
        settings.pop(key, None)
    zero = settings["zero_optimization"]
    zero.pop("offload_optimizer", None)
    hidden = model.config.get_text_config().hidden_size
    sizes = {
        "reduce_bucket_size": hidden * hidden,
        "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
        "stage3_param_persistence_threshold": 10 * hidden,
    }
    zero.update((key, value) for key, value in sizes.items() if zero.get(key) == "auto")
    engine, *_ = deepspeed.initialize(model=model, config=settings)
    engine.eval()
    return engine


@contextlib.contextmanager
def _adapters_off(peft_model: Any, wrapped: Any) -> Iterator[Any]:
    with peft_model.disable_adapter():
        yield wrapped


def frozen_reference(model: Any) -> Any:
    """The reference model: evaluation mode, no gradients, never in the optimizer."""
    model.eval()
    model.requires_grad_(False)
    return model


def summary_figures(log_history: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """The DPO figures at each logging step, for the run's summary (``dpo_margins`` ...).

    >>> summary_figures([{"loss": 0.6, "rewards/margins": 0.1, "rewards/accuracies": 1.0}])["dpo_margins"]
    [0.1]
    """
    names = {"rewards/margins": "dpo_margins", "rewards/accuracies": "dpo_accuracies"}
    names.update({"rewards/chosen": "dpo_rewards_chosen", "rewards/rejected": "dpo_rewards_rejected"})
    return {name: [float(entry[key]) for entry in log_history if key in entry] for key, name in names.items()}


def load_pairs(paths: Sequence[str]) -> list[Any]:
    """The pairs of ``export --format dpo`` files (a JSON list or JSONL each), in order."""
    from llava_star.llava_json import load_record_list

    pairs = [pair for path in paths for pair in load_record_list(path)]
    if not pairs:
        raise RecordError(f"data: no preference pairs in {', '.join(paths)}")
    return pairs


def reference_model(config: Any, family_of_policy: str) -> Any | None:
    """The frozen reference of a run: None with LoRA (the policy with its adapters off), else
    the starting checkpoint loaded again as the train stage loads the policy."""
    if config.lora:
        return None
    from llava_star.errors import ConfigError
    from llava_star.models.loading import load_model
    from llava_star.models.original import load_projector_weights
    from llava_star.training.config import model_dtype, training_attention

    loaded = load_model(
        config.model,
        dtype=model_dtype(config),
        device="cpu",
        attn_implementation=training_attention(config, cuda=torch.cuda.is_available()),
        compute_device="cuda" if torch.cuda.is_available() else "cpu",
        autocast=config.bf16 or config.fp16,
        video_token_budget=config.video_token_budget,
        cache_dir=config.cache_dir,
    )
    if loaded.family != family_of_policy:
        raise ConfigError(f"model: the reference loaded as {loaded.family}, the policy as {family_of_policy}")
    if config.projector_weights:
        load_projector_weights(loaded.model, config.projector_weights)
    return frozen_reference(loaded.model)
