"""The evaluation protocol: how a model's accuracy is measured, by the cycle's held-out step
(``cycle_k/eval.json``) and by the project's lmms-eval tasks (``llava-star eval``) alike.

One protocol, so the two numbers called "accuracy" are the same measurement (on the same
samples they agree; docs/evaluate.md):

- the prompt is :func:`evaluation_prompt`, the generate stage's direct prompt (the
  question and the step-by-step request: the answers the verifier reads are reasoning
  chains, and the same prompt makes held-out accuracy comparable with the direct kept
  fraction of training generation);
- decoding is greedy, one answer, no rationalization, no grounding check (:data:`EVALUATION_SETTINGS`);
- the token budget is ``GenerationOptions.max_new_tokens`` (512 unless a config says
  otherwise; the cycle passes its ``generate.max_new_tokens`` to both paths);
- the verifier scores the answer against the sample's labels.

lmms-eval's built-in tasks (TempCompass) keep their own prompts: they are their benchmark's.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from llava_star.generation.options import GenerationOptions
from llava_star.generation.prompts import direct_prompt
from llava_star.records import Generation, jsonl_lines, kept_counts

# what evaluation sets over any generation options: greedy, direct answers only
EVALUATION_SETTINGS: Mapping[str, Any] = MappingProxyType(
    {"temperature": 0.0, "num_answers": 1, "rationalize": False, "grounding_check": "none"}
)


def evaluation_prompt(question: str) -> str:
    """The prompt a model is scored on: the generate stage's direct prompt.

    >>> evaluation_prompt("What happens?") == direct_prompt("What happens?")
    True
    """
    return direct_prompt(question)


def protocol_record(options: GenerationOptions) -> dict[str, Any]:
    """What a result file records about how its answers were generated.

    >>> protocol_record(GenerationOptions())
    {'prompt': 'direct', 'max_new_tokens': 512, 'temperature': 0.0, 'num_frames': 8}
    """
    return {
        "prompt": "direct",
        "max_new_tokens": options.max_new_tokens,
        "temperature": options.temperature,
        "num_frames": options.num_frames,
    }


def random_subset(items: Sequence[Any], size: int, seed: int) -> list[Any]:
    """``size`` of ``items`` drawn without replacement by a generator seeded with ``seed``,
    in their original order (all of them when there are no more).

    >>> random_subset("abcdefgh", 3, seed=0), random_subset("abcdefgh", 3, seed=0) == random_subset("abcdefgh", 3, seed=0)
    (['d', 'g', 'h'], True)
    >>> random_subset("ab", 5, seed=0)
    ['a', 'b']
    """
    if size >= len(items):
        return list(items)
    return [items[index] for index in sorted(random.Random(seed).sample(range(len(items)), size))]


def random_subset_of_lines(path: str | os.PathLike[str], size: int, seed: int) -> list[bytes]:
    """``random_subset`` of a JSONL file's non-blank lines, holding only the lines chosen:
    one pass counts them, a second keeps the drawn ones (the same lines, in file order)."""
    count = sum(1 for _ in jsonl_lines(path))
    if size >= count:
        return [raw for _, raw in jsonl_lines(path)]
    wanted = set(random.Random(seed).sample(range(count), size))
    return [raw for position, (_, raw) in enumerate(jsonl_lines(path)) if position in wanted]


def held_out_accuracy(generations: Iterable[Generation]) -> dict[str, Any]:
    """Direct answers that pass, over the held-out samples answered (rationalization off).

    >>> held_out_accuracy([])
    {'samples': 0, 'passed': 0, 'accuracy': 0.0}
    """
    counts = kept_counts(generations)
    return {"samples": counts["samples"], "passed": counts["kept_direct"], "accuracy": counts["kept_direct_fraction"]}
