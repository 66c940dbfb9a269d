"""`llava-star demo --ablation` (issue 31): the arms, the false-claim rate, the table, and a
demo that prints the same table for the same seed."""

from __future__ import annotations

import json
import re

import pytest
from test_demo import MINIATURE
from test_export import generation, write_shards

from llava_star.ablation import false_claim_rate, format_table, gold_records, summarize
from llava_star.config import config_from_mapping
from llava_star.cycle_config import CycleConfig
from llava_star.datasets.synthetic import false_claims, truth_by_video
from llava_star.errors import ConfigError
from llava_star.stages.demo import main
from llava_star.stages.export import main as export_main
from llava_star.verify.core import verify

TRUTH = {"colour": "yellow", "shape": "circle", "motion_direction": "up"}


@pytest.mark.parametrize(
    "answer, asked, claims",
    [
        ("A yellow square moves left.", "colour", ["motion_direction=left", "shape=square"]),
        ("The yellow circle moves to the left.", "colour", ["motion_direction=left"]),  # a direction synonym
        ("It is yellow. It is not a square.", "colour", []),  # negated: no claim
        ("It is yellow; it could be a square or a triangle.", "colour", []),  # hedged: no claim
        ("The yellow circle moves upward.", "colour", []),
        ("It moves up. It is red.", "motion_direction", ["colour=red"]),
        ("A yellow circle.", "shape", []),  # the asked attribute is the verifier's business
    ],
)
def test_false_claims_are_wrong_values_the_verifier_would_pass(answer, asked, claims):
    assert false_claims(answer, asked, TRUTH) == claims


def test_false_claim_rate_of_training_records():
    def record(video, task, answer):
        return {"video": video, "task": task, "conversations": [{"from": "human"}, {"from": "gpt", "value": answer}]}

    truth = {"a.mp4": TRUTH, "b.mp4": {"colour": "red", "shape": "square", "motion_direction": "down"}}
    records = [
        record("a.mp4", "colour", "A yellow square."),
        record("b.mp4", "colour", "A red square moves down."),
        record("b.mp4", "motion_direction", "It moves down."),
        record("a.mp4", "motion_direction", "A red circle moves up."),
    ]
    assert false_claim_rate(records, truth) == 0.5
    assert false_claim_rate([], truth) is None


def test_gold_answers_are_the_true_captions(synthetic_dataset):
    from llava_star.records import read_samples

    samples = [s for s in read_samples(synthetic_dataset.train) if s.task in ("colour", "motion_direction")][:6]
    truth = truth_by_video(read_samples(synthetic_dataset.samples))
    records = gold_records(samples, truth)
    assert [r["conversations"][1]["value"] for r in records] == [
        "A {colour} {shape} moves {motion_direction}.".format(**truth[s.video]) for s in samples
    ]
    assert {s.task for s in samples} == {"colour", "motion_direction"}
    assert all(verify(r["conversations"][1]["value"], s.labels).passed for r, s in zip(records, samples))
    assert false_claim_rate(records, truth) == 0.0
    assert all(r["conversations"][0]["value"] == f"<video>\n{s.question}" for r, s in zip(records, samples))


def test_export_unverified_keeps_the_rejected_answers_too(tmp_path):
    gen = write_shards(tmp_path / "gen", [[generation("a"), generation("b", passed=False), generation("c")]])
    export_main([str(gen), "-o", str(tmp_path / "verified.json")])
    export_main([str(gen), "-o", str(tmp_path / "all.json"), "--unverified"])
    assert [r["id"] for r in json.loads((tmp_path / "verified.json").read_text())] == ["a", "c"]
    assert [r["id"] for r in json.loads((tmp_path / "all.json").read_text())] == ["a", "b", "c"]
    stats = json.loads((tmp_path / "all.stats.json").read_text())
    assert stats["by_source_and_label_type"][0]["passed"] == 2  # the verifier's count is not inflated


def test_no_verifier_cycles_need_rationalization_off():
    values = {"model": "m", "samples": "s", "video_root": "r", "output_dir": "o", "train": {"verified_only": False}}
    with pytest.raises(ConfigError, match="^train.verified_only: .*generate.rationalize: false"):
        config_from_mapping(CycleConfig, values)
    config = config_from_mapping(CycleConfig, values | {"generate": {"rationalize": False}})
    assert not config.train.verified_only


def test_table_shows_mean_and_range_over_seeds():
    runs = {
        "video_star": [
            {"accuracy": [0.5, 0.75], "by_task": {"colour": 1.0}, "kept": 0.5, "false_claims": 0.1},
            {"accuracy": [0.25, 1.0], "by_task": {"colour": 0.5}, "kept": 1.0, "false_claims": 0.3},
        ],
        "warm_start": [
            {"accuracy": [0.5, None], "by_task": {"colour": 0.5}, "kept": None, "false_claims": None},
            {"accuracy": [0.25, None], "by_task": {"colour": 0.25}, "kept": None, "false_claims": None},
        ],
    }
    table = summarize(runs, cycles=1)
    assert table["video_star"]["accuracy"][1] == {"mean": 87.5, "min": 75.0, "max": 100.0}
    assert table["video_star"]["false_claims"] == pytest.approx({"mean": 20.0, "min": 10.0, "max": 30.0})
    text = format_table(table, cycles=1)
    assert "colour end" in text.splitlines()[0]
    assert re.search(
        r"Video-STaR.*37\.5 \(25-50\)\s+87\.5 \(75-100\)\s+75\.0 \(50-100\)\s+75\.0 \(50-100\)\s+20\.0 \(10-30\)", text
    )
    assert re.search(r"warm start alone\s+37\.5 \(25-50\)\s+-\s+37\.5 \(25-50\)\s+-\s+-$", text)


ABLATION = [*MINIATURE, "ablation_seeds=2"]


@pytest.mark.slow
def test_miniature_ablation_runs_every_arm_and_reports_what_each_trained_on(tmp_path, capsys):
    out = tmp_path / "ablation"
    assert main(["--ablation", "-o", str(out), *ABLATION]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "ablation.json").read_text())
    for arm in ("Video-STaR", "no rationalization", "no verifier", "gold labels", "warm start alone"):
        assert arm in printed
    for seed in ("0", "1"):
        arms = result["by_seed"][seed]
        seed_dir = out / f"seed_{seed}"
        # every arm starts from the same warm model, measured once
        baseline = json.loads((seed_dir / "video_star" / "baseline" / "eval.json").read_text())["accuracy"]
        assert {arm["accuracy"][0] for arm in arms.values()} == {baseline}
        for cycle in (1, 2):
            evaluation = json.loads((seed_dir / "video_star" / f"cycle_{cycle}" / "eval.json").read_text())
            assert arms["video_star"]["accuracy"][cycle] == evaluation["accuracy"]
        # no verifier: every training question is trained on, right or wrong
        trained = json.loads((seed_dir / "no_verifier" / "cycle_1" / "train.json").read_text())
        questions = (seed_dir / "questions_train.jsonl").read_text().splitlines()
        assert len(trained) == len(questions) and arms["no_verifier"]["kept"] == 1.0
        # no rationalization: no answer came from the hint prompt
        for cycle in (1, 2):
            path = seed_dir / "no_rationalization" / f"cycle_{cycle}" / "train.json"
            assert not path.exists() or not any(r["rationalized"] for r in json.loads(path.read_text()))
        assert arms["gold"]["false_claims"] == 0.0
    assert (out / "ablation.png").is_file() and "ablation.png" in (out / "index.html").read_text()


@pytest.mark.slow
def test_the_demo_prints_the_same_table_for_the_same_seed(tmp_path, capsys):
    """Pinned threads and seeded everything: two runs in two folders give the same figures."""
    tables = []
    for name in ("first", "second"):
        assert main(["-o", str(tmp_path / name), *MINIATURE]) == 0
        printed = capsys.readouterr().out
        ours = ("cycle ", "start ", "1 ", "2 ", "stopped:", "held-out accuracy:", "grounded fraction")
        tables.append([line.strip() for line in printed.splitlines() if line.strip().startswith(ours)])
    assert len(tables[0]) == 7  # header, start, two cycles, stopped, accuracy, grounded fraction
    assert tables[0] == tables[1]
    results = [json.loads((tmp_path / name / "demo.json").read_text()) for name in ("first", "second")]
    for result in results:
        del result["wall_seconds_this_run"], result["report"]
    assert results[0] == results[1]
