"""lmms-eval 0.7.3's ``llava_hf`` chat wrapper crashes on every video question on transformers 5.

Upstream bugs, both in ``lmms_eval.models.chat.llava_hf.LlavaHf.generate_until``:

- it calls the processor with ``images=[]`` when a message holds only a video; transformers
  5's LLaVA image processors index ``images[0]`` and raise ``IndexError: list index out of
  range`` (transformers 4 skipped an empty list);
- it hands the processor the video's path, which transformers 5 decodes only with
  torchcodec (``torchvision.io.read_video`` is gone from torchvision 0.26), and ignores the
  wrapper's ``max_frames_num``: the processor samples its own default number of frames.

Fix: the wrapper's processor gets ``images=None`` instead of an empty list, and each video
path decoded by the simple wrapper's own decoder (``LlavaHf.load_video``, decord, uniform
``max_frames_num`` frames), as the simple ``llava_hf`` does; the rest reaches the processor
unchanged.

Delete when the chat wrapper passes ``images=None`` for a question without images and
decodes videos itself (or transformers decodes without torchcodec and the wrapper passes
``num_frames``).
"""

from __future__ import annotations

import functools

from patches import Patch
from patches._processor import FixedInputsProcessor

_MARK = "_llava_star_no_images"


def apply() -> None:
    from lmms_eval.models.chat.llava_hf import LlavaHf

    if getattr(LlavaHf.generate_until, _MARK, False):
        return
    original = LlavaHf.generate_until

    @functools.wraps(original)
    def generate_until(self, requests):
        if not isinstance(self._image_processor, FixedInputsProcessor):
            decode = functools.partial(self.load_video, max_frames_num=self.max_frames_num)
            self._image_processor = FixedInputsProcessor(self._image_processor, decode)
        return original(self, requests)

    setattr(generate_until, _MARK, True)
    LlavaHf.generate_until = generate_until


PATCH = Patch("llava_hf_chat_inputs", {"lmms_eval": ("0.7.3",), "transformers": ("5.23.0",)}, apply)
