"""The project's lmms-eval tasks, shipped with the package.

``kinetics700_qa`` (open-ended action questions), ``finediving_aqa`` (dive score and
difficulty), ``star_qa`` (multiple choice) and ``llava_star_qa`` (every label of any
prepared samples file, e.g. the synthetic test split), plus the group ``video_star``
over the paper's three. All are scored by :mod:`llava_star.verify`, rule-based, so no
API key is needed.

The YAML files and their hooks live here; ``python -m llava_star.eval_tasks`` prints
this folder for ``lmms-eval --include_path``, and with ``--samples`` writes a task
folder bound to a samples file (see :mod:`llava_star.eval_tasks.docs`).
"""

from __future__ import annotations

from pathlib import Path

# the tasks defined by the YAML files of this folder, and the group over the paper's tasks
TASK_NAMES = ("llava_star_qa", "kinetics700_qa", "finediving_aqa", "star_qa")
GROUP_NAME = "video_star"
GROUP_TASKS = ("kinetics700_qa", "finediving_aqa", "star_qa")
# `llava-star eval` sets this to a JSONL file; the lmms adapter appends each video it cannot decode
UNREADABLE_VIDEOS_ENV = "LLAVA_STAR_UNREADABLE_VIDEOS"


def tasks_dir() -> Path:
    """The folder to pass to ``lmms-eval --include_path``."""
    return Path(__file__).resolve().parent
