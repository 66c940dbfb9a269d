"""How answers are generated, whoever asks: the generate stage, the cycle's ``generate``
section, the cycle's held-out step and the lmms-eval adapter all take these options.

Each field carries its own command-line help (:func:`llava_star.config.option`), so
``llava-star generate --help`` and the cycle's ``generate`` keys say the same thing.
The defaults here are the project's only generation defaults: the lmms-eval adapter
reads them too instead of restating them.

>>> GenerationOptions().max_new_tokens
512
>>> GenerationOptions(num_answers=4)
Traceback (most recent call last):
...
llava_star.errors.ConfigError: num_answers: 4 answers per question need sampling (--temperature > 0); greedy decoding gives the same answer every time
>>> GenerationOptions(backend="tgi")
Traceback (most recent call last):
...
llava_star.errors.ConfigError: backend: expected one of hf, vllm, auto, got 'tgi'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llava_star.config import config_from_mapping, option
from llava_star.distributed import DEFAULT_DDP_TIMEOUT
from llava_star.errors import ConfigError
from llava_star.models.loading import VIDEO_TOKEN_BUDGET

BACKENDS = ("hf", "vllm", "auto")
GROUNDING_CHECKS = ("none", "blank", "shuffle")
# the options an evaluation's ``--model_args`` (lmms-eval's ``key=value,...``) may set; the
# others keep their defaults there (greedy decoding: the evaluation protocol)
MODEL_ARGS = (
    "num_frames",
    "dtype",
    "device",
    "attn_implementation",
    "max_new_tokens",
    "batch_size",
    "backend",
    "tensor_parallel_size",
    "gpu_memory_utilization",
    "max_model_len",
)


def check_backend(backend: str) -> None:
    """The one check of a backend name (the options, and ``choose_backend`` for direct callers).

    >>> check_backend("vllm")
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")


@dataclass(frozen=True, kw_only=True)
class GenerationOptions:
    """How answers are generated, whatever is answered: the cycle's ``generate`` section too."""

    batch_size: int = option(8, help="samples answered per generate call")
    num_frames: int = option(8, help="frames sampled per video (Video-LLaVA: 8)")
    max_new_tokens: int = option(512, help="longest answer, in tokens; an answer cut off there fails verification")
    # 0 is greedy; the paper's code samples at 0.2
    temperature: float = option(0.0, help="0 for greedy decoding")
    # the checkpoint's generation_config is not used
    top_p: float = option(1.0, help="nucleus sampling, with --temperature > 0 (1: off)")
    top_k: int = option(0, help="top-k sampling, with --temperature > 0 (0: off)")
    video_token_budget: int | None = option(
        VIDEO_TOKEN_BUDGET, help="Qwen-VL: video tokens per video (null in YAML: the checkpoint's)"
    )
    rationalize: bool = option(
        True, help="ask failed samples again with the label as a hint (--no-rationalize: direct answers only)"
    )
    num_answers: int = option(
        1,
        help="answers sampled per question (HF num_return_sequences, vLLM n), each verified; the line records "
        "all of them, the first passing one is the trained answer, the failing ones are DPO negatives "
        "(export --format dpo); more than 1 needs --temperature > 0",
    )
    grounding_check: str = option(
        "none",
        help="ask every passing answer's question again without the video's content: blank (the mean frame "
        "repeated) or shuffle (the frames out of order, for order-dependent labels); an answer that still "
        "passes is recorded grounded: false (none: no check)",
    )
    num_workers: int = option(2, help="DataLoader processes decoding videos")
    dtype: str = option("auto", help="auto, float32, bfloat16 or float16")
    device: str = option("auto", help="auto (this rank's GPU, else CPU), cpu, cuda:N")
    attn_implementation: str | None = option(
        None, help="flash_attention_2, sdpa or eager (default: flash_attention_2 when usable, else sdpa)"
    )
    seed: int = option(0, help="seed of sampling when --temperature > 0")
    backend: str = option(
        "hf",
        help="hf (transformers generate), vllm (LLaVA-NeXT-Video, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL), "
        "or auto (vllm where installed and supported, else hf)",
    )
    tensor_parallel_size: int = option(1, help="vllm: GPUs per engine; torchrun ranks x this = GPUs used")
    gpu_memory_utilization: float = option(0.9, help="vllm: fraction of each GPU the engine may take")
    max_model_len: int | None = option(None, help="vllm: context length (default: the checkpoint's)")
    # transformers' TrainingArguments name; the backends' defaults (NCCL 10 min) kill a rank
    # that waits for a slower one's model load
    ddp_timeout: int = option(
        DEFAULT_DDP_TIMEOUT,
        help="torchrun on the HF backend: seconds a collective waits for the other ranks "
        "(the final wait for the slowest rank has no limit)",
    )

    def __post_init__(self) -> None:
        check_backend(self.backend)
        if self.grounding_check not in GROUNDING_CHECKS:
            raise ConfigError(
                f"grounding_check: expected one of {', '.join(GROUNDING_CHECKS)}, got {self.grounding_check!r}"
            )
        for key in ("batch_size", "num_frames", "max_new_tokens", "tensor_parallel_size", "ddp_timeout", "num_answers"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.num_answers > 1 and self.temperature <= 0:
            raise ConfigError(
                f"num_answers: {self.num_answers} answers per question need sampling (--temperature > 0); "
                "greedy decoding gives the same answer every time"
            )
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"gpu_memory_utilization: must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ConfigError(f"max_model_len: must be >= 1 or null, got {self.max_model_len}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.video_token_budget is not None and self.video_token_budget < 1:
            raise ConfigError(f"video_token_budget: must be >= 1 or null, got {self.video_token_budget}")
        for key in ("num_workers", "temperature", "top_k"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: must be >= 0, got {getattr(self, key)}")


def options_from_model_args(values: Mapping[str, Any]) -> GenerationOptions:
    """The options of an evaluation's ``--model_args`` (numbers as numbers or as text; a
    ``device`` of None is the default), checked like any config: errors name the key.

    >>> options_from_model_args({"num_frames": "4", "max_new_tokens": 12, "device": None}).num_frames
    4
    >>> options_from_model_args({"max_new_tokens": "many"})
    Traceback (most recent call last):
    ...
    llava_star.errors.ConfigError: --model_args max_new_tokens: expected an integer, got 'many' (str)
    """

    unknown = sorted(key for key in values if key not in MODEL_ARGS)
    if unknown:
        raise ConfigError(f"--model_args: unknown key(s) {unknown}; expected {', '.join(MODEL_ARGS)}")
    given = {key: _number_from_text(value) for key, value in values.items() if value is not None}
    try:
        return config_from_mapping(GenerationOptions, given)
    except ConfigError as error:
        raise ConfigError(f"--model_args {error}") from None


def _number_from_text(value: Any) -> Any:
    """``"8"`` -> 8, ``"0.5"`` -> 0.5; other values as they are.

    >>> _number_from_text("8"), _number_from_text("0.5"), _number_from_text("sdpa")
    (8, 0.5, 'sdpa')
    """
    if not isinstance(value, str):
        return value
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
