"""Counts over a stream of generations, kept on the way: what the report and a run's summary say.

A run of millions of answers is summarized in one pass with memory that does not grow
with it: counters per group, a histogram of answer lengths (a median needs only that),
and, for the report's gallery, a fixed-size random sample per verdict
(:class:`GallerySample`, deterministic for a seed). The figures are those of the
in-memory functions they replace (``records.kept_counts``, ``records.grounding_counts``,
the report's per-group summary), number for number.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from llava_star.label_types import label_type_names
from llava_star.records import Generation
from llava_star.verify.verdict import failure_kind

KEPT_FRACTIONS = ("kept", "kept_direct", "kept_rationalized")


def failure_reason(generation: Generation) -> str:
    """The kind of the first failing check, for counting failures by reason."""
    for check in generation.checks:
        if not check.get("passed", False):
            return failure_kind(check)
    return "failed without a failing check"


def _fraction(done: int, flagged: int) -> float | None:
    return round((done - flagged) / done, 4) if done else None


class GroupTally:
    """The counts of one group of generations (a set, a source, a label type, a task).

    >>> GroupTally().summary()["answer_words_median"]
    0.0
    """

    def __init__(self) -> None:
        self.counts = dict.fromkeys(("samples", "kept", "kept_direct", "kept_rationalized", "rationalized"), 0)
        self.checked: Counter[str] = Counter()  # grounding-checked kept answers per task
        self.ungrounded: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.answer_words: Counter[int] = Counter()  # answer length -> how many answers

    def add(self, generation: Generation) -> None:
        counts = self.counts
        counts["samples"] += 1
        counts["rationalized"] += generation.rationalized
        if generation.passed:
            counts["kept"] += 1
            counts["kept_rationalized" if generation.rationalized else "kept_direct"] += 1
        else:
            self.failures[failure_reason(generation)] += 1
        if generation.grounded is not None:
            self.checked[generation.sample.task] += 1
            self.ungrounded[generation.sample.task] += generation.grounded is False
        self.answer_words[len(generation.answer.split())] += 1

    def kept_counts(self) -> dict[str, int | float]:
        """As ``records.kept_counts`` of the same generations."""
        total = self.counts["samples"]
        fractions = {f"{key}_fraction": self.counts[key] / total if total else 0.0 for key in KEPT_FRACTIONS}
        return {**self.counts, **fractions}

    def grounding_counts(self) -> dict[str, Any]:
        """As ``records.grounding_counts`` of the same generations."""
        by_task = {
            task: {
                "checked": self.checked[task],
                "ungrounded": self.ungrounded[task],
                "grounded_fraction": _fraction(self.checked[task], self.ungrounded[task]),
            }
            for task in sorted(self.checked)
        }
        total, flagged = sum(self.checked.values()), sum(self.ungrounded.values())
        return {
            "grounding_checked": total,
            "ungrounded": flagged,
            "grounded_fraction": _fraction(total, flagged),
            "grounded_by_task": by_task,
        }

    def summary(self) -> dict[str, Any]:
        """The report's counts of the group (``stats.json``)."""
        grounding = self.grounding_counts()
        return {
            **self.kept_counts(),
            **{key: grounding[key] for key in ("grounding_checked", "ungrounded", "grounded_fraction")},
            "failures_by_reason": dict(self.failures.most_common()),
            "answer_words_mean": self._mean_words(),
            "answer_words_median": self._median_words(),
        }

    def _mean_words(self) -> float:
        total = self.counts["samples"]
        return float(sum(words * count for words, count in self.answer_words.items())) / total if total else 0.0

    def _median_words(self) -> float:
        """``statistics.median`` of the lengths, from their histogram (an int when the count is odd)."""
        total = self.counts["samples"]
        if not total:
            return 0.0
        wanted = [total // 2] if total % 2 else [total // 2 - 1, total // 2]
        found, seen = [], 0
        for words in sorted(self.answer_words):
            seen += self.answer_words[words]
            while wanted and wanted[0] < seen:
                found.append(words)
                wanted.pop(0)
        return found[0] if len(found) == 1 else (found[0] + found[1]) / 2


_GROUPINGS: dict[str, Callable[[Generation], Iterable[str]]] = {
    "by_source": lambda g: [g.sample.source],
    "by_label_type": lambda g: label_type_names(g.sample.labels),
    "by_task": lambda g: [g.sample.task],
}


class SetTally:
    """A generation set's counts: overall, per source, per label type and per task."""

    def __init__(self) -> None:
        self.overall = GroupTally()
        self.groups: dict[str, defaultdict[str, GroupTally]] = {name: defaultdict(GroupTally) for name in _GROUPINGS}

    def add(self, generation: Generation) -> None:
        self.overall.add(generation)
        for name, keys_of in _GROUPINGS.items():
            for key in keys_of(generation):
                self.groups[name][key].add(generation)

    def statistics(self, unreadable_videos: int, *, held_out: bool = False) -> dict[str, Any]:
        """The report's ``set_statistics``: a held-out set adds ``accuracy`` (direct answers that pass)."""
        stats: dict[str, Any] = {"unreadable_videos": unreadable_videos, "overall": self.overall.summary()}
        for name, groups in self.groups.items():
            stats[name] = {key: groups[key].summary() for key in sorted(groups)}
        if held_out:
            for group in [stats["overall"], *(g for name in self.groups for g in stats[name].values())]:
                group["accuracy"] = group["kept_direct_fraction"]
        return stats


class GallerySample:
    """Up to ``size`` generations per verdict, drawn uniformly from a stream (reservoir sampling).

    Which ones depends only on the stream and ``rng``'s state: the same run and seed give
    the same gallery. :meth:`picked` then balances the verdicts as the report shows them.
    """

    def __init__(self, size: int, rng: random.Random, status_of: Callable[[Generation], str]) -> None:
        self.size, self.rng, self.status_of = size, rng, status_of
        self.buckets: dict[str, list[Generation]] = {"passed": [], "rationalized": [], "failed": [], "ungrounded": []}
        self.seen: Counter[str] = Counter()

    def add(self, generation: Generation) -> None:
        status = self.status_of(generation)
        bucket, seen = self.buckets[status], self.seen[status]
        self.seen[status] += 1
        if len(bucket) < self.size:
            bucket.append(generation)
        elif self.size:
            index = self.rng.randrange(seen + 1)
            if index < self.size:
                bucket[index] = generation

    def picked(self) -> list[Generation]:
        """Up to ``size`` of them, taken from each verdict in turn, in id order."""
        buckets = {status: list(bucket) for status, bucket in self.buckets.items()}
        for bucket in buckets.values():
            self.rng.shuffle(bucket)
        picked: list[Generation] = []
        while len(picked) < self.size and any(buckets.values()):
            for bucket in buckets.values():
                if bucket and len(picked) < self.size:
                    picked.append(bucket.pop())
        return sorted(picked, key=lambda g: g.id)
