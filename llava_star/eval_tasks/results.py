"""Reading what lmms-eval wrote: its results file, the metrics in it, the end of its log.

lmms-eval exits 0 even when a task crashed, so ``llava-star eval`` judges a run by its
results file, and shows the log's last lines when a task has no result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_LOG_TAIL_LINES = 25


def log_tail(log_path: Path) -> str:
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-_LOG_TAIL_LINES:])


def find_results_file(output_path: Path, since: float) -> Path | None:
    """The newest ``*_results.json`` lmms-eval wrote under ``output_path`` after ``since``."""
    candidates = [path for path in output_path.rglob("*_results.json") if path.stat().st_mtime >= since]
    return max(candidates, key=lambda path: path.stat().st_mtime, default=None)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def task_metrics(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """lmms-eval's ``{"task": {"accuracy,none": 0.5, "accuracy_stderr_clt,none": ...}}`` -> ``{"task": {"accuracy": 0.5}}``.

    >>> task_metrics({"star_qa": {"alias": "star_qa", "accuracy,none": 0.5, "accuracy_stderr,none": "N/A"}})
    {'star_qa': {'accuracy': 0.5}}
    """
    metrics: dict[str, dict[str, Any]] = {}
    for task, values in results.items():
        metrics[task] = {}
        for key, value in values.items():
            name, _, _filter = key.partition(",")
            if key == "alias" or "_stderr" in name or not _filter:
                continue
            metrics[task][name] = _finite_or_none(value)
    return metrics
