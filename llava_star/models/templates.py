"""Chat templates in each family's own conversation style.

The tiny models are saved with these, and :func:`llava_star.models.loading.load_model`
gives one to a checkpoint whose processor has none (older hub uploads), so every model
is prompted through ``apply_chat_template`` and generation and training share one layout.
"""

from __future__ import annotations

# LLaVA-1.5 / Video-LLaVA conversation style: "USER: <video>\nq ASSISTANT: a</s>". The space
# between turns opens the next turn, so an assistant turn ends with its </s>.
LLAVA_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if not loop.first -%}{{ ' ' }}{%- endif -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ message['content'] if message['content'] is string else message['content'][0]['text'] }}"
    "{%- else -%}"
    "{{ message['role'].upper() + ': ' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'video' -%}{{ '<video>\n' }}"
    "{%- elif item['type'] == 'image' -%}{{ '<image>\n' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{{ '</s>' }}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ ' ASSISTANT:' if messages else 'ASSISTANT:' }}{%- endif -%}"
)


def chatml_template(video: str, image: str) -> str:
    """Qwen's ChatML: ``<|im_start|>role\\n...<|im_end|>\\n``, with the family's media tokens."""
    return (
        "{%- for message in messages -%}"
        "{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{%- if message['content'] is string -%}{{ message['content'] }}"
        "{%- else -%}{%- for item in message['content'] -%}"
        f"{{%- if item['type'] == 'video' -%}}{{{{ '{video}' }}}}"
        f"{{%- elif item['type'] == 'image' -%}}{{{{ '{image}' }}}}"
        "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{{ '<|im_end|>\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
    )


QWEN_VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"

# family -> template
CHAT_TEMPLATES = {
    "llava": LLAVA_TEMPLATE,
    "llava_next": LLAVA_TEMPLATE,
    "video_llava": LLAVA_TEMPLATE,
    "llava_next_video": LLAVA_TEMPLATE,
    "llava_onevision": chatml_template("<video>\n", "<image>\n"),
    "qwen2_vl": chatml_template(QWEN_VIDEO, QWEN_IMAGE),
}


def plain_template(video: str, image: str) -> str:
    """LLaVA's ``--version plain`` (its pretraining stage): the media alone, then the answer and
    a newline (``<image>caption\\n``); the human turn's words are left out, as LLaVA's
    ``preprocess_plain`` replaces them with the image token."""
    return (
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' and message['content'] is not string -%}"
        "{%- for item in message['content'] -%}"
        f"{{%- if item['type'] == 'video' -%}}{{{{ '{video}' }}}}"
        f"{{%- elif item['type'] == 'image' -%}}{{{{ '{image}' }}}}{{%- endif -%}}"
        "{%- endfor -%}"
        "{%- elif message['role'] == 'assistant' -%}"
        "{{ message['content'] if message['content'] is string else message['content'][0]['text'] }}{{ '\n' }}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )


# family -> LLaVA's plain (pretraining) template, with the family's media placeholders
PLAIN_TEMPLATES = {
    family: plain_template(QWEN_VIDEO, QWEN_IMAGE) if family == "qwen2_vl" else plain_template("<video>", "<image>")
    for family in CHAT_TEMPLATES
}
