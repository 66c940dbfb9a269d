"""LLaVA-NeXT's YAML data lists: several JSON files, each sampled by a strategy.

LLaVA-NeXT's scripts pass ``--data_path exp.yaml`` with::

    datasets:
      - json_path: /data/llava_next_fit_mix.json
        sampling_strategy: "first:50%"     # all | first:N | end:N | random:N, N a count or a percentage
      - json_path: /data/sharegptvideo_qa_255k.jsonl

read here as LLaVA-NeXT's ``LazySupervisedDataset`` reads it (a percentage rounds up, as
its ``math.ceil``), with two differences: a relative ``json_path`` is relative to the YAML
file's folder (not to the directory the job happens to start in), and ``random:N`` draws
with the run's seed, so every rank and every rerun trains on the same records.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llava_star.config import read_yaml_mapping
from llava_star.errors import ConfigError, RecordError
from llava_star.training_formats import read_training_json

STRATEGIES = ("all", "first", "end", "random")


def is_data_list(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a YAML data list rather than a JSON file.

    >>> is_data_list("exp.yaml"), is_data_list("train.json")
    (True, False)
    """
    return str(path).lower().endswith((".yaml", ".yml"))


def parse_strategy(text: str, total: int) -> tuple[str, int]:
    """``first:10%`` of ``total`` records -> ``("first", count)``.

    >>> parse_strategy("first:10%", 738590), parse_strategy("random:999", 5000), parse_strategy("all", 7)
    (('first', 73859), ('random', 999), ('all', 7))
    """
    name, _, number = str(text).partition(":")
    if name not in STRATEGIES:
        raise ValueError(f"expected one of {', '.join(STRATEGIES)} (e.g. first:10%), got {text!r}")
    if name == "all" or not number:
        if name != "all":
            raise ValueError(f"{name!r} needs a count or percentage, e.g. {name}:1000 or {name}:10%")
        return name, total
    try:
        count = math.ceil(float(number[:-1]) * total / 100) if number.endswith("%") else int(number)
    except ValueError:
        raise ValueError(f"{number!r} is neither a count nor a percentage") from None
    if count < 0:
        raise ValueError(f"{number!r}: expected a count >= 0")
    return name, min(count, total)


def sample_records(records: list[Any], strategy: str, seed: int) -> list[Any]:
    """The records a strategy keeps, in LLaVA-NeXT's order (``random`` shuffles, then takes N)."""
    name, count = parse_strategy(strategy, len(records))
    if name == "first":
        return records[:count]
    if name == "end":
        return records[len(records) - count :]
    if name == "random":
        shuffled = list(records)
        random.Random(seed).shuffle(shuffled)
        return shuffled[:count]
    return records


def read_records_file(path: Path) -> list[dict[str, Any]]:
    """A ``.json`` list or a ``.jsonl`` file of records in any training format (LLaVA-NeXT's
    lists mostly hold LLaVA-NeXT records, ``<image>`` for a video), in the project's form."""

    return read_training_json(str(path))[0]


def read_data_list(path: str | os.PathLike[str], seed: int = 0) -> list[dict[str, Any]]:
    """Every record a YAML data list selects, file after file; errors name the entry."""

    path = Path(path)
    datasets = read_yaml_mapping(path).get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise RecordError(f"{path}: datasets: expected a list of {{json_path, sampling_strategy}} entries")
    records: list[dict[str, Any]] = []
    for index, entry in enumerate(datasets):
        where = f"{path}: datasets[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("json_path"), str):
            raise RecordError(f"{where}: expected a mapping with a json_path")
        unknown = sorted(set(entry) - {"json_path", "sampling_strategy"})
        if unknown:
            raise RecordError(f"{where}: unknown key {unknown[0]!r} (known: json_path, sampling_strategy)")
        json_path = path.parent / entry["json_path"]
        if json_path.suffix not in (".json", ".jsonl"):
            raise RecordError(f"{where}.json_path: expected a .json or .jsonl file, got {entry['json_path']!r}")
        selected = read_records_file(json_path)
        try:
            records += sample_records(selected, entry.get("sampling_strategy", "all"), seed)
        except ValueError as error:
            raise RecordError(f"{where}.sampling_strategy: {error}") from None
    return records


def load_records(paths: Sequence[str], seed: int = 0) -> list[dict[str, Any]]:
    """The records of training-data files (any format export writes, detected per file:
    docs/export.md) and LLaVA-NeXT YAML data lists, in order, in the project's form."""
    records: list[dict[str, Any]] = []
    for path in paths:
        records.extend(read_data_list(path, seed) if is_data_list(path) else read_records_file(Path(path)))
    if not records:
        raise ConfigError(f"data: no records in {', '.join(paths)}")
    return records
