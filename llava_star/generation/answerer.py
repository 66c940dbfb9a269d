"""Answering prompts about videos with a model, a batch at a time.

:class:`Answerer` is what the generate stage and the lmms-eval adapter need; the HF
answerer below is the transformers implementation, ``vllm_answerer.VllmAnswerer`` the
vLLM one (``backends`` chooses).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from llava_star.media.video import Frames
    from llava_star.models.loading import LoadedModel


class Reply(NamedTuple):
    """One generated answer, and whether generation stopped at the token limit.

    A ``truncated`` answer never reached an end token: it is cut off mid-sentence, and the
    generate stage must not keep it for training (a stop token would be added after it).
    """

    text: str
    truncated: bool = False


class Answerer(Protocol):
    """Answers prompts about videos, a batch at a time (a model, or a stand-in in benchmarks)."""

    def replies(self, prompts: Sequence[str], videos: Sequence[Frames]) -> list[Reply]: ...


def reply_sets(answerer: Answerer, prompts: Sequence[str], videos: Sequence[Frames], count: int) -> list[list[Reply]]:
    """``count`` answers to each prompt, a list per prompt.

    An answerer with ``several_replies`` (the HF and vLLM ones) samples them in one call
    (``num_return_sequences``, vLLM's ``n``); any other (a stand-in) is asked each prompt
    ``count`` times over.

    >>> class Echo:
    ...     def replies(self, prompts, videos):
    ...         return [Reply(f"{prompt} {video}") for prompt, video in zip(prompts, videos)]
    >>> reply_sets(Echo(), ["a", "b"], [1, 2], 2)
    [[Reply(text='a 1', truncated=False), Reply(text='a 1', truncated=False)], [Reply(text='b 2', truncated=False), Reply(text='b 2', truncated=False)]]
    """
    if count == 1:
        return [[reply] for reply in answerer.replies(prompts, videos)]
    several = getattr(answerer, "several_replies", None)
    if several is not None:
        return several(prompts, videos, count)
    flat = answerer.replies(
        [prompt for prompt in prompts for _ in range(count)], [video for video in videos for _ in range(count)]
    )
    return [flat[start : start + count] for start in range(0, len(flat), count)]


def cut_off(rows: Sequence[Sequence[int]], stop_ids: Iterable[int], max_new_tokens: int) -> list[bool]:
    """Which generated rows ran into the token limit: ``max_new_tokens`` tokens, no stop token.

    A batch's rows are as long as its longest one; a row that stopped early ends in a stop
    token (then padding), so only a row without any stop token can have been cut off.

    >>> cut_off([[5, 6, 7], [5, 2, 0], [5, 6, 2]], stop_ids={2}, max_new_tokens=3)
    [True, False, False]
    >>> cut_off([[5, 6]], stop_ids={2}, max_new_tokens=3)  # the model stopped itself before the limit
    [False]
    """
    stops = set(stop_ids)
    return [len(row) >= max_new_tokens and not stops.intersection(row) for row in rows]


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """The tokens ``generate`` stops at: the generation config's end tokens, else the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is None:
        configured = tokenizer.eos_token_id
    if configured is None:
        return set()
    return {int(configured)} if isinstance(configured, int) else {int(token) for token in configured}


def sampling_settings(temperature: float, *, top_p: float = 1.0, top_k: int = 0) -> dict[str, Any]:
    """``generate`` keywords that set every decoding knob, whatever the checkpoint's
    ``generation_config.json`` says.

    Qwen2-VL's ships ``top_k=1, top_p=0.001, repetition_penalty=1.05``: overriding only
    ``temperature`` leaves sampling greedy, and the repetition penalty changes even greedy
    answers. ``top_k=0`` and ``top_p=1.0`` turn those filters off; 0 temperature is greedy.

    >>> sampling_settings(0.0)
    {'do_sample': False, 'repetition_penalty': 1.0}
    >>> sampling_settings(0.2)
    {'do_sample': True, 'repetition_penalty': 1.0, 'temperature': 0.2, 'top_k': 0, 'top_p': 1.0}
    """
    settings: dict[str, Any] = {"do_sample": temperature > 0, "repetition_penalty": 1.0}
    if temperature > 0:  # greedy decoding ignores the filters (and transformers warns about them)
        settings.update(temperature=temperature, top_k=top_k, top_p=top_p)
    return settings


class ModelAnswerer:
    """Batched, left-padded ``generate`` with a transformers video LVLM."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
        top_p: float = 1.0,
        top_k: int = 0,
    ) -> None:
        self.loaded = loaded
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.sampling = sampling_settings(temperature, top_p=top_p, top_k=top_k)

    def answer(self, prompts: Sequence[str], videos: Sequence[Frames]) -> list[str]:
        """The answers' texts (evaluation scores a cut-off answer as it is)."""
        return [reply.text for reply in self.replies(prompts, videos)]

    def replies(self, prompts: Sequence[str], videos: Sequence[Frames]) -> list[Reply]:
        return [replies[0] for replies in self.several_replies(prompts, videos, 1)]

    def several_replies(self, prompts: Sequence[str], videos: Sequence[Frames], count: int) -> list[list[Reply]]:
        """``count`` sampled answers per prompt (``num_return_sequences``), a list per prompt."""
        import torch

        from llava_star.models.inputs import build_inputs, video_conversation

        processor, model = self.loaded.processor, self.loaded.model
        conversations = [video_conversation(prompt) for prompt in prompts]
        inputs = build_inputs(processor, conversations, videos, add_generation_prompt=True, padding_side="left")
        batch = inputs.batch.to(model.device)
        if model.dtype != torch.float32:
            # pixels in the model's dtype; other floats (Qwen2.5-VL's second_per_grid_ts) stay
            # fp32: bf16 turns 2.125 s per grid into 2.125 but 0.3333 into 0.3340
            for key in [key for key in batch if key.startswith("pixel_values")]:
                batch[key] = batch[key].to(model.dtype)
        pad_token_id = processor.tokenizer.pad_token_id
        if pad_token_id is None:
            pad_token_id = processor.tokenizer.eos_token_id
        # a seed per batch content: reruns of the same batch sample the same answers,
        # without touching the global generator of the caller
        devices = [model.device] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(self.seed + zlib.crc32("\n".join(prompts).encode("utf-8")))
            output = model.generate(
                **batch,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=pad_token_id,
                **self.sampling,
                **({"num_return_sequences": count} if count > 1 else {}),
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        texts = processor.batch_decode(new_tokens, skip_special_tokens=True)
        truncated = cut_off(new_tokens.tolist(), _stop_ids(model, processor.tokenizer), self.max_new_tokens)
        flat = [Reply(text.strip(), cut) for text, cut in zip(texts, truncated, strict=True)]
        # generate returns a prompt's sequences together: rows i*count ... i*count + count - 1
        return [flat[start : start + count] for start in range(0, len(flat), count)]
