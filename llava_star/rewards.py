"""The verifier as a reward: a TRL ``GRPOTrainer`` reward function and a verl ``compute_score``.

RL users score completions against gold labels the way the generate stage keeps answers:
a completion earns 1.0 when it asserts every label (DESIGN.md "Verifier semantics"), so
the hacks that pay out under a substring reward earn 0.0 here: an empty answer, a refusal,
a negated label, a hedge between classes, listing every class, echoing all the options.

TRL (``GRPOTrainer(reward_funcs=[label_reward], train_dataset=...)``): each dataset row
carries a ``labels`` column (a list of Label objects, or its JSON text); TRL passes the
dataset's columns as keyword arguments beside ``completions``, which are strings
(standard datasets) or lists of messages (conversational ones)::

    from llava_star.rewards import label_reward
    label_reward(["He is playing guitar."], labels=[[{"type": "class", "value": "playing guitar"}]])
    # [1.0]

verl (``custom_reward_function.path=.../llava_star/rewards.py``, ``name=compute_score``):
the parquet's ``reward_model.ground_truth`` holds the labels (a list, one label, or JSON
text); verl's reward manager calls ``compute_score(data_source=..., solution_str=...,
ground_truth=..., extra_info=...)`` with keywords, and passes
``custom_reward_function.reward_kwargs`` (``partial_credit``, ``format_weight``) through.

Two documented choices, both off by default:

- ``partial_credit``: the fraction of labels passed instead of all-or-nothing (a completion
  that fails the whole-answer guard, e.g. a refusal, still earns 0).
- ``format_weight`` w in [0, 1]: the reward becomes ``(1 - w) * correctness + w * format``,
  where format is 1 when the completion matches ``format_pattern`` (by default
  ``<think>...</think>`` then ``<answer>...</answer>``). With a pattern that has a group
  named ``answer``, only that group is verified.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from llava_star.errors import LabelError
from llava_star.records import Label
from llava_star.verify.core import as_labels, verify
from llava_star.verify.verdict import ANSWER_CHECK

# R1-style: reasoning in <think>, the final answer in <answer>; the answer group is verified
THINK_ANSWER_FORMAT = r"^\s*<think>.+?</think>\s*<answer>(?P<answer>.+?)</answer>\s*$"

RewardFunction = Callable[..., list[float | None]]


def score(
    answer: str,
    labels: Sequence[Label | Mapping[str, Any]],
    *,
    partial_credit: bool = False,
    format_weight: float = 0.0,
    format_pattern: str = THINK_ANSWER_FORMAT,
) -> float:
    """The reward of one answer: 1.0 when it asserts every label, else 0.0 (see the module doc).

    >>> guitar = [{"type": "class", "value": "playing guitar", "vocabulary": ["playing guitar", "singing"]}]
    >>> score("He is playing guitar.", guitar), score("He is not playing guitar.", guitar)
    (1.0, 0.0)
    >>> score("It is playing guitar or singing.", guitar)
    0.0
    >>> score("<think>Strings.</think><answer>playing guitar</answer>", guitar, format_weight=0.2)
    1.0
    """
    if not 0.0 <= format_weight <= 1.0:
        raise LabelError(f"format_weight: must be in [0, 1], got {format_weight}")
    labels = as_labels(labels)
    if not labels:
        raise LabelError("labels: empty; a reward needs at least one gold label")
    formatted = None
    if format_weight > 0.0:
        formatted = re.search(format_pattern, answer, flags=re.DOTALL)
        if formatted is not None and "answer" in formatted.re.groupindex:
            answer = formatted.group("answer")
    verdict = verify(answer, labels)
    if partial_credit:
        guard_passed = all(check.passed for check in verdict.checks if check.type == ANSWER_CHECK)
        label_checks = [check for check in verdict.checks if check.type != ANSWER_CHECK]
        correctness = sum(check.passed for check in label_checks) / len(labels) if guard_passed else 0.0
    else:
        correctness = float(verdict.passed)
    if format_weight == 0.0:
        return correctness
    return (1.0 - format_weight) * correctness + format_weight * float(formatted is not None)


def make_label_reward(
    *, partial_credit: bool = False, format_weight: float = 0.0, format_pattern: str = THINK_ANSWER_FORMAT
) -> RewardFunction:
    """A TRL reward function with these options (its ``__name__`` names it in TRL's logs).

    >>> reward = make_label_reward(partial_credit=True)
    >>> two = [{"type": "class", "value": "swimming"}, {"type": "number", "value": 3, "name": "count"}]
    >>> reward(["Someone is swimming; the count is 5."], labels=[two])
    [0.5]
    """

    def reward(completions: Sequence[Any], labels: Sequence[Any] | None = None, **kwargs: Any) -> list[float | None]:
        if labels is None:  # a dataset without a labels column: this reward cannot judge any row
            return [None] * len(completions)
        if len(labels) != len(completions):
            raise LabelError(f"labels: {len(labels)} rows for {len(completions)} completions")
        rewards: list[float | None] = []
        for completion, row_labels in zip(completions, labels, strict=True):
            row_labels = _labels_of(row_labels)
            if not row_labels:  # a row of another task in a mixed dataset
                rewards.append(None)
                continue
            rewards.append(
                score(
                    completion_text(completion),
                    row_labels,
                    partial_credit=partial_credit,
                    format_weight=format_weight,
                    format_pattern=format_pattern,
                )
            )
        return rewards

    reward.__name__ = "label_reward" + ("_partial" if partial_credit else "") + ("_format" if format_weight else "")
    return reward


label_reward = make_label_reward()


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    *,
    partial_credit: bool = False,
    format_weight: float = 0.0,
    format_pattern: str = THINK_ANSWER_FORMAT,
    **unused: Any,
) -> float:
    """verl's custom reward function: the score of ``solution_str`` against the labels in ``ground_truth``.

    ``data_source`` and ``extra_info`` are accepted as verl passes them and not needed:
    the labels say how to check themselves.

    >>> compute_score("kinetics700_qa", "A man is juggling balls.", '[{"type": "class", "value": "juggling balls"}]')
    1.0
    """
    labels = _labels_of(ground_truth)
    if not labels:
        raise LabelError(f"ground_truth: no labels for {data_source!r}: {ground_truth!r}")
    return score(
        solution_str,
        labels,
        partial_credit=partial_credit,
        format_weight=format_weight,
        format_pattern=format_pattern,
    )


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or the last message of a conversational one.

    >>> completion_text([{"role": "assistant", "content": "Swimming."}])
    'Swimming.'
    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "Diving."}]}])
    'Diving.'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        content = completion[-1].get("content", "")
        if isinstance(content, str):
            return content
        return " ".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    raise LabelError(f"completions: expected a string or a list of messages, got {type(completion).__name__}")


def _labels_of(value: Any) -> list[Any]:
    """Labels as a list: JSON text is parsed, a single label object becomes a list of one."""
    if value is None:
        return []
    if isinstance(value, (bytes, str)):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise LabelError(f"labels: not JSON: {error}") from None
    if isinstance(value, (Mapping, Label)):
        return [value]
    if hasattr(value, "tolist"):  # a numpy array, as datasets / pandas columns hand them over
        value = value.tolist()
    return list(value)
