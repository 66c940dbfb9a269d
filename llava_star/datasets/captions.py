"""The demo's warm-up data: captions of synthetic moving scenes ("A red square moves left.").

A random tiny model knows nothing; a short warm-up on a few captions gives it the partial
competence a pretrained LVLM brings to a new task, so self-training has something to build on.
"""

from __future__ import annotations

import random
from typing import Any

from llava_star.datasets.questions import make_question
from llava_star.datasets.synthetic import attribute_label, truth_by_video
from llava_star.generation.prompts import hint_prompt
from llava_star.llava_json import video_turns
from llava_star.records import Sample


def caption(labels_by_task: dict[str, str]) -> str:
    """A one-line caption from a moving scene's labels.

    >>> caption({"colour": "red", "shape": "square", "motion_direction": "left"})
    'A red square moves left.'
    """
    return f"A {labels_by_task['colour']} {labels_by_task['shape']} moves {labels_by_task['motion_direction']}."


def balanced_pick(videos_by_colour: dict[str, list[str]], count: int, rng: random.Random) -> list[str]:
    """``count`` videos taken in turn from each colour, so the warm-up sees every colour.

    A colour the warm model never names is a colour self-training cannot learn: no answer
    naming it is ever kept (measured: 2 red captions of 12 gave 0 correct red answers).

    >>> balanced_pick({"red": ["r1", "r2"], "blue": ["b1"]}, 3, random.Random(0))
    ['b1', 'r1', 'r2']
    """
    queues = {colour: rng.sample(videos, len(videos)) for colour, videos in sorted(videos_by_colour.items())}
    picked: list[str] = []
    while len(picked) < count and any(queues.values()):
        for queue in queues.values():
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return sorted(picked)


def warmup_records(
    train_samples: list[Sample], count: int, rng: random.Random, *, hint_tasks: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """LLaVA conversations captioning ``count`` training videos, balanced over colours.

    ``hint_tasks`` adds each caption once more per task behind the rationalization prompt
    with that task's label as the hint (:func:`llava_star.generation.prompts.hint_prompt`): a
    pretrained LVLM can already use a hint, a random tiny one cannot, and without it
    rationalization rescues nothing.
    """

    labels = truth_by_video(train_samples)
    by_colour: dict[str, list[str]] = {}
    for video, tasks in sorted(labels.items()):
        if {"colour", "shape", "motion_direction"} <= set(tasks):
            by_colour.setdefault(tasks["colour"], []).append(video)
    records = []
    for index, video in enumerate(balanced_pick(by_colour, count, rng)):
        question = make_question("caption", rng)
        prompts = {"caption": question}
        for task in hint_tasks:
            prompts[f"hint-{task}"] = hint_prompt(question, [attribute_label(task, labels[video][task])])
        for variant, prompt in prompts.items():
            records.append(
                {
                    "id": f"warmup-{index:04d}-{variant}",
                    "video": video,
                    "conversations": video_turns(prompt, caption(labels[video])),
                    "source": "synthetic",
                    "task": "caption",
                }
            )
    return records
