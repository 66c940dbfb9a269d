"""ActivityNet Captions: when does each described moment happen.

A real entry of ``val_1.json`` (a dict keyed by ``v_`` + YouTube id; sentences carry
leading spaces, ``duration`` float noise, timestamps may reach past the end)::

    "v_uqiMw7tQ1Cc": {"duration": 55.15, "timestamps": [[0.28, 55.15], [13.79, 54.32]],
                      "sentences": ["A weight lifting tutorial is given.",
                                    "  The coach helps the guy in red with the proper body placement and lifting technique."]}

becomes one temporal-localization sample per sentence::

    {"id": "v_uqiMw7tQ1Cc:2", "video": "v_uqiMw7tQ1Cc.mp4",
     "question": "When does \"the coach helps the guy in red ...\" happen in the video?",
     "labels": [{"type": "time_range", "value": [13.79, 54.32], "duration": 55.15,
                 "name": "The coach helps the guy in red with the proper body placement and lifting technique"}],
     "source": "activitynet_captions", "task": "temporal_localization"}

Ends are clamped to the duration; videos are found as ``v_<id>.*`` or ``<id>.*``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from llava_star.datasets.adapter import (
    Found,
    PrepareRequest,
    Skipped,
    VideoIndex,
    load_json,
    located,
    parse_seconds,
)
from llava_star.datasets.questions import event_phrase, make_question
from llava_star.errors import AnnotationError
from llava_star.records import Label, Sample

logger = logging.getLogger(__name__)


def adapt(request: PrepareRequest) -> Iterator[Found | Skipped]:
    data = load_json(request.annotations)
    if not isinstance(data, dict):
        raise AnnotationError(f"{request.annotations}: expected an object keyed by video id")
    index = VideoIndex.build(request.video_root)
    for video_id, entry in data.items():
        where = f"{request.annotations}: key {video_id!r}"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where}: expected an object, got {type(entry).__name__}")
        duration = round(parse_seconds(entry.get("duration"), where, "duration"), 3)
        timestamps, sentences = entry.get("timestamps"), entry.get("sentences")
        if not isinstance(timestamps, list) or not isinstance(sentences, list) or len(timestamps) != len(sentences):
            raise AnnotationError(f"{where}: expected lists 'timestamps' and 'sentences' of the same length")
        video = index.find([video_id, video_id.removeprefix("v_")]) or f"{video_id}.mp4"
        for number, (span, sentence) in enumerate(zip(timestamps, sentences), start=1):
            item = f"{where}: [{number - 1}]"
            if not (isinstance(span, list) and len(span) == 2) or not isinstance(sentence, str):
                raise AnnotationError(f"{item}: expected [start, end] and a sentence, got {span!r}, {sentence!r}")
            start, end = parse_seconds(span[0], item, "start"), parse_seconds(span[1], item, "end")
            event = sentence.strip().rstrip(".").strip()
            if end < start:
                raise AnnotationError(f"{item}: end {end} is before start {start}")
            if start >= duration or not event:
                yield Skipped("segment starts at or after the end of the video" if event else "empty sentence", item)
                continue
            with located(item):
                label = Label("time_range", (start, min(end, duration)), name=event, duration=duration)
                question = make_question("temporal_localization", request.rng, event=event_phrase(event, quote=True))
                sample = Sample(
                    f"{video_id}:{number}", video, question, (label,), "activitynet_captions", "temporal_localization"
                )
                yield Found(sample, item)
