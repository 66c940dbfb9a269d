import random

import pytest

from llava_star.datasets.questions import (
    format_options,
    make_question,
    question_templates,
    task_slots,
    template_slots,
)

CONTRACT_TASKS = {
    "action_recognition": {},
    "object_recognition": {},
    "colour": {},
    "shape": {},
    "motion_direction": {},
    "counting": {"thing": "red squares"},
    "score": {},
    "difficulty": {},
    "temporal_localization": {"event": "the person opens the door"},
    "timestamp": {"event": "the ball hits the ground"},
    "grounding": {"thing": "blue circle"},
    "step_sequence": {},
    "yes_no": {"statement": "the person holds a cup"},
    "multiple_choice": {"question": "Which object was tidied up?", "options": "(A) The clothes.\n(B) The door."},
    "open_question": {"question": "What did the person take?"},
    "caption": {},
}
COMMON_TASKS = sorted(set(CONTRACT_TASKS) - {"open_question"})


@pytest.mark.parametrize("task, slots", sorted(CONTRACT_TASKS.items()))
def test_every_contract_task_makes_a_question_with_its_slots(task, slots):
    question = make_question(task, random.Random(0), **slots)
    assert question.strip()
    for value in slots.values():
        assert value in question
    assert "{" not in question and "}" not in question
    assert task_slots(task) == set(slots)


@pytest.mark.parametrize("task", COMMON_TASKS)
def test_common_tasks_have_at_least_twenty_distinct_paraphrases(task):
    templates = question_templates()[task]
    assert len(templates) >= 20
    assert len(set(templates)) == len(templates)


@pytest.mark.parametrize("task", sorted(question_templates()))
def test_all_paraphrases_of_a_task_need_the_same_slots(task):
    slot_sets = {template_slots(template) for template in question_templates()[task]}
    assert len(slot_sets) == 1


def test_same_seed_same_question_and_different_seeds_vary():
    draws = [make_question("action_recognition", random.Random(7)) for _ in range(3)]
    assert len(set(draws)) == 1
    rng = random.Random(7)
    assert len({make_question("action_recognition", rng) for _ in range(50)}) >= 10


def test_the_global_random_state_is_not_used():
    random.seed(0)
    before = random.random()
    random.seed(0)
    make_question("caption", random.Random(1))
    assert random.random() == before


@pytest.mark.parametrize(
    "answer",
    ["score", "difficulty", "yes", "no", "abseiling", "3", "steps", "colour", "shape"],
)
def test_avoid_keeps_the_answer_out_of_every_draw(answer):
    for task in ("action_recognition", "score", "difficulty", "step_sequence", "colour", "shape"):
        rng = random.Random(3)
        for _ in range(30):
            try:
                question = make_question(task, rng, avoid=[answer])
            except ValueError:
                # every paraphrase of e.g. "score" names the score: refusing is the correct outcome
                assert all(answer in template.lower() for template in question_templates()[task])
                break
            assert answer not in question.lower().replace("?", " ").replace(".", " ").split()


def test_avoid_matches_whole_words_case_insensitively():
    rng = random.Random(0)
    for _ in range(40):
        question = make_question("action_recognition", rng, avoid=["Action"])
        assert "action " not in question.lower() and "action?" not in question.lower()


@pytest.mark.parametrize("task", COMMON_TASKS)
def test_templates_do_not_contain_typical_answers(task):
    # a template (with no slot filled) must never state an answer by itself
    answers = {"yes", "no", "true.", "false.", "left", "right", "red", "square", "circle"}
    for template in question_templates()[task]:
        words = set(template.lower().replace("?", " ").replace(",", " ").split())
        if task == "yes_no":
            words -= {"yes", "no"}  # the answer format, offered as alternatives
        assert not words & answers, (task, template)


@pytest.mark.parametrize(
    "task, slots, message",
    [
        ("dancing", {}, "unknown question task 'dancing'"),
        ("counting", {}, "missing ['thing']"),
        ("caption", {"thing": "x"}, "unexpected ['thing']"),
        ("grounding", {"thing": "  "}, "must be non-empty"),
        ("multiple_choice", {"question": "q?"}, "missing ['options']"),
    ],
)
def test_bad_requests_raise_value_error_naming_the_problem(task, slots, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_question(task, random.Random(0), **slots)


def test_slot_that_is_the_answer_is_refused():
    with pytest.raises(ValueError, match="would contain the answer"):
        make_question("counting", random.Random(0), thing="3 cats", avoid=["3"])


def test_format_options_is_ordered_by_key():
    assert format_options({"C": "c", "A": "a", "B": "b"}) == "(A) a\n(B) b\n(C) c"
