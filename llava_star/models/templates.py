"""Chat templates in each family's own conversation style.

Each family's are named in :mod:`llava_star.models.families`. The tiny models are saved
with them, and :func:`llava_star.models.loading.load_model` gives one to a checkpoint whose
processor has none (older hub uploads), so every model
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
