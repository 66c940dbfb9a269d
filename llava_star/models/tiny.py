"""Tiny random video LVLMs of each supported family, for tests and the CPU demo.

A real checkpoint is gigabytes and needs the hub; the tests and the demo need the same
code paths (config, processor, chat template, video tokens, generate, train) in
milliseconds and offline. Each family here is the real transformers architecture at
~100-200k parameters: 32 px frames, two-layer vision tower and language model, and a
byte-level BPE tokenizer trained locally on a few sentences (the ``tokenizers`` library
trains it in milliseconds), saved with a chat template in the family's own style, so
``AutoModelForImageTextToText.from_pretrained(DIR)`` and ``AutoProcessor.from_pretrained(DIR)``
work with HF_HUB_OFFLINE=1. The language models' attention heads (2 of 32) and the saved
weight names (the hub's, models/checkpoints.py) are what vLLM's CPU build needs, so the
vLLM backend runs the same tiny models (tests/vllm_backend).

    llava-star tiny-model video_llava -o models/tiny-video-llava
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_star.models import tiny_recent
from llava_star.models.checkpoints import write_hub_weight_names
from llava_star.models.families import FAMILIES as FAMILY_FACTS

logger = logging.getLogger(__name__)

FAMILIES = ("video_llava", "llava_next_video", "llava_onevision", "qwen2_vl", "qwen3_vl", "qwen3_5", "gemma4")
VARIANTS = ("qwen2_5_vl", "qwen3_vl_moe")  # buildable too; loaded as the family they belong to

FRAME_SIZE = 32  # pixels; every tiny vision tower sees 32x32 frames
PATCH_SIZE = 8
# LLaVA-NeXT-Video pools each frame's patch grid by 2; vLLM's pooling of a 4x4 grid
# (patch 8) divides by zero, an 8x8 grid (patch 4) works
LLAVA_NEXT_VIDEO_PATCH_SIZE = 4
HIDDEN_SIZE = 32  # vision towers
# language models: 2 heads of 32, the smallest head size vLLM's CPU attention kernels take
TEXT_HIDDEN_SIZE = 64
VOCAB_SIZE = 384  # BPE merges on top of the 256 byte symbols and the special tokens

# Words the demo and tests ask and answer about, so the tokenizer has merges for them.
_CORPUS = (
    "What colour is the moving shape in the video? The shape is red. It is blue. It is green.",
    "The object is yellow, purple, orange, white, black, cyan or magenta.",
    "What shape moves across the frames? A circle, a square, a triangle, a star, a rectangle.",
    "Which direction does it move? It moves left, right, up or down.",
    "How many objects are there? There are one, two, three, four or five objects.",
    "When does the event happen? From 1.5 seconds to 3.0 seconds, between 0 and 10 s.",
    "Where is the object? The box is [0.10, 0.20, 0.55, 0.80] in the frame.",
    "Can you explain step-by-step how one can arrive at this conclusion?",
    "Let me think step by step. First, I look at the first frame. Then I compare the frames.",
    "Therefore, the answer is yes. No, the answer is not correct. Option A, B, C or D.",
    "The person is playing guitar, riding a bike, swimming, dancing, cooking, running.",
    "The dive has a score of 85.5 and a difficulty of 3.2 out of 10.",
    "Question: Answer: Explain why the answer is right. I cannot tell from the video.",
)


@dataclass(frozen=True)
class _Family:
    """How one family's tokens, template and architecture are spelled."""

    special_tokens: tuple[str, ...]  # bos, eos, pad first; then the multimodal ones
    build: Callable[[Any, int], tuple[Any, Any]]  # (tokenizer, vocab size) -> (config, processor)
    named_tokens: dict[str, str] | None = None  # tokenizer attributes the processor reads


def _clip_vision(patch_size: int = PATCH_SIZE) -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=HIDDEN_SIZE,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=FRAME_SIZE,
        patch_size=patch_size,
        projection_dim=HIDDEN_SIZE,
    )


def small_text(model_type: str, vocab_size: int, tokenizer: Any, **overrides: Any) -> dict[str, Any]:
    return dict(
        model_type=model_type,
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **overrides,
    )


def _llava_media_tokens(tokenizer: Any) -> dict[str, Any]:
    """The LLaVA configs' placeholder ids, and features from the last vision layer (2 layers only)."""
    return {
        "image_token_index": tokenizer.convert_tokens_to_ids("<image>"),
        "video_token_index": tokenizer.convert_tokens_to_ids("<video>"),
        "vision_feature_layer": -1,
    }


def _llava_processor_settings(tokenizer: Any, patch_size: int = PATCH_SIZE) -> dict[str, Any]:
    """What Video-LLaVA's and LLaVA-NeXT-Video's processors need to count video tokens."""
    return {
        "tokenizer": tokenizer,
        "patch_size": patch_size,
        "vision_feature_select_strategy": "default",
        "num_additional_image_tokens": 1,  # the CLS token, which Video-LLaVA keeps for video
        "chat_template": FAMILY_FACTS["video_llava"].chat_template,
    }


def _frame_processor_size() -> dict[str, Any]:
    return {
        "size": {"shortest_edge": FRAME_SIZE},
        "crop_size": {"height": FRAME_SIZE, "width": FRAME_SIZE},
    }


def _build_video_llava(tokenizer: Any, vocab_size: int, patch_size: int = PATCH_SIZE) -> tuple[Any, Any]:
    from transformers import (
        VideoLlavaConfig,
        VideoLlavaImageProcessor,
        VideoLlavaProcessor,
        VideoLlavaVideoProcessor,
    )

    tokens_per_frame = (FRAME_SIZE // patch_size) ** 2
    config = VideoLlavaConfig(
        vision_config=_clip_vision(patch_size),
        text_config=small_text("llama", vocab_size, tokenizer),
        **_llava_media_tokens(tokenizer),
        image_seq_length=tokens_per_frame,
        video_seq_length=(tokens_per_frame + 1) * 8,
    )
    processor = VideoLlavaProcessor(
        image_processor=VideoLlavaImageProcessor(**_frame_processor_size()),
        video_processor=VideoLlavaVideoProcessor(**_frame_processor_size()),
        **_llava_processor_settings(tokenizer, patch_size),
    )
    return config, processor


def _build_llava_next_video(tokenizer: Any, vocab_size: int) -> tuple[Any, Any]:
    from transformers import (
        LlavaNextImageProcessor,
        LlavaNextVideoConfig,
        LlavaNextVideoProcessor,
        LlavaNextVideoVideoProcessor,
    )

    pinpoints = [[FRAME_SIZE, FRAME_SIZE]]
    patch = LLAVA_NEXT_VIDEO_PATCH_SIZE
    config = LlavaNextVideoConfig(
        vision_config=_clip_vision(patch),
        text_config=small_text("llama", vocab_size, tokenizer),
        **_llava_media_tokens(tokenizer),
        image_grid_pinpoints=pinpoints,
        image_seq_length=(FRAME_SIZE // patch) ** 2,
        video_seq_length=(FRAME_SIZE // patch) ** 2 // 4,
    )
    processor = LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(**_frame_processor_size()),
        image_processor=LlavaNextImageProcessor(image_grid_pinpoints=pinpoints, **_frame_processor_size()),
        **_llava_processor_settings(tokenizer, patch),
    )
    return config, processor


def _build_llava_onevision(tokenizer: Any, vocab_size: int) -> tuple[Any, Any]:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        SiglipVisionConfig,
    )

    pinpoints = [[FRAME_SIZE, FRAME_SIZE]]
    size = {"height": FRAME_SIZE, "width": FRAME_SIZE}
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=HIDDEN_SIZE,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=FRAME_SIZE,
            patch_size=PATCH_SIZE,
        ),
        text_config=small_text("qwen2", vocab_size, tokenizer),
        **_llava_media_tokens(tokenizer),
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tokenizer,
        num_image_tokens=(FRAME_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="full",
        chat_template=FAMILY_FACTS["llava_onevision"].chat_template,
    )
    return config, processor


def _build_qwen(tokenizer: Any, vocab_size: int, *, version: str) -> tuple[Any, Any]:
    """Qwen2-VL (``version="2"``) or Qwen2.5-VL (``"2.5"``): the same tokens, template and processors."""
    import transformers
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    vision = {
        "depth": 2,
        "hidden_size": HIDDEN_SIZE,
        "num_heads": 2,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    if version == "2":
        config_class, processor_class = transformers.Qwen2VLConfig, transformers.Qwen2VLProcessor
        # Qwen2-VL's vision hidden_size is the merger's output: the language model's width
        vision.update(embed_dim=HIDDEN_SIZE, mlp_ratio=2, hidden_size=TEXT_HIDDEN_SIZE)
    else:  # 2.5: windowed attention in all but the listed blocks, a separate output width
        config_class, processor_class = transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLProcessor
        vision.update(intermediate_size=64, out_hidden_size=TEXT_HIDDEN_SIZE, window_size=2 * PATCH_SIZE * 2)
        vision.update(fullatt_block_indexes=[1])
    config = config_class(
        vision_config=vision,
        text_config=small_text(
            f"{config_class.model_type}_text",
            vocab_size,
            tokenizer,
            # multimodal rope splits the rotary half of the head dimension (64 / 2 heads / 2)
            # into time, height and width sections
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    )
    pixels = {"shortest_edge": FRAME_SIZE * FRAME_SIZE, "longest_edge": FRAME_SIZE * FRAME_SIZE}
    common = {"patch_size": PATCH_SIZE, "merge_size": 2, "temporal_patch_size": 2, "size": pixels}
    processor = processor_class(
        image_processor=Qwen2VLImageProcessor(**common),
        video_processor=Qwen2VLVideoProcessor(**common, cap_pixels_per_frame=True),
        tokenizer=tokenizer,
        chat_template=FAMILY_FACTS["qwen2_vl"].chat_template,
    )
    return config, processor


_LLAVA_TOKENS = ("<s>", "</s>", "<pad>", "<image>", "<video>")
_CHATML_TOKENS = ("<|endoftext|>", "<|im_end|>", "<|pad|>", "<|im_start|>")

_QWEN_TOKENS = _CHATML_TOKENS + ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")

_FAMILY_SPECS = {
    "video_llava": _Family(_LLAVA_TOKENS, _build_video_llava),
    "llava_next_video": _Family(_LLAVA_TOKENS, _build_llava_next_video),
    "llava_onevision": _Family(_CHATML_TOKENS + ("<image>", "<video>"), _build_llava_onevision),
    "qwen2_vl": _Family(_QWEN_TOKENS, functools.partial(_build_qwen, version="2")),
    # Qwen2.5-VL belongs to the qwen2_vl family; buildable for tests, not in FAMILIES
    "qwen2_5_vl": _Family(_QWEN_TOKENS, functools.partial(_build_qwen, version="2.5")),
    "qwen3_vl": _Family(tiny_recent.QWEN3_TOKENS, tiny_recent.build_qwen3_vl),
    "qwen3_vl_moe": _Family(tiny_recent.QWEN3_TOKENS, functools.partial(tiny_recent.build_qwen3_vl, moe=True)),
    "qwen3_5": _Family(tiny_recent.QWEN3_TOKENS, tiny_recent.build_qwen3_5),
    "gemma4": _Family(tiny_recent.GEMMA4_TOKENS, tiny_recent.build_gemma4, tiny_recent.GEMMA4_NAMED_TOKENS),
}


def train_tokenizer(
    special_tokens: tuple[str, ...], *, vocab_size: int = VOCAB_SIZE, named: dict[str, str] | None = None
) -> Any:
    """A byte-level BPE tokenizer trained on the small built-in corpus.

    ``special_tokens`` are bos, eos and pad, then the multimodal and chat markers; eos is
    also the end-of-turn token, so generation stops at the end of an answer. ``named``
    gives some of them the attribute names a processor reads (Gemma 4's ``boi_token``...).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS, trainer=trainer)
    bos, eos, pad, *extra = special_tokens
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        extra_special_tokens=dict(named) if named else list(extra),
        padding_side="left",
    )


def build_tiny_model(
    family: str, out_dir: str | os.PathLike[str], *, seed: int = 0, patch_size: int | None = None
) -> Path:
    """Build and save a tiny random model of ``family``; return the directory.

    The weights come from ``seed`` alone (the global torch RNG is left as it was), so
    two builds with the same seed are the same model. ``patch_size`` (video_llava only;
    default :data:`PATCH_SIZE`) changes the vision tower's patch side: the CPU demo's
    16 gives 2x2 patches a frame, which the tiny language model learns motion from.
    """
    if family not in _FAMILY_SPECS:
        raise ValueError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES + VARIANTS)}")
    if patch_size is not None and (family != "video_llava" or FRAME_SIZE % patch_size):
        raise ValueError(f"patch_size {patch_size}: only video_llava takes one, dividing {FRAME_SIZE}")
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    spec = _FAMILY_SPECS[family]
    tokenizer = train_tokenizer(spec.special_tokens, named=spec.named_tokens)
    geometry = {} if patch_size is None else {"patch_size": patch_size}
    config, processor = spec.build(tokenizer, len(tokenizer), **geometry)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=32,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    write_hub_weight_names(out)
    processor.save_pretrained(out)
    logger.info(
        "wrote a tiny %s model (%d parameters, vocabulary %d) to %s",
        family,
        sum(p.numel() for p in model.parameters()),
        len(tokenizer),
        out,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llava-star tiny-model", description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=FAMILIES + VARIANTS, help="the architecture to build")
    parser.add_argument("-o", "--output", required=True, type=Path, help="directory to save the model to")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    build_tiny_model(args.family, args.output, seed=args.seed)
    return 0
