"""Records the frames a model's video processor receives (loaded by tests as ``sitecustomize``).

Put this folder first on ``PYTHONPATH`` and name a JSONL file in ``FRAME_SPY_OUT``: every
video that reaches a transformers video processor, decoded and sampled (by the lmms-eval
wrapper, or by the processor from a path), appends ``{"shape": [...], "stamps": [...]}``,
the stamps read with :func:`frame_numbers.read_stamps`. The processor runs unchanged: the
spy only reads what ``BaseVideoProcessor._prepare_input_videos`` returns, which every video
processor of the families tested calls before resizing.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path


def _record(videos):
    from frame_numbers import read_stamps

    lines = []
    for video in videos:  # torch (T, C, H, W), as _prepare_input_videos returns them
        array = video.detach().float().cpu().numpy()
        lines.append({"shape": list(array.shape), "stamps": read_stamps(array, channels_first=True)})
    with open(os.environ["FRAME_SPY_OUT"], "a", encoding="utf-8") as out:
        out.writelines(json.dumps(line) + "\n" for line in lines)


def _install():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for frame_numbers
    from transformers.video_processing_utils import BaseVideoProcessor

    prepare = BaseVideoProcessor._prepare_input_videos

    @functools.wraps(prepare)
    def spy(self, videos, *args, **kwargs):
        prepared = prepare(self, videos, *args, **kwargs)
        _record(prepared)
        return prepared

    BaseVideoProcessor._prepare_input_videos = spy


if os.environ.get("FRAME_SPY_OUT"):
    _install()
