"""Aggregations of per-answer results into the numbers the evaluation reports.

lmms-eval calls ``process_results`` once per answer and then one aggregation per metric
over the list of those per-answer items. The items here are plain JSON values so that
``--log_samples`` can write them: a float (1.0 / 0.0), ``None`` when the answer says
nothing about that metric, or a ``{"prediction", "gold"}`` pair for the rank and
distance metrics of action quality assessment (AQA).

Unparsed predictions (``"prediction": None``) are left out of the Spearman and relative
L2 figures and counted by the parse rate instead, as AQA papers assume a number
per video: reading both together tells how much of the set the correlation covers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def mean_of_known(items: Sequence[float | bool | None]) -> float:
    """Mean over the items that are not ``None`` (NaN when there are none).

    >>> mean_of_known([1.0, 0.0, None, 1.0])
    0.6666666666666666
    """
    known = [float(item) for item in items if item is not None]
    return sum(known) / len(known) if known else math.nan


def _parsed_pairs(items: Sequence[Mapping[str, Any] | None]) -> list[tuple[float, float]]:
    pairs = []
    for item in items:
        if item is None or item.get("prediction") is None or item.get("gold") is None:
            continue
        pairs.append((float(item["prediction"]), float(item["gold"])))
    return pairs


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks starting at 1, ties sharing the mean of the ranks they span.

    >>> average_ranks([30.0, 10.0, 20.0, 10.0])
    [4.0, 1.5, 3.0, 1.5]
    """
    order = sorted(range(len(values)), key=lambda index: values[index])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        shared = (start + end) / 2 + 1
        for position in range(start, end + 1):
            ranks[order[position]] = shared
        start = end + 1
    return ranks


def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    spread_x = math.sqrt(sum((x - mean_x) ** 2 for x in xs))
    spread_y = math.sqrt(sum((y - mean_y) ** 2 for y in ys))
    if spread_x == 0 or spread_y == 0:
        return math.nan
    return covariance / (spread_x * spread_y)


def spearman(items: Sequence[Mapping[str, Any] | None]) -> float:
    """Spearman rank correlation of predictions with gold values (ties averaged).

    NaN with fewer than two parsed pairs or when either side is constant, where the
    correlation is undefined.

    >>> round(spearman([{"prediction": 1, "gold": 10}, {"prediction": 3, "gold": 20}, {"prediction": 2, "gold": 25}]), 3)
    0.5
    """
    pairs = _parsed_pairs(items)
    if len(pairs) < 2:
        return math.nan
    predictions, golds = zip(*pairs)
    return _pearson(average_ranks(predictions), average_ranks(golds))


def relative_l2(items: Sequence[Mapping[str, Any] | None]) -> float:
    """Relative L2 distance of FineDiving / CoRe: mean of ``(|pred - gold| / (max - min))^2``.

    ``max`` and ``min`` are the extremes of the gold values of the evaluated set, so the
    figure does not depend on the score scale. Lower is better; papers print it x100.
    NaN without parsed pairs or when all gold values are equal.

    >>> round(relative_l2([{"prediction": 60, "gold": 50}, {"prediction": 100, "gold": 100}]), 6)
    0.02
    """
    pairs = _parsed_pairs(items)
    if not pairs:
        return math.nan
    golds = [gold for _, gold in pairs]
    spread = max(golds) - min(golds)
    if spread == 0:
        return math.nan
    return sum((abs(prediction - gold) / spread) ** 2 for prediction, gold in pairs) / len(pairs)


def parse_rate(items: Sequence[Mapping[str, Any] | None]) -> float:
    """Fraction of answers from which a prediction could be read (``None`` items: no gold).

    >>> parse_rate([{"prediction": 3.5, "gold": 3.0}, {"prediction": None, "gold": 2.0}, None])
    0.5
    """
    scored = [item for item in items if item is not None]
    if not scored:
        return math.nan
    return sum(1 for item in scored if item.get("prediction") is not None) / len(scored)
