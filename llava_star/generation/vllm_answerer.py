"""Answering through vLLM: the engine for generation at scale, behind the HF answerer's interface.

The prompt text is rendered by the checkpoint's processor and chat template exactly as
the HF answerer renders it, the frames are the stage's decoded frames (passed as arrays
with their clip metadata, so vLLM decodes nothing), and the answer is the generated
tokens decoded by the same tokenizer call as in the HF answerer: on the same model, greedy
answers are the same tokens (tests/vllm_backend/test_vllm_answerer.py). Every sampling knob is set
from the options (vLLM is started with ``generation_config="vllm"``, so a checkpoint's
``generation_config.json`` changes nothing), and generation stops at the same end tokens
as HF ``generate`` (the checkpoint's generation config ``eos_token_id``).

Each video is keyed for vLLM's multimodal processor cache by its file and frame indices,
so the rationalization pass, which asks about the same frames again, reuses the
processed video. This module is the only one that imports vllm.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llava_star.generation.answerer import Reply
from llava_star.models.loading import VIDEO_TOKEN_BUDGET, load_processor, resolve_dtype
from llava_star.optional import require

if TYPE_CHECKING:
    from llava_star.media.video import Frames

logger = logging.getLogger(__name__)

# vLLM on a CPU (set where unset, only when there is no GPU): the engine in this process
# (starts in seconds, not half a minute), 1 GiB of KV cache instead of 92% of RAM, its
# messaging on loopback
CPU_ENVIRONMENT = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_HOST_IP": "127.0.0.1",
}


def stop_token_ids(model: str) -> list[int]:
    """The end tokens HF ``generate`` stops at: the generation config's ``eos_token_id``."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(model).eos_token_id
    except OSError:  # no generation_config.json: vLLM's own (the tokenizer's eos) applies
        return []
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


def video_input(frames: Frames, clock: str = "clip") -> tuple[Any, dict[str, Any]]:
    """Frames as vLLM takes decoded video: the array and the clip's ``VideoMetadata`` keywords
    (Qwen2.5-VL needs them to place frames in time, Qwen3-VL to write their times, in the
    ``clock`` of :func:`llava_star.models.inputs.timestamp_clock`; the other families ignore them)."""
    return frames.array, {**frames.metadata(clock=clock), "do_sample_frames": False}


def video_cache_key(frames: Frames) -> str | None:
    """A key for vLLM's processor cache: the file and the frames read from it; ``None``
    (vLLM hashes the pixels) for frames that come from no file."""
    if not Path(frames.path).exists():
        return None
    indices = ",".join(str(index) for index in frames.indices.tolist())
    return f"{frames.path}#{indices}@{frames.array.shape[1]}x{frames.array.shape[2]}"


class VllmAnswerer:
    """Many prompts per ``LLM.generate`` call on one vLLM engine (its tensor-parallel group of GPUs)."""

    def __init__(
        self,
        model: str,
        *,
        family: str,
        max_new_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
        top_p: float = 1.0,
        top_k: int = 0,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        video_token_budget: int | None = VIDEO_TOKEN_BUDGET,
    ) -> None:

        on_gpu = _has_cuda()
        if not on_gpu:
            for key, value in CPU_ENVIRONMENT.items():
                os.environ.setdefault(key, value)
        vllm = require("vllm", "generate --backend vllm")
        self.processor = load_processor(model, family, video_token_budget)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.top_p = top_p
        self.top_k = top_k
        self.stop_token_ids = stop_token_ids(model)
        self.engine = vllm.LLM(
            model=model,
            dtype=resolve_dtype(dtype, "cuda" if on_gpu else "cpu"),  # as the HF answerer's
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=seed,
            generation_config="vllm",
            limit_mm_per_prompt={"video": 1, "image": 0},
            mm_processor_kwargs=_video_processor_settings(self.processor),
            **_device_normalization(self.processor),
        )
        logger.info("vLLM engine for %s (%s, tensor parallel %d)", model, family, tensor_parallel_size)

    def requests(self, prompts: Sequence[str], videos: Sequence[Frames]) -> list[dict[str, Any]]:
        """vLLM's prompts: the chat-template text, the video, its cache key."""
        from llava_star.models.inputs import render_chat, timestamp_clock, video_conversation

        requests = []
        clock = timestamp_clock(self.processor)
        for prompt, frames in zip(prompts, videos, strict=True):
            text = render_chat(self.processor, video_conversation(prompt), add_generation_prompt=True)
            request: dict[str, Any] = {"prompt": text, "multi_modal_data": {"video": video_input(frames, clock)}}
            if (key := video_cache_key(frames)) is not None:
                request["multi_modal_uuids"] = {"video": [key]}
            requests.append(request)
        return requests

    def answer(self, prompts: Sequence[str], videos: Sequence[Frames]) -> list[str]:
        """The answers' texts (evaluation scores a cut-off answer as it is)."""
        return [reply.text for reply in self.replies(prompts, videos)]

    def replies(self, prompts: Sequence[str], videos: Sequence[Frames]) -> list[Reply]:
        return [replies[0] for replies in self.several_replies(prompts, videos, 1)]

    def several_replies(self, prompts: Sequence[str], videos: Sequence[Frames], count: int) -> list[list[Reply]]:
        """``count`` sampled answers per prompt (``SamplingParams.n``), a list per prompt."""
        params = [self._sampling(prompt, frames, count) for prompt, frames in zip(prompts, videos)]
        outputs = self.engine.generate(self.requests(prompts, videos), params, use_tqdm=False)
        sequences = [sequence for output in outputs for sequence in output.outputs[:count]]
        texts = self.processor.batch_decode(
            [list(sequence.token_ids) for sequence in sequences], skip_special_tokens=True
        )
        # vLLM says why each sequence ended: "stop" (an end token) or "length" (max_tokens)
        flat = [
            Reply(text.strip(), sequence.finish_reason == "length")
            for text, sequence in zip(texts, sequences, strict=True)
        ]
        return [flat[start : start + count] for start in range(0, len(flat), count)]

    def _sampling(self, prompt: str, frames: Frames, count: int = 1) -> Any:
        """The HF answerer's settings: 0 temperature greedy, top_k 0 and top_p 1 off, no
        repetition penalty; a seed per prompt and video, so a rerun samples the same answers
        (vLLM seeds the ``n`` sequences of a request apart)."""
        from vllm import SamplingParams

        settings: dict[str, Any] = {"temperature": self.temperature, "repetition_penalty": 1.0}
        if self.temperature > 0:
            content = f"{prompt}\n{frames.path}\n{frames.indices.tolist()}".encode()
            settings.update(top_p=self.top_p, top_k=self.top_k, seed=self.seed + zlib.crc32(content))
        if count > 1:
            settings["n"] = count
        return SamplingParams(
            max_tokens=self.max_new_tokens, stop_token_ids=self.stop_token_ids, detokenize=False, **settings
        )


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


_NORMALIZATION_KEYS = ("do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")


def _device_normalization(processor: Any) -> dict[str, Any]:
    """vLLM 0.32 rescales and normalizes a Qwen3-VL video's pixels on the device with the
    *image* processor's mean and std (``mm_device_do_normalize``, on by default; its
    ``fusion/mm_input_norm.py`` reads ``processor_config.json``'s ``image_processor``). Where
    the video processor normalizes differently, the frames are normalized by the video
    processor on the host instead, as HF does."""
    image = getattr(processor, "image_processor", None)
    video = getattr(processor, "video_processor", None)
    if image is None or video is None:
        return {}
    if all(_normalization(image, key) == _normalization(video, key) for key in _NORMALIZATION_KEYS):
        return {}
    return {"mm_device_do_normalize": False}


def _normalization(processor: Any, key: str) -> Any:
    value = getattr(processor, key, None)
    return [round(float(item), 8) for item in value] if isinstance(value, (list, tuple)) else value


def _video_processor_settings(processor: Any) -> dict[str, Any]:
    """The frames are the sampled ones; a pixel-budget processor keeps the budget it was given."""
    settings: dict[str, Any] = {"do_sample_frames": False}
    video_processor = getattr(processor, "video_processor", None)
    if getattr(video_processor, "cap_pixels_per_frame", False):
        settings.update(cap_pixels_per_frame=True, max_video_tokens=video_processor.max_video_tokens)
        if type(video_processor).__name__ == "Qwen3VLVideoProcessor":  # its budget is the whole video's pixels
            settings["size"] = dict(video_processor.size)
    return settings
