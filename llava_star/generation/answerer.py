"""Answering prompts about videos with a model, a batch at a time.

:class:`Answerer` is what the generate stage and the lmms-eval adapter need; the HF
answerer below is the transformers implementation (a vLLM one would join it here).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from llava_star.media.video import Frames
    from llava_star.models.loading import LoadedModel


class Answerer(Protocol):
    """Answers prompts about videos, a batch at a time (a model, or a stand-in in benchmarks)."""

    def answer(self, prompts: Sequence[str], videos: Sequence[Frames]) -> list[str]: ...


class ModelAnswerer:
    """Batched, left-padded ``generate`` with a transformers video LVLM."""

    def __init__(self, loaded: LoadedModel, *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0) -> None:
        self.loaded = loaded
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed

    def answer(self, prompts: Sequence[str], videos: Sequence[Frames]) -> list[str]:
        import torch

        from llava_star.models.inputs import build_inputs, video_conversation

        processor, model = self.loaded.processor, self.loaded.model
        conversations = [video_conversation(prompt) for prompt in prompts]
        inputs = build_inputs(processor, conversations, videos, add_generation_prompt=True, padding_side="left")
        batch = inputs.batch.to(model.device)
        if model.dtype != torch.float32:
            batch = batch.to(model.dtype)  # casts only the floating tensors (pixels)
        sampling = {"do_sample": False}
        if self.temperature > 0:
            sampling = {"do_sample": True, "temperature": self.temperature, "top_p": 1.0}
        pad_token_id = processor.tokenizer.pad_token_id
        if pad_token_id is None:
            pad_token_id = processor.tokenizer.eos_token_id
        # a seed per batch content: reruns of the same batch sample the same answers,
        # without touching the global generator of the caller
        devices = [model.device] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(self.seed + zlib.crc32("\n".join(prompts).encode("utf-8")))
            output = model.generate(**batch, max_new_tokens=self.max_new_tokens, pad_token_id=pad_token_id, **sampling)
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]
