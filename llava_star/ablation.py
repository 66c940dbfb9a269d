"""What each part of Video-STaR buys, measured on the synthetic world (``llava-star demo --ablation``).

The arms run on the same data, warm start, seeds and training budget; only what each
cycle trains on differs:

- ``video_star``: verified answers, failures retried with the label as a hint (the method);
- ``no_rationalization``: verified direct answers only (STaR without the hint);
- ``no_verifier``: every direct answer, right or wrong (self-training without a filter);
- ``gold``: every question answered by the clip's true caption ("A red circle moves left."),
  the answer a perfect model gives in the words the warm model speaks: the supervised
  baseline; every cycle would train the same model from the same data, so it trains once;
- ``warm_start``: the starting model, untrained.

Besides held-out accuracy, each arm's training data is scored for **false claims**: a
kept answer that passes its question but states a wrong value for another attribute the
clip has (the synthetic world knows every clip's colour, shape and motion; no real dataset
does). A label-containment verifier cannot see those; the rate says how often they are
trained on.
"""

from __future__ import annotations

import html
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_star.datasets.captions import caption
from llava_star.datasets.synthetic import false_claims
from llava_star.llava_json import video_turns
from llava_star.records import Generation, Sample


@dataclass(frozen=True)
class Arm:
    name: str
    title: str
    rationalize: bool = True
    verified_only: bool = True


ARMS = (
    Arm("video_star", "Video-STaR (verify + rationalize)"),
    Arm("no_rationalization", "no rationalization", rationalize=False),
    Arm("no_verifier", "no verifier (train on every answer)", rationalize=False, verified_only=False),
    Arm("gold", "gold labels (supervised)"),
    Arm("warm_start", "warm start alone"),
)


def false_claim_rate(records: Sequence[Mapping[str, Any]], truth: Mapping[str, Mapping[str, str]]) -> float | None:
    """The fraction of training records (LLaVA conversations) whose answer states a wrong
    value for an attribute it was not asked about; None without records."""
    if not records:
        return None
    wrong = sum(bool(false_claims(answer_of(record), record["task"], truth[record["video"]])) for record in records)
    return wrong / len(records)


def accuracy_by_task(generations: Iterable[Generation]) -> dict[str, float]:
    """Held-out accuracy per task: the fraction of direct answers that pass (as the cycle counts it).

    >>> accuracy_by_task([])
    {}
    """
    answered: Counter[str] = Counter()
    passed: Counter[str] = Counter()
    for generation in generations:
        answered[generation.sample.task] += 1
        passed[generation.sample.task] += generation.passed and not generation.rationalized
    return {task: passed[task] / answered[task] for task in sorted(answered)}


def answer_of(record: Mapping[str, Any]) -> str:
    """The model's turn of a one-question LLaVA record."""
    return next(turn["value"] for turn in record["conversations"] if turn["from"] == "gpt")


def spread(values: Sequence[float | None]) -> dict[str, float] | None:
    """Mean, min and max over seeds, in percent; None when no seed has a value.

    >>> spread([0.5, 0.75, None])
    {'mean': 62.5, 'min': 50.0, 'max': 75.0}
    """
    present = [100 * value for value in values if value is not None]
    if not present:
        return None
    return {"mean": statistics.mean(present), "min": min(present), "max": max(present)}


def summarize(runs: Mapping[str, Sequence[Mapping[str, Any]]], cycles: int) -> dict[str, dict[str, Any]]:
    """Per arm, over seeds: accuracy at the start and after each cycle, the mean kept
    fraction and the false-claim rate of the training data (pooled over cycles)."""
    table = {}
    for arm, seeds in runs.items():
        table[arm] = {
            "accuracy": [spread([seed["accuracy"][step] for seed in seeds]) for step in range(cycles + 1)],
            "by_task": {
                task: spread([seed["by_task"].get(task) for seed in seeds])
                for task in sorted({task for seed in seeds for task in seed["by_task"]})
            },
            "kept": spread([seed["kept"] for seed in seeds]),
            "false_claims": spread([seed["false_claims"] for seed in seeds]),
            "seeds": len(seeds),
        }
    return table


def _cell(value: dict[str, float] | None) -> str:
    return "-" if value is None else f"{value['mean']:.1f} ({value['min']:.0f}-{value['max']:.0f})"


def format_table(table: Mapping[str, Mapping[str, Any]], cycles: int) -> str:
    """One row per arm: held-out accuracy (%) at the start and after each cycle, kept
    fraction and false-claim rate of the training data, each as mean (min-max) over seeds."""
    titles = {arm.name: arm.title for arm in ARMS}
    tasks = sorted({task for row in table.values() for task in row["by_task"]})
    columns = ["start", *(f"cycle {cycle}" for cycle in range(1, cycles + 1))]
    columns += [f"{task[:10]} end" for task in tasks] + ["kept", "false claims"]
    width = 17
    lines = [f"{'arm':<38}" + "".join(f"{column:>{width}}" for column in columns)]
    for arm, row in table.items():
        cells = [*row["accuracy"], *(row["by_task"].get(task) for task in tasks), row["kept"], row["false_claims"]]
        lines.append(f"{titles.get(arm, arm):<38}" + "".join(f"{_cell(cell):>{width}}" for cell in cells))
    return "\n".join(lines)


def plot(table: Mapping[str, Mapping[str, Any]], cycles: int, path: Path) -> None:
    """Held-out accuracy by cycle per arm: the mean line and the min-max band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    titles = {arm.name: arm.title for arm in ARMS}
    figure, axes = pyplot.subplots(figsize=(7, 4))
    steps = list(range(cycles + 1))
    for arm, row in table.items():
        points = [(step, value) for step, value in zip(steps, row["accuracy"], strict=True) if value is not None]
        xs = [step for step, _ in points]
        axes.plot(xs, [value["mean"] for _, value in points], marker="o", label=titles.get(arm, arm))
        axes.fill_between(xs, [value["min"] for _, value in points], [value["max"] for _, value in points], alpha=0.15)
    axes.set_xticks(steps, ["start", *(str(step) for step in steps[1:])])
    axes.set_xlabel("cycle")
    axes.set_ylabel("held-out accuracy (%)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def gold_records(samples: list[Sample], truth: Mapping[str, Mapping[str, str]]) -> list[dict[str, Any]]:
    """The supervised baseline's training data: each question answered by its clip's true
    caption (``truth``: task -> value by video, :func:`~llava_star.datasets.synthetic.truth_by_video`).

    Not the asked label alone ("A red shape moves."): measured, a caption-warmed tiny model
    trained on those answers one template for both questions (colour 3% held-out, docs/cycle.md).
    """
    return [
        {
            "id": sample.id,
            "video": sample.video,
            "conversations": video_turns(sample.question, caption(truth[sample.video])),
            "source": sample.source,
            "task": sample.task,
        }
        for sample in samples
    ]


def ablation_page(table: str, tasks: Sequence[str], seeds: range) -> str:
    """A static page with the table and the plot (no server, no network)."""
    return (
        "<!doctype html><meta charset='utf-8'><title>llava-star ablation</title>"
        f"<h1>What each part of Video-STaR buys</h1><p>Tasks {html.escape(', '.join(tasks))}; "
        f"seeds {seeds.start}-{seeds.stop - 1}; held-out accuracy and rates in %, mean (min-max) over seeds.</p>"
        f"<pre>{html.escape(table)}</pre><img src='ablation.png' alt='held-out accuracy by cycle per arm'>"
    )
