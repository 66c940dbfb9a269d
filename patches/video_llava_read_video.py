"""lmms-eval 0.7.3's ``video_llava`` wrapper crashes on every video.

Upstream bug: ``lmms_eval.models.simple.video_llava.VideoLLaVA.generate_until`` calls
``read_video(path, self.num_frames)``, but ``lmms_eval.models.model_utils.load_video.read_video``
takes the frame count as the keyword ``num_frm`` only: "read_video() takes 1 positional
argument but 2 were given". Fix: the wrapper's module gets a ``read_video`` that passes
the second positional argument as ``num_frm`` (the same decoder, the same uniform sampling).

Delete when the wrapper calls ``read_video(path, num_frm=...)``.
"""

from __future__ import annotations

import functools

from patches import Patch

_MARK = "_llava_star_positional_num_frm"


def apply() -> None:
    from lmms_eval.models.simple import video_llava

    if getattr(video_llava.read_video, _MARK, False):
        return
    original = video_llava.read_video

    @functools.wraps(original)
    def read_video(video_path, num_frm: int = 8, **kwargs):
        return original(video_path, num_frm=num_frm, **kwargs)

    setattr(read_video, _MARK, True)
    video_llava.read_video = read_video


PATCH = Patch("video_llava_read_video", {"lmms_eval": ("0.7.3",), "transformers": ("5.23.0",)}, apply)
