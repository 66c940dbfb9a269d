"""Preference pairs and DPO figures per cycle, for the report (``train.objective`` dpo or
sft_then_dpo): how many pairs each cycle's generations gave, how many of them chose a
rationalized answer, and where the DPO step's reward margin and accuracy ended.

The figures come from the cycle's own record (``run.json``: the ``pairs`` and ``train``
steps of each cycle), as the unusable training records do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def add_preference_figures(stats: dict[str, Any], recorded: Mapping[str, Any] | None) -> None:
    """Each cycle entry of the report's ``stats`` gets ``preference_pairs`` (the export's pair
    statistics) and ``dpo`` (the DPO step's last margin and accuracy, every logged margin),
    when that cycle made pairs.

    >>> stats = {"cycles": [{"cycle": 1}, {"cycle": 2}]}
    >>> recorded = {"cycles": [{"cycle": 1, "pairs": {"pairs": 5, "pairs_chosen_rationalized": 2},
    ...     "train": {"objective": "dpo", "dpo_margin": 0.4, "dpo_accuracy": 1.0, "dpo_margins": [0.0, 0.4]}}]}
    >>> add_preference_figures(stats, recorded)
    >>> stats["cycles"][0]["dpo"], "dpo" in stats["cycles"][1]
    ({'margin': 0.4, 'accuracy': 1.0, 'margins': [0.0, 0.4]}, False)
    """
    by_cycle = {entry["cycle"]: entry for entry in (recorded or {}).get("cycles", [])}
    for entry in stats["cycles"]:
        recorded_cycle = by_cycle.get(entry["cycle"], {})
        if "pairs" not in recorded_cycle:
            continue
        entry["preference_pairs"] = dict(recorded_cycle["pairs"])
        trained = recorded_cycle.get("train", {})
        if trained.get("objective") == "dpo":
            entry["dpo"] = {
                "margin": trained.get("dpo_margin"),
                "accuracy": trained.get("dpo_accuracy"),
                "margins": list(trained.get("dpo_margins") or []),
            }


def preference_rows(stats: Mapping[str, Any]) -> list[list[str]]:
    """The report's table of pairs and DPO figures: one row per cycle that made pairs.

    >>> preference_rows({"cycles": [{"label": "cycle 1", "preference_pairs": {"pairs": 5,
    ...     "pairs_chosen_rationalized": 2}, "dpo": {"margin": 0.4, "accuracy": 1.0}}]})
    [['cycle 1', '5', '2', '0.400', '100%']]
    """
    rows = []
    for entry in stats["cycles"]:
        if "preference_pairs" not in entry:
            continue
        pairs, dpo = entry["preference_pairs"], entry.get("dpo") or {}
        margin, accuracy = dpo.get("margin"), dpo.get("accuracy")
        rows.append(
            [
                str(entry.get("label", entry.get("cycle"))),
                str(pairs.get("pairs", 0)),
                str(pairs.get("pairs_chosen_rationalized", 0)),
                "-" if margin is None else f"{margin:.3f}",
                "-" if accuracy is None else f"{100 * accuracy:.0f}%",
            ]
        )
    return rows
