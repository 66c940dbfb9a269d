"""lmms-eval 0.7.3's ``huggingface`` chat wrapper crashes on every question on transformers 5.

Upstream bugs, in ``lmms_eval.models.chat.huggingface.Huggingface.generate_until``:

- it calls the processor with ``audios=[]``; transformers 5 refuses the old keyword: "You
  passed keyword argument `audios` which is deprecated. Please use `audio` instead.";
- it passes ``images=[]`` for a video-only question and video *paths*, which transformers 5
  decodes only with torchcodec, sampling the processor's default frame count and ignoring
  the wrapper's ``max_num_frames``.

Fix: the wrapper's processor is called with ``audio`` for ``audios``, ``None`` for empty
media lists, and each video decoded by lmms-eval's own ``read_video`` (PyAV, ``max_num_frames``
frames sampled uniformly), as lmms-eval's simple wrappers do.

Delete when the wrapper passes ``audio=`` and decodes videos itself (or transformers decodes
without torchcodec and the wrapper passes ``num_frames``).
"""

from __future__ import annotations

import functools

from patches import Patch
from patches._processor import FixedInputsProcessor

_MARK = "_llava_star_inputs"


def apply() -> None:
    from lmms_eval.models.chat.huggingface import Huggingface
    from lmms_eval.models.model_utils.load_video import read_video

    if getattr(Huggingface.generate_until, _MARK, False):
        return
    original = Huggingface.generate_until

    @functools.wraps(original)
    def generate_until(self, requests):
        if not isinstance(self.processor, FixedInputsProcessor):
            self.processor = FixedInputsProcessor(
                self.processor, functools.partial(read_video, num_frm=self.max_num_frames)
            )
        return original(self, requests)

    setattr(generate_until, _MARK, True)
    Huggingface.generate_until = generate_until


PATCH = Patch("huggingface_chat_inputs", {"lmms_eval": ("0.7.3",), "transformers": ("5.23.0",)}, apply)
