"""Turn a prepared samples file into the docs the tasks read, and bind the tasks to it.

lmms-eval loads a task's docs with ``datasets`` (``dataset_path: json``), which needs one
Arrow type per column; a label ``value`` is a string in one sample and a number or a
range in the next, so each doc carries its labels as one JSON string (``labels_json``).
The docs path cannot come from an environment variable (lmms-eval 0.7.3 does not expand
``$VAR`` in ``data_files``), so :func:`bind_tasks` writes a task folder whose YAML files
include the shipped ones and point ``data_files`` at the docs by absolute path.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llava_star.eval_tasks import GROUP_NAME, TASK_NAMES, tasks_dir
from llava_star.eval_tasks.hooks import scored_labels
from llava_star.records import Sample, read_samples, write_jsonl_atomic, write_text_atomic

logger = logging.getLogger(__name__)

DOCS_FILE = "docs.jsonl"


def sample_to_doc(sample: Sample) -> dict[str, Any]:
    """One docs line: every column a single type whatever the sample's labels."""
    return {
        "id": sample.id,
        "video": sample.video,
        "start": sample.start,
        "end": sample.end,
        "question": sample.question,
        "source": sample.source,
        "task": sample.task,
        "labels_json": json.dumps([label.to_dict() for label in sample.labels], ensure_ascii=False),
    }


def count_docs(docs: Sequence[Mapping[str, Any]], tasks: Iterable[str] = TASK_NAMES) -> dict[str, int]:
    """How many docs each task keeps (a task scores only the labels it is about)."""
    return {task: sum(1 for doc in docs if scored_labels(task, doc)) for task in tasks}


def _task_yaml(task: str, docs_path: Path) -> str:
    shipped = tasks_dir() / f"{task}.yaml"
    # JSON is YAML: quoting the paths keeps odd characters in them harmless
    return (
        f"# {task} bound to {docs_path.name}; written by llava_star.eval_tasks.docs\n"
        f"include: {json.dumps(str(shipped))}\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(docs_path))}\n"
    )


def bind_tasks(samples_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> tuple[Path, dict[str, int]]:
    """Write ``out_dir/docs.jsonl`` and one task file per task; returns the folder and doc counts.

    Pass the folder to ``lmms-eval --include_path``. Samples are validated on the way
    (a bad line fails here with ``file:line``, not inside lmms-eval).
    """
    out_dir = Path(out_dir).resolve()
    docs = [sample_to_doc(sample) for sample in read_samples(samples_path)]
    docs_path = out_dir / DOCS_FILE
    write_jsonl_atomic(docs_path, docs)
    for task in TASK_NAMES:
        write_text_atomic(out_dir / f"{task}.yaml", _task_yaml(task, docs_path))
    group = tasks_dir() / f"{GROUP_NAME}.yaml"
    write_text_atomic(out_dir / group.name, group.read_text(encoding="utf-8"))
    counts = count_docs(docs)
    logger.info("bound the tasks to %d samples of %s in %s: %s", len(docs), samples_path, out_dir, counts)
    return out_dir, counts
