"""Conversations + decoded frames or images -> model inputs, through the processor's chat template.

Generation and training build their inputs here, so both see exactly the same prompt
text, media placeholders and frame preprocessing: a model fine-tuned on one layout and
asked in another would be evaluated on something it never saw.

Training also needs to know which tokens are the assistant's, to compute the loss on the
answer only. Chat templates differ per family (``USER: ... ASSISTANT:`` for Video-LLaVA,
ChatML for Qwen), and hub templates do not carry ``{% generation %}`` markers, so the
assistant spans are found in the rendered text (each assistant message from where its
content starts to where the rendering of the conversation up to it ends, which includes
the end-of-turn token, so the model learns to stop) and mapped to token positions with
the tokenizer's offsets, shifted past the video and image placeholders the processor expands.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from llava_star.errors import ConfigError
from llava_star.llava_json import GPT, HUMAN, IMAGE_PLACEHOLDER, SYSTEM, VIDEO_PLACEHOLDER

Conversation = list[dict[str, Any]]
# Qwen3.5's hub template opens a generated answer with "<think>\n" unless told not to think,
# yet renders a trained answer after an empty "<think>\n\n</think>\n\n": without thinking,
# the generation prompt is exactly the text before a trained answer. Templates that do not
# read the variable (every other family's) ignore it.
TEMPLATE_KWARGS: Mapping[str, Any] = {"enable_thinking": False}


def render_chat(processor: Any, conversation: Conversation, add_generation_prompt: bool = False) -> str:
    """``conversation`` through the processor's chat template, as generation and training both see it."""
    return processor.apply_chat_template(
        conversation, add_generation_prompt=add_generation_prompt, **template_kwargs(processor)
    )


def template_kwargs(processor: Any) -> dict[str, Any]:
    """:data:`TEMPLATE_KWARGS` the processor's template reads: transformers hands any other keyword
    to the processor's call and warns at every render (tens of thousands of lines in a demo)."""
    template = getattr(processor, "chat_template", None)
    if isinstance(template, Mapping):
        template = template.get("default")
    if not isinstance(template, str):
        return {}
    return {key: value for key, value in TEMPLATE_KWARGS.items() if key in template}


class DecodedVideo(Protocol):
    """What the inputs need of a decoded video (``llava_star.media.video.Frames`` is one)."""

    array: np.ndarray  # uint8 [frames, height, width, 3] RGB

    def metadata(self, clock: str = "clip") -> Mapping[str, Any]: ...


def video_conversation(question: str, answer: str | None = None) -> Conversation:
    """A one-video, one-question conversation in the processor chat format.

    >>> video_conversation("What colour is it?", "Red.")[1]
    {'role': 'assistant', 'content': [{'type': 'text', 'text': 'Red.'}]}
    """
    conversation: Conversation = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]},
    ]
    if answer is not None:
        conversation.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return conversation


_LLAVA_ROLES = {HUMAN: "user", GPT: "assistant", SYSTEM: "system"}
_MEDIA_ITEMS = {VIDEO_PLACEHOLDER: {"type": "video"}, IMAGE_PLACEHOLDER: {"type": "image"}}
_PLACEHOLDER_PATTERN = re.compile(f"({re.escape(VIDEO_PLACEHOLDER)}|{re.escape(IMAGE_PLACEHOLDER)})")


def from_llava_turns(turns: Sequence[Mapping[str, str]]) -> Conversation:
    """LLaVA training JSON turns (``{"from", "value"}``) as a processor conversation.

    Each ``<video>`` / ``<image>`` placeholder becomes a media item where it stands (LLaVA
    data puts ``<image>`` before or after the question); the text around it is stripped,
    so ``"<video>\\nq"`` renders exactly as :func:`video_conversation` does. A turn with no
    placeholder is text only (LLaVA-665K's text-only records, follow-up turns).

    >>> from_llava_turns([{"from": "human", "value": "<video>\\nWhat colour?"}, {"from": "gpt", "value": "Red."}])[0]
    {'role': 'user', 'content': [{'type': 'video'}, {'type': 'text', 'text': 'What colour?'}]}
    >>> from_llava_turns([{"from": "human", "value": "What is it?\\n<image>"}])[0]["content"]
    [{'type': 'text', 'text': 'What is it?'}, {'type': 'image'}]
    """
    conversation: Conversation = []
    for index, turn in enumerate(turns):
        role = _LLAVA_ROLES.get(turn.get("from", ""))
        if role is None or not isinstance(turn.get("value"), str):
            raise ValueError(f"turn {index}: expected from in {sorted(_LLAVA_ROLES)} and a string value, got {turn!r}")
        content: list[dict[str, Any]] = []
        for piece in _PLACEHOLDER_PATTERN.split(turn["value"]):
            if piece in _MEDIA_ITEMS:
                content.append(dict(_MEDIA_ITEMS[piece]))
            elif piece.strip():
                content.append({"type": "text", "text": piece.strip()})
        conversation.append({"role": role, "content": content})
    return conversation


def media_count(conversation: Conversation, kind: str) -> int:
    """How many ``kind`` ("video" / "image") items the conversation's messages hold.

    >>> media_count([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]}], "image")
    1
    """
    return sum(
        1
        for message in conversation
        if not isinstance(message["content"], str)
        for item in message["content"]
        if item.get("type") == kind
    )


@dataclass(frozen=True)
class ModelInputs:
    """A padded batch for ``model(**batch)`` / ``model.generate(**batch)``.

    ``assistant_mask`` (bool ``[batch, length]``) marks the assistant tokens when they were
    asked for; :meth:`labels` turns it into the usual causal-LM targets.
    """

    batch: Any  # transformers BatchFeature: input_ids, attention_mask, pixel_values_videos, ...
    assistant_mask: Any = None

    def labels(self, ignore_index: int = -100) -> Any:
        """``input_ids`` where the assistant speaks, ``ignore_index`` elsewhere."""
        if self.assistant_mask is None:
            raise ValueError("labels need the assistant mask: build the inputs with assistant_spans=True")
        return self.batch["input_ids"].masked_fill(~self.assistant_mask, ignore_index)


def _message_text(message: Mapping[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(item["text"] for item in content if item.get("type") == "text")


def special_token_texts(tokenizer: Any) -> set[str]:
    """The tokenizer's special tokens as text (eos, pad, ``<|im_end|>``, media placeholders ...)."""
    texts = set(getattr(tokenizer, "all_special_tokens", []) or [])
    texts.update(token.content for token in getattr(tokenizer, "added_tokens_decoder", {}).values() if token.special)
    return texts


def assistant_turns_with_stop(
    processor: Any, conversation: Conversation, rendered: str
) -> tuple[str, list[tuple[int, int]]]:
    """``rendered`` with a stop token after every assistant turn, and the turns' character spans.

    A turn ends with the last special token of its ending (ChatML's ``<|im_end|>``, not
    the newline after it), so the loss ends on the stop token. The hub's vicuna-style templates of Video-LLaVA-7B-hf and
    LLaVA-NeXT-Video end a turn with a space and no special token, so a model trained on
    them never learns to stop; where a turn's ending holds no special token, the
    tokenizer's eos token is written right after the answer (the original LLaVA code's
    ``</s>``), and the span ends with it.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    specials = special_token_texts(tokenizer)
    eos = getattr(tokenizer, "eos_token", None)
    spans: list[tuple[int, int]] = []
    out = rendered
    shift = 0  # characters inserted so far
    for index, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        prompt = render_chat(processor, conversation[:index], add_generation_prompt=True)
        through = render_chat(processor, conversation[: index + 1])
        text = _message_text(message)
        if not rendered.startswith(through):
            start, ending = _turn_rendered_otherwise_later(rendered, prompt, through, text)
        elif through.startswith(prompt):
            start = rendered.find(text, len(prompt))
            ending = rendered[start + len(text) : len(through)]
        else:  # the answer is trained after the generation prompt, as it is generated
            start, out, shift = _after_the_generation_prompt(out, shift, prompt, through, text)
            ending = rendered[start + len(text) : len(through)]
        if start < 0:
            raise ConfigError(f"chat_template: assistant turn {index} does not appear in the rendered conversation")
        end = start + len(text)
        stop_end = max((ending.rfind(token) + len(token) for token in specials if token in ending), default=0)
        if stop_end:  # the template's own end-of-turn token; what follows it (a newline) is not learned
            spans.append((start + shift, end + stop_end + shift))
            continue
        if not eos:
            raise ConfigError(
                "chat_template: assistant turns end with no special token and the tokenizer has no eos_token"
            )
        out = out[: end + shift] + eos + out[end + shift :]
        spans.append((start + shift, end + shift + len(eos)))
        shift += len(eos)
    return out, spans


def _turn_rendered_otherwise_later(rendered: str, prompt: str, through: str, text: str) -> tuple[int, str]:
    """An assistant turn the template writes differently once more turns follow (Qwen3.5's writes
    an empty think block only before the answer after the last question): the answer's start
    where the rendering leaves the generation prompt, and the turn's ending as the template
    writes it when the turn is last."""
    in_through = through.find(text, len(os.path.commonprefix([prompt, through])))
    ending = through[in_through + len(text) :]
    start = rendered.find(text, len(os.path.commonprefix([prompt, rendered])))
    if in_through < 0 or start < 0 or not rendered.startswith(ending, start + len(text)):
        raise ConfigError(
            "chat_template: rendering a conversation is not an extension of rendering its first turns; "
            "the assistant tokens cannot be located"
        )
    return start, ending


def _after_the_generation_prompt(out: str, shift: int, prompt: str, through: str, text: str) -> tuple[int, str, int]:
    """Where a template's generation prompt is not the text its rendered answer follows (Gemma 4's
    26B / 31B templates end the prompt with an empty thought channel, ``<|channel>thought\n
    <channel|>``, that a rendered model turn leaves out), ``out`` with the text before the answer
    replaced by the prompt's: the answer's start in the rendering, the new text and shift."""
    common = len(os.path.commonprefix([prompt, through]))
    start = through.find(text, common)
    if start < 0:
        return start, out, shift
    return start, out[: common + shift] + prompt[common:] + out[start + shift :], shift + len(prompt) - start


def _token_mask(
    offsets: Sequence[Sequence[int]],
    replacements: Sequence[Mapping[str, Any]],
    spans: Sequence[tuple[int, int]],
) -> list[bool]:
    """Mark the tokens overlapping ``spans`` (characters of the text before placeholders expanded)."""
    placeholder_ends = [item["span"][1] for item in replacements]
    # characters added by all the expansions up to and including each placeholder
    gained = [0] + [item["new_span"][1] - item["span"][1] for item in replacements]
    mask = [False] * len(offsets)
    for start, end in spans:
        start += gained[bisect.bisect_right(placeholder_ends, start)]
        end += gained[bisect.bisect_right(placeholder_ends, end)]
        for position, (token_start, token_end) in enumerate(offsets):
            if token_start < end and token_end > start:  # zero-width tokens (padding) never match
                mask[position] = True
    return mask


def timestamp_clock(processor: Any) -> str:
    """``"source"`` for the processors of families trained with each frame's time in the
    source file written before it (Qwen3-VL: :data:`~llava_star.models.families.Family.timestamps`),
    else ``"clip"``: the clock the frames' metadata gives indices in."""
    from llava_star.models.families import TIMESTAMP_CLOCKS

    return TIMESTAMP_CLOCKS.get(type(processor).__name__, "clip")


# processors that pair images with prompts row by row (a flat list is read as one row's)
_IMAGES_PER_ROW = frozenset({"Gemma4Processor"})


def _check_frame_limit(processor: Any, videos: Sequence[DecodedVideo]) -> None:
    """Gemma 4 was trained on at most 32 frames a video (its video processor samples 32)."""
    from llava_star.models.families import MAX_FRAMES

    limit = MAX_FRAMES.get(type(processor).__name__)
    longest = max((len(video.array) for video in videos), default=0)
    if limit is not None and longest > limit:
        raise ConfigError(
            f"num_frames: {type(processor).__name__} takes at most {limit} frames a video, got {longest}; "
            f"sample {limit} or fewer (--num-frames)"
        )


def _check_media(conversations: Sequence[Conversation], media: Sequence[Any | None], kind: str) -> None:
    """One ``kind`` item in each conversation that has a ``kind`` input, none in the others."""
    if len(media) != len(conversations):
        raise ValueError(f"{len(conversations)} conversations but {len(media)} {kind}s")
    for row, (conversation, item) in enumerate(zip(conversations, media)):
        expected = 0 if item is None else 1
        found = media_count(conversation, kind)
        if found != expected:
            raise ValueError(f"conversation {row}: {found} {kind} item(s) but {expected} {kind} given")


def build_inputs(
    processor: Any,
    conversations: Sequence[Conversation],
    videos: Sequence[DecodedVideo | None],
    *,
    images: Sequence[Any | None] | None = None,
    add_generation_prompt: bool,
    assistant_spans: bool = False,
    padding_side: str = "left",
) -> ModelInputs:
    """Render ``conversations`` with the chat template and process them with their media.

    ``videos[i]`` and ``images[i]`` (an RGB ``uint8 [height, width, 3]`` array or PIL image)
    belong to ``conversations[i]``; either may be ``None``, so one batch can mix video,
    image and text-only conversations (LLaVA-665K mixed into video data). Each
    conversation holds one ``{"type": "video"}`` item per video and one ``{"type": "image"}``
    per image it is given. Generation passes conversations that end with the user turn and
    ``add_generation_prompt=True`` and pads on the left (so every row's answer starts at
    the same position); training passes the assistant turn too, with
    ``assistant_spans=True`` for the loss mask, and may pad on the right.
    """
    import torch

    images = [None] * len(conversations) if images is None else images
    _check_media(conversations, videos, "video")
    _check_media(conversations, images, "image")
    texts = [
        render_chat(processor, conversation, add_generation_prompt=add_generation_prompt)
        for conversation in conversations
    ]
    kwargs: dict[str, Any] = {}
    spans: list[list[tuple[int, int]]] = []
    if assistant_spans:
        kwargs.update(return_offsets_mapping=True, return_text_replacement_offsets=True)
        for row, conversation in enumerate(conversations):
            texts[row], row_spans = assistant_turns_with_stop(processor, conversation, texts[row])
            spans.append(row_spans)
    # the processor pairs media with placeholders in order of appearance across the batch
    present_videos = [video for video in videos if video is not None]
    if present_videos and getattr(processor, "video_processor", None) is None:
        # LLaVA-1.5's processor has no video processor: the frames would be dropped and the
        # model would answer from the text alone
        raise ConfigError(f"{type(processor).__name__} takes no video; use a video LVLM for video records")
    _check_frame_limit(processor, present_videos)
    if present_videos:
        kwargs.update(
            videos=[video.array for video in present_videos],
            video_metadata=[dict(video.metadata(clock=timestamp_clock(processor))) for video in present_videos],
            # the frames are already the sampled ones: a processor configured to sample
            # (do_sample_frames) would pick indices of the whole clip from the 8-frame array
            do_sample_frames=False,
        )
    present_images = [image for image in images if image is not None]
    if present_images and type(processor).__name__ in _IMAGES_PER_ROW:
        kwargs["images"] = [[] if image is None else [image] for image in images]
    elif present_images:
        kwargs["images"] = present_images
    batch = processor(text=texts, padding=True, padding_side=padding_side, return_tensors="pt", **kwargs)
    if not assistant_spans:
        return ModelInputs(batch=batch)
    offsets = batch.pop("offset_mapping").tolist()
    replacements = batch.pop("text_replacement_offsets")
    rows = [_token_mask(offsets[row], replacements[row], spans[row]) for row in range(len(conversations))]
    return ModelInputs(batch=batch, assistant_mask=torch.tensor(rows, dtype=torch.bool))
