"""The model families llava_star runs, one entry each: what is known about a family lives here.

A family is one way of prompting and feeding a transformers LVLM class; its ``model_types``
are the ``config.model_type`` values that belong to it (Qwen2.5-VL is processed as Qwen2-VL).
The loader maps a checkpoint to its family, gives a checkpoint without a chat template the
family's, and names the family's transformers checkpoint when an original-repository one is
loaded; ``train`` refuses video records for image-only families and uses the family's plain
(pretraining) template for ``--version plain`` and reads which parameters are the vision tower
and the projector from ``vision_parts`` / ``projector_parts``; the generate backends read
``vllm_videos``.

Adding a family is an entry here (and, for the tests and the demo, a tiny-model builder in
:mod:`llava_star.models.tiny`).
"""

from __future__ import annotations

from dataclasses import dataclass

from llava_star.errors import ConfigError
from llava_star.models.templates import (
    LLAVA_TEMPLATE,
    QWEN_IMAGE,
    QWEN_VIDEO,
    chatml_template,
    plain_template,
    template_text,
)


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    chat_template: str  # used when the checkpoint's processor ships none
    plain_template: str  # LLaVA's `--version plain`: the media, then the caption
    example: str  # a transformers checkpoint of the family
    videos: bool = True  # False: an image model, trained on image and text records
    vllm_videos: bool = False  # vLLM (0.32) answers its videos
    vllm_unserved: tuple[str, ...] = ()  # model types of the family vLLM does not answer (then HF does)
    # which parameters of the transformers model are its vision tower and its projector, by a
    # fragment of their names (the projector is tested first: Qwen2-VL's sits inside its tower);
    # every other parameter is the language model. Training freezes and groups them by these.
    vision_parts: tuple[str, ...] = ("vision_tower",)
    projector_parts: tuple[str, ...] = ("multi_modal_projector",)
    # how the processor writes each frame's time into the prompt from the frames' metadata
    # (frame index / fps): "" for families that write none; "source" where the model was
    # trained with the times of the source file (a clip's first frame is at its start time
    # in the file, not at 0), which is what models/inputs.py then gives the processor
    timestamps: str = ""
    max_frames: int | None = None  # the most frames the model takes per video (Gemma 4: 32)


_LLAVA_PLAIN = plain_template("<video>", "<image>")
# image_newline (LLaVA-NeXT, OneVision) is the projector's learned separator of image rows
_ANYRES_PROJECTOR = ("multi_modal_projector", "image_newline")
# the projector's name in the original LLaVA repositories' models (``model.mm_projector.0``),
# which transformers calls multi_modal_projector (models/conversion.py renames it)
ORIGINAL_PROJECTOR_PART = "mm_projector"

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("llava", ("llava",), LLAVA_TEMPLATE, _LLAVA_PLAIN, "llava-hf/llava-1.5-7b-hf", videos=False),
        Family(
            "llava_next",
            ("llava_next",),
            LLAVA_TEMPLATE,
            _LLAVA_PLAIN,
            "llava-hf/llava-v1.6-vicuna-7b-hf",
            videos=False,
            projector_parts=_ANYRES_PROJECTOR,
        ),
        Family(
            "video_llava",
            ("video_llava",),
            LLAVA_TEMPLATE,
            _LLAVA_PLAIN,
            "LanguageBind/Video-LLaVA-7B-hf",
            vision_parts=("image_tower", "video_tower"),
        ),
        Family(
            "llava_next_video",
            ("llava_next_video",),
            LLAVA_TEMPLATE,
            _LLAVA_PLAIN,
            "llava-hf/LLaVA-NeXT-Video-7B-hf",
            vllm_videos=True,
            projector_parts=_ANYRES_PROJECTOR,
        ),
        Family(
            "llava_onevision",
            ("llava_onevision",),
            chatml_template("<video>\n", "<image>\n"),
            _LLAVA_PLAIN,
            "llava-hf/llava-onevision-qwen2-7b-ov-hf",
            vllm_videos=True,
            projector_parts=_ANYRES_PROJECTOR,
        ),
        Family(
            "qwen2_vl",
            ("qwen2_vl", "qwen2_5_vl"),
            chatml_template(QWEN_VIDEO, QWEN_IMAGE),
            plain_template(QWEN_VIDEO, QWEN_IMAGE),
            "Qwen/Qwen2-VL-7B-Instruct",
            vllm_videos=True,
            vision_parts=("visual.",),
            projector_parts=("visual.merger",),  # the tower's last block, which merges patches into text space
        ),
        Family(
            "qwen3_vl",
            ("qwen3_vl", "qwen3_vl_moe"),
            template_text("qwen3_vl"),  # the hub's Qwen3-VL-Instruct template: no implied system prompt
            plain_template(QWEN_VIDEO, QWEN_IMAGE),
            "Qwen/Qwen3-VL-8B-Instruct",
            # greedy parity with HF holds (tests/vllm_backend/test_vllm_recent_families.py); vLLM 0.32
            # cannot load a Qwen3-VL-MoE checkpoint saved by transformers 5 (its packed experts)
            vllm_videos=True,
            vllm_unserved=("qwen3_vl_moe",),
            vision_parts=("visual.",),
            # the merger and the DeepStack mergers (features of three inner blocks, added to
            # the first language layers' hidden states) are the projector
            projector_parts=("visual.merger", "visual.deepstack_merger_list"),
            timestamps="source",
        ),
        Family(
            "qwen3_5",
            ("qwen3_5",),
            # the tiny model's template; a Qwen3.5 checkpoint ships its own (a thinking template)
            template_text("qwen3_vl"),
            plain_template(QWEN_VIDEO, QWEN_IMAGE),
            "Qwen/Qwen3.5-9B",
            vllm_videos=True,  # greedy parity with HF in bf16 (vLLM 0.32's CPU Gated DeltaNet runs bf16 only)
            vision_parts=("visual.",),
            projector_parts=("visual.merger",),
            timestamps="source",
        ),
        Family(
            "gemma4",
            ("gemma4",),
            template_text("gemma4"),
            plain_template("<|video|>", "<|image|>"),
            "google/gemma-4-E2B-it",
            vllm_videos=True,
            vision_parts=("vision_tower", "audio_tower"),
            projector_parts=("embed_vision", "embed_audio"),
            timestamps="source",
            max_frames=32,
        ),
    )
}


# the processor classes that write frame times into the prompt -> the clock their family was
# trained with (models/inputs.py gives the frames' metadata in it)
TIMESTAMP_CLOCKS = {
    "Qwen3VLProcessor": FAMILIES["qwen3_vl"].timestamps,
    "Gemma4Processor": FAMILIES["gemma4"].timestamps,
}

# the most frames a video may have, by processor class (models/inputs.py refuses more)
MAX_FRAMES = {"Gemma4Processor": FAMILIES["gemma4"].max_frames}


def family_of(model_type: str) -> str:
    """The llava_star family of a transformers ``model_type``.

    >>> family_of("qwen2_5_vl")
    'qwen2_vl'
    """
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family.name
    supported = ", ".join(sorted(t for family in FAMILIES.values() for t in family.model_types))
    raise ConfigError(f"model: unsupported model type {model_type!r}; supported: {supported}")
