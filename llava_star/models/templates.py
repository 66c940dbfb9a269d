"""Chat templates in each family's own conversation style, as ``.jinja`` files beside this module.

Each family's are named in :mod:`llava_star.models.families`. The tiny models are saved
with them, and :func:`llava_star.models.loading.load_model` gives one to a checkpoint whose
processor has none (older hub uploads), so every model is prompted through
``apply_chat_template`` and generation and training share one layout.

``chat_templates/llava.jinja`` is LLaVA-1.5 / Video-LLaVA's ``USER: <video>\\nq ASSISTANT: a</s>``;
``chatml.jinja`` (Qwen's ChatML) and ``plain.jinja`` (LLaVA's ``--version plain``) write a
family's media tokens, which :func:`chatml_template` and :func:`plain_template` set at
their top as ``video_token`` and ``image_token``.
"""

from __future__ import annotations

import json
from importlib import resources


def template_text(name: str) -> str:
    """The text of ``chat_templates/NAME.jinja``, shipped as package data.

    >>> template_text("llava").startswith("{#-")
    True
    """
    return (resources.files("llava_star.models") / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")


def _with_media_tokens(name: str, video: str, image: str) -> str:
    # json.dumps writes a string literal Jinja reads back as the same string
    return (
        f"{{%- set video_token = {json.dumps(video)} -%}}{{%- set image_token = {json.dumps(image)} -%}}\n"
        + template_text(name)
    )


def chatml_template(video: str, image: str) -> str:
    """Qwen's ChatML: ``<|im_start|>role\\n...<|im_end|>\\n``, with the family's media tokens."""
    return _with_media_tokens("chatml", video, image)


def plain_template(video: str, image: str) -> str:
    """LLaVA's ``--version plain`` (its pretraining stage): the media alone, then the answer and
    a newline (``<image>caption\\n``); the human turn's words are left out, as LLaVA's
    ``preprocess_plain`` replaces them with the image token."""
    return _with_media_tokens("plain", video, image)


LLAVA_TEMPLATE = template_text("llava")
QWEN_VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
