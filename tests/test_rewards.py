"""llava_star.rewards: the verifier as a TRL reward function and a verl compute_score.

Each case is (completion, labels, reward, why); the hacks a substring reward pays out for
(empty answers, refusals, negation, hedging, listing every class, echoing the options)
must score 0.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, NamedTuple

import pytest

from llava_star.errors import LabelError
from llava_star.rewards import compute_score, label_reward, make_label_reward, score

ACTIONS = ["swimming", "diving", "surfing", "running", "playing guitar", "juggling balls"]
GUITAR = [{"type": "class", "value": "playing guitar", "vocabulary": ACTIONS}]
CHOICE = [{"type": "choice", "value": "B", "options": {"A": "a red ball", "B": "a blue cube", "C": "a green cone"}}]
TWO = [
    {"type": "class", "value": "swimming", "vocabulary": ACTIONS},
    {"type": "number", "value": 3, "name": "count"},
]


class Case(NamedTuple):
    completion: Any
    labels: list[dict[str, Any]]
    reward: float
    why: str
    options: tuple[tuple[str, Any], ...] = ()


CASES = [
    Case("The man strums the strings: he is playing guitar.", GUITAR, 1.0, "asserted"),
    Case("He is not playing guitar; he is singing.", GUITAR, 0.0, "negated"),
    Case("It could be playing guitar or juggling balls.", GUITAR, 0.0, "hedged between two classes"),
    Case(
        "The action is swimming, diving, surfing, running, playing guitar, juggling balls.",
        GUITAR,
        0.0,
        "listing every class",
    ),
    Case("", GUITAR, 0.0, "empty answer"),
    Case("   ", GUITAR, 0.0, "blank answer"),
    Case("I'm sorry, I cannot determine what the person is doing in this video.", GUITAR, 0.0, "refusal"),
    Case("The answer is (B).", CHOICE, 1.0, "the option letter"),
    Case("The answer is A, B or C.", CHOICE, 0.0, "echoing every option"),
    Case("(A) a red ball (B) a blue cube (C) a green cone", CHOICE, 0.0, "echoing the options as given"),
    Case("Someone is swimming, and the count is 3.", TWO, 1.0, "both labels"),
    Case("Someone is swimming, and the count is 5.", TWO, 0.0, "all or nothing by default"),
    Case("Someone is swimming, and the count is 5.", TWO, 0.5, "partial credit", (("partial_credit", True),)),
    Case("I cannot tell.", TWO, 0.0, "partial credit: a refusal still earns 0", (("partial_credit", True),)),
    Case(
        "<think>He holds a guitar.</think><answer>He is playing guitar.</answer>",
        GUITAR,
        1.0,
        "format term: well formed and right",
        (("format_weight", 0.2),),
    ),
    Case("He is playing guitar.", GUITAR, 0.8, "format term: right, not in the format", (("format_weight", 0.2),)),
    Case(
        "<think>Strings.</think><answer>He is not playing guitar.</answer>",
        GUITAR,
        0.2,
        "format term: well formed, wrong",
        (("format_weight", 0.2),),
    ),
    Case([{"role": "assistant", "content": "He is playing guitar."}], GUITAR, 1.0, "conversational completion"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.why for case in CASES])
def test_reward_cases(case: Case) -> None:
    options = dict(case.options)
    reward = make_label_reward(**options) if options else label_reward
    assert reward([case.completion], labels=[case.labels]) == [pytest.approx(case.reward)]
    if isinstance(case.completion, str):
        assert compute_score("video_star", case.completion, case.labels, {}, **options) == pytest.approx(case.reward)


def test_trl_batch_with_other_columns_and_unjudgeable_rows() -> None:
    """TRL's _calculate_rewards passes prompts, completions, completion_ids, every dataset column
    but prompt/completion/completion_ids, and trainer_state; rows without labels get None."""
    rewards = label_reward(
        prompts=["q1", "q2", "q3"],
        completions=["He is playing guitar.", "anything", "He is running."],
        completion_ids=[[1], [2], [3]],
        labels=[GUITAR, None, json.dumps(GUITAR)],
        trainer_state=None,
        log_extra=lambda *args, **kwargs: None,  # newer TRL passes logging hooks too
        log_metric=lambda *args, **kwargs: None,
        task=["a", "b", "a"],
    )
    assert rewards == [1.0, None, 0.0]
    assert label_reward(completions=["x", "y"]) == [None, None]  # no labels column at all
    assert label_reward.__name__ == "label_reward"


def test_verl_signature_matches_the_reward_manager() -> None:
    """verl's NaiveRewardManager calls compute_score(data_source=, solution_str=, ground_truth=, extra_info=)
    by keyword, and custom_reward_function.reward_kwargs reach it as more keywords."""
    parameters = list(inspect.signature(compute_score).parameters)
    assert parameters[:4] == ["data_source", "solution_str", "ground_truth", "extra_info"]
    assert (
        compute_score(
            data_source="kinetics700_qa",
            solution_str="He is playing guitar.",
            ground_truth=json.dumps(GUITAR[0]),
            extra_info={"index": 3, "split": "train"},
        )
        == 1.0
    )
    with pytest.raises(LabelError, match="ground_truth"):
        compute_score("kinetics700_qa", "text", "[]")


def test_bad_options_and_labels_name_the_field() -> None:
    with pytest.raises(LabelError, match="format_weight"):
        score("x", GUITAR, format_weight=2.0)
    with pytest.raises(LabelError, match=r"labels\[0\]"):
        label_reward(["x"], labels=[[{"type": "colour", "value": "red"}]])
    with pytest.raises(LabelError, match="rows"):
        label_reward(["x", "y"], labels=[GUITAR])
