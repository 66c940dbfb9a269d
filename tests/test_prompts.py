"""The paper's prompts, snapshotted: a change here changes what every model is trained on."""

import pytest

from llava_star.generation.prompts import direct_prompt, hint_prompt, render_label
from llava_star.label_types import format_number
from llava_star.records import Label


def test_direct_prompt_snapshot():
    assert direct_prompt("  What is the person doing?  ") == (
        "Question: What is the person doing?\nCan you explain step-by-step how one can arrive at this conclusion?"
    )


def test_hint_prompt_snapshot():
    labels = [Label("number", 85.5, name="score"), Label("number", 3.2, name="difficulty")]
    assert hint_prompt("How well was this dive executed?", labels) == (
        "Question: How well was this dive executed?\n"
        "Answer: score 85.5; difficulty 3.2.\n"
        "Can you explain step-by-step how one can arrive at this conclusion?"
    )


def test_hint_ends_with_one_full_stop_even_when_the_label_has_one():
    prompt = hint_prompt("Describe it.", [Label("text", "A man rides a bike.")])
    assert "Answer: A man rides a bike.\n" in prompt


@pytest.mark.parametrize(
    "label, text",
    [
        (Label("class", "playing_guitar"), "playing guitar"),
        (Label("class", "abseiling", name="action"), "abseiling"),
        (Label("number", 3.0), "3"),
        (Label("number", 85.25, name="score"), "score 85.25"),
        (Label("number", 2, name="dive_count"), "dive count 2"),
        (Label("timestamp", 4.3), "at 4.3 seconds"),
        (Label("time_range", [0.0, 12.5]), "from 0 seconds to 12.5 seconds"),
        (Label("box", [0.1, 0.2, 0.555, 0.8]), "[0.10, 0.20, 0.56, 0.80]"),
        (Label("yes_no", True), "yes"),
        (Label("yes_no", False), "no"),
        (Label("choice", "C", options={"A": "left", "B": "right", "C": "up"}), "(C) up"),
        (Label("sequence", ["take_off", "twist", "entry"]), "take off, then twist, then entry"),
        (Label("text", "A red circle moves to the left."), "A red circle moves to the left."),
    ],
)
def test_render_label(label, text):
    assert render_label(label) == text


def test_format_number_never_prints_negative_zero():
    assert format_number(-0.0001) == "0"


@pytest.mark.parametrize(
    "answer", ["The final score: 85.78.", "action difficulty: 3.2. final score: 85.78."]
)  # the official code's label_dict_to_string wording, repeated in a rationalized answer
def test_the_verifier_reads_the_official_codes_hint_wording(answer):
    from llava_star.verify import verify

    assert verify(answer, [Label("number", 85.78, name="score", rel_tolerance=0.05)], rationalized=False).passed
