"""Tiny builders of the recent families (Qwen3-VL dense and MoE, Qwen3.5, Gemma 4), beside
:mod:`llava_star.models.tiny`, which registers them and owns the shared sizes and tokenizer.

Each is the real transformers architecture at the tiny widths of the older families, with the
hub checkpoint's own chat template (llava_star's copy in ``chat_templates/``), so the tiny
model is prompted, and its loss ends, exactly as the real one's.
"""

from __future__ import annotations

from typing import Any

from llava_star.models.families import FAMILIES as FAMILY_FACTS

# Qwen3-VL's and Qwen3.5's ChatML markers and vision tokens (the hub tokenizers' strings)
QWEN3_TOKENS = (
    "<|endoftext|>",
    "<|im_end|>",
    "<|pad|>",
    "<|im_start|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def _qwen3_vision(sizes: Any) -> dict[str, Any]:
    """Qwen3-VL's vision tower (learned position embeddings interpolated to the grid, a
    DeepStack feature from its first block) at the tiny widths."""
    return {
        "depth": 2,
        "hidden_size": sizes.HIDDEN_SIZE,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": sizes.PATCH_SIZE,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": sizes.TEXT_HIDDEN_SIZE,
        "num_position_embeddings": (sizes.FRAME_SIZE // sizes.PATCH_SIZE) ** 2,
        "deepstack_visual_indexes": [0],
    }


def _qwen3_rope() -> dict[str, Any]:
    # the rotary half of a 32-wide head (16) interleaved over time, height and width
    return {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [6, 5, 5], "mrope_interleaved": True}


def _qwen3_processor(processor_class: Any, tokenizer: Any, sizes: Any, family: str) -> Any:
    from transformers import Qwen2VLImageProcessor, Qwen3VLVideoProcessor

    pixels = {"shortest_edge": sizes.FRAME_SIZE * sizes.FRAME_SIZE, "longest_edge": sizes.FRAME_SIZE * sizes.FRAME_SIZE}
    common = {"patch_size": sizes.PATCH_SIZE, "merge_size": 2, "temporal_patch_size": 2}
    # the video budget is the whole video's pixels; 32 frames of 32 x 32 at most
    video_pixels = {"shortest_edge": sizes.FRAME_SIZE * sizes.FRAME_SIZE, "longest_edge": 32 * sizes.FRAME_SIZE**2}
    return processor_class(
        image_processor=Qwen2VLImageProcessor(**common, size=pixels),
        video_processor=Qwen3VLVideoProcessor(**common, size=video_pixels, cap_pixels_per_frame=True),
        tokenizer=tokenizer,
        chat_template=FAMILY_FACTS[family].chat_template,
    )


def _qwen3_media_ids(tokenizer: Any) -> dict[str, int]:
    return {
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }


def build_qwen3_vl(tokenizer: Any, vocab_size: int, *, moe: bool = False) -> tuple[Any, Any]:
    """Qwen3-VL (``moe=False``) or Qwen3-VL-MoE: one processor, template and vision tower."""
    import transformers

    from llava_star.models import tiny as sizes

    text = sizes.small_text("qwen3_vl_text", vocab_size, tokenizer, head_dim=32, rope_parameters=_qwen3_rope())
    if moe:  # 4 experts of which 2 route each token, as the 30B-A3B's 128 / 8 at tiny widths
        config_class = transformers.Qwen3VLMoeConfig
        text.update(model_type="qwen3_vl_moe_text", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
    else:
        config_class = transformers.Qwen3VLConfig
    config = config_class(vision_config=_qwen3_vision(sizes), text_config=text, **_qwen3_media_ids(tokenizer))
    return config, _qwen3_processor(transformers.Qwen3VLProcessor, tokenizer, sizes, "qwen3_vl")


def build_qwen3_5(tokenizer: Any, vocab_size: int) -> tuple[Any, Any]:
    """Qwen3.5: Qwen3-VL's processor and vision tower (without DeepStack) before a hybrid
    language model, a Gated DeltaNet (linear attention) layer then a full-attention layer, as
    the hub's 3:1 pattern at two layers. Without flash-linear-attention and causal-conv1d
    (CUDA-only) transformers runs its torch versions of both, on the CPU too."""
    import transformers

    from llava_star.models import tiny as sizes

    vision = _qwen3_vision(sizes)
    del vision["deepstack_visual_indexes"]
    text = sizes.small_text(
        "qwen3_5_text",
        vocab_size,
        tokenizer,
        head_dim=32,
        layer_types=["linear_attention", "full_attention"],
        linear_num_key_heads=2,
        linear_num_value_heads=2,
        linear_key_head_dim=16,
        linear_value_head_dim=16,
        # a quarter of the head is rotary (8 of 32), split over time, height and width
        rope_parameters={**_qwen3_rope(), "mrope_section": [2, 1, 1], "partial_rotary_factor": 0.25},
    )
    config = transformers.Qwen3_5Config(vision_config=vision, text_config=text, **_qwen3_media_ids(tokenizer))
    return config, _qwen3_processor(transformers.Qwen3VLProcessor, tokenizer, sizes, "qwen3_5")


# Gemma 4's turn markers (LLaMA-Factory's gemma4 template) and its media markers; the begin /
# end of image and audio strings are the tiny tokenizer's (the processor reads them by name)
GEMMA4_NAMED_TOKENS = {
    "image_token": "<|image|>",
    "boi_token": "<|image>",
    "eoi_token": "<image|>",
    "audio_token": "<|audio|>",
    "boa_token": "<|audio>",
    "eoa_token": "<audio|>",
}
GEMMA4_TOKENS = ("<bos>", "<turn|>", "<pad>", "<|turn>", "<|video|>", *GEMMA4_NAMED_TOKENS.values())


def build_gemma4(tokenizer: Any, vocab_size: int) -> tuple[Any, Any]:
    """Gemma 4: no video tower; each frame goes through the image encoder (patches pooled
    3 x 3 into at most 70 soft tokens) after its mm:ss time. Tiny widths, no audio tower."""
    import transformers

    from llava_star.models import tiny as sizes

    text = sizes.small_text(
        "gemma4_text",
        vocab_size,
        tokenizer,
        head_dim=32,
        global_head_dim=32,
        layer_types=["sliding_attention", "full_attention"],
        sliding_window=64,
        hidden_size_per_layer_input=0,
        vocab_size_per_layer_input=vocab_size,
    )
    vision = {
        "hidden_size": sizes.HIDDEN_SIZE,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "patch_size": sizes.PATCH_SIZE,
        "pooling_kernel_size": 3,
        "position_embedding_size": 64,
        # the soft tokens an image gets when none are asked for: vLLM 0.32 reads it (the
        # processors below say 70)
        "default_output_length": 70,
    }
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in GEMMA4_NAMED_TOKENS.items()}
    config = transformers.Gemma4Config(
        text_config=text,
        vision_config=vision,
        audio_config=None,
        boi_token_id=ids["boi_token"],
        eoi_token_id=ids["eoi_token"],
        image_token_id=ids["image_token"],
        video_token_id=tokenizer.convert_tokens_to_ids("<|video|>"),
        boa_token_id=ids["boa_token"],
        eoa_token_index=ids["eoa_token"],
        audio_token_id=ids["audio_token"],
    )
    common = {"patch_size": sizes.PATCH_SIZE, "pooling_kernel_size": 3, "max_soft_tokens": 70}
    processor = transformers.Gemma4Processor(
        feature_extractor=transformers.Gemma4AudioFeatureExtractor(),
        image_processor=transformers.Gemma4ImageProcessor(**common),
        tokenizer=tokenizer,
        video_processor=transformers.Gemma4VideoProcessor(**common),
        chat_template=FAMILY_FACTS["gemma4"].chat_template,
        image_seq_length=70,
    )
    return config, processor
