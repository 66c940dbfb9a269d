"""The label-type table is complete: every type validates, renders, is read by the generic
adapter and has a verifier rule, and the hint's wording of a label verifies as that label
(a rationalized answer that repeats the hint must pass)."""

import pytest

from llava_star.errors import LabelError
from llava_star.generation.prompts import render_label
from llava_star.label_types import LABEL_TYPES, label_type
from llava_star.records import Label
from llava_star.verify import verify
from llava_star.verify.rules import RULES

EXAMPLES = {
    "class": Label("class", "playing_guitar"),
    "number": Label("number", 85.5, name="score"),
    "timestamp": Label("timestamp", 4.3),
    "time_range": Label("time_range", [1.5, 12.0]),
    "box": Label("box", [0.1, 0.2, 0.5, 0.8]),
    "yes_no": Label("yes_no", True),
    "choice": Label("choice", "B", options={"A": "a cat", "B": "a dog"}),
    "sequence": Label("sequence", ["take_off", "twist", "entry"]),
    "text": Label("text", "A red circle moves slowly to the left side."),
}


def test_every_type_has_an_example_and_a_verifier_rule() -> None:
    assert set(EXAMPLES) == set(LABEL_TYPES) == set(RULES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_rendered_label_verifies_as_itself(name: str) -> None:
    label = EXAMPLES[name]
    answer = f"Looking at the video step by step, the answer is {render_label(label)}."
    verdict = verify(answer, [label])
    assert verdict.passed, verdict.reason


def test_an_unknown_type_names_the_known_ones() -> None:
    with pytest.raises(LabelError, match="unknown label type 'colour'; expected one of class, number"):
        label_type("colour")
    with pytest.raises(LabelError, match="unknown label type 'colour'"):
        Label("colour", "red")


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("class", "  ", "non-empty string"),
        ("number", float("inf"), "finite number"),
        ("time_range", [3.0, 1.0], "0 <= start <= end"),
        ("box", [0.1, 0.2, 1.5, 0.8], "normalized to"),
        ("yes_no", "yes", "true or false"),
        ("sequence", [], "non-empty list of strings"),
    ],
)
def test_each_type_refuses_a_bad_value_saying_why(name: str, value: object, message: str) -> None:
    with pytest.raises(LabelError, match=message):
        Label(name, value)
