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

from llava_star.eval_tasks.hooks import SCORED_LABELS

# A task is its YAML file here and its entry in hooks.SCORED_LABELS (which labels it
# scores); tests check that the two agree. The group's YAML lists the paper's tasks.
TASK_NAMES = tuple(SCORED_LABELS)
GROUP_NAME = "video_star"
# the lmms-eval model name of the adapter (llava_star.eval_tasks.lmms_adapter)
MODEL_NAME = "llava_star"
# `llava-star eval` sets this to a JSONL file; the lmms adapter appends each video it cannot decode
UNREADABLE_VIDEOS_ENV = "LLAVA_STAR_UNREADABLE_VIDEOS"


def tasks_dir() -> Path:
    """The folder to pass to ``lmms-eval --include_path``."""
    return Path(__file__).resolve().parent


def group_tasks() -> tuple[str, ...]:
    """The tasks of the group, as its YAML file lists them."""
    from llava_star.config import load_yaml  # the one YAML reader: no aliases, bounded depth

    group = load_yaml((tasks_dir() / f"{GROUP_NAME}.yaml").read_text(encoding="utf-8"))
    return tuple(group["task"])
