import json
from pathlib import Path

import pytest

from llava_star import cli
from llava_star.errors import AnnotationError, ConfigError
from llava_star.records import read_samples
from llava_star.stages import prepare

DATA = Path(__file__).parent / "data"


@pytest.fixture
def k400_root(tmp_path):
    """Three of the eight K400 sample clips on disk (empty files: prepare checks existence only)."""
    root = tmp_path / "videos"
    for name in (
        "abseiling/-3B32lodo2M_000059_000069.mp4",
        "air_drumming/_dbcJuKJQNs_000040_000050.mp4",
        "applauding/0Tq8uFakTbk.mp4",
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    return root


def run(*argv):
    return prepare.main([str(arg) for arg in argv])


def test_prepare_writes_existing_samples_and_a_summary(tmp_path, k400_root):
    output = tmp_path / "out" / "k400.jsonl"
    assert (
        run(
            "kinetics400", "--annotations", DATA / "kinetics400_val_sample.csv", "--video-root", k400_root, "-o", output
        )
        == 0
    )
    samples = list(read_samples(output))
    assert [s.video for s in samples] == [
        "abseiling/-3B32lodo2M_000059_000069.mp4",
        "air_drumming/_dbcJuKJQNs_000040_000050.mp4",
        "applauding/0Tq8uFakTbk.mp4",
    ]
    summary = json.loads((tmp_path / "out" / "k400.summary.json").read_text())
    examples = summary.pop("skipped_examples")
    assert summary == {
        "dataset": "kinetics400",
        "samples": 3,
        "videos": 3,
        "skipped": {"video not found": 5},
        "label_types": {"class": 3},
        "tasks": {"action_recognition": 3},
    }
    assert examples["video not found"][0].endswith("kinetics400_val_sample.csv:4: _5PV4fkZisA_000139_000149.mp4")


def test_limit_and_seed(tmp_path, k400_root):
    annotations = DATA / "kinetics400_val_sample.csv"
    run(
        "kinetics400", "--annotations", annotations, "--video-root", k400_root, "-o", tmp_path / "a.jsonl", "--limit", 2
    )
    assert len(list(read_samples(tmp_path / "a.jsonl"))) == 2
    questions = {}
    for seed in (0, 0, 1, 2, 3):
        out = tmp_path / f"s{seed}.jsonl"
        run("kinetics400", "--annotations", annotations, "--video-root", k400_root, "-o", out, "--seed", seed)
        questions.setdefault(seed, []).append([s.question for s in read_samples(out)])
    assert questions[0][0] == questions[0][1]  # same seed, same questions
    assert len({tuple(q[0]) for q in questions.values()}) > 1


def test_summary_is_logged(tmp_path, k400_root, caplog):
    caplog.set_level("INFO", logger="llava_star.stages.prepare")
    run(
        "kinetics",
        "--annotations",
        DATA / "kinetics400_val_sample.csv",
        "--video-root",
        k400_root,
        "-o",
        tmp_path / "o.jsonl",
    )
    text = caplog.text
    assert "wrote 3 samples (3 videos)" in text
    assert "skipped 5: video not found" in text
    assert "label types: class 3" in text


def test_a_failed_run_leaves_the_previous_output_untouched(tmp_path, k400_root):
    output = tmp_path / "o.jsonl"
    output.write_text("previous\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("label,youtube_id,time_start,time_end\nabseiling,abc,1,11\nabseiling,abd,x,11\n")
    with pytest.raises(AnnotationError, match=r"bad\.csv:3: time_start"):
        run("kinetics400", "--annotations", bad, "--video-root", k400_root, "-o", output)
    assert output.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "o.jsonl", "videos"]  # no temp files left


def prepare_table(
    tmp_path, root, table, mapping="video: video\ntask: caption\nlabels: [{type: text, column: label}]\n"
):
    """Run the generic adapter on a small CSV whose videos are in ``root``."""
    annotations = tmp_path / "rows.csv"
    annotations.write_text(table)
    (tmp_path / "m.yaml").write_text(mapping)
    args = (
        "--annotations",
        annotations,
        "--video-root",
        root,
        "-o",
        tmp_path / "o.jsonl",
        "--mapping",
        tmp_path / "m.yaml",
    )
    return run("generic", *args)


@pytest.mark.parametrize("video", ["../outside.mp4", "/etc/passwd", "a/../../outside.mp4"])
def test_paths_escaping_the_video_root_are_errors_naming_the_line(tmp_path, video):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.mp4").touch()
    (root / "ok.mp4").touch()
    with pytest.raises(AnnotationError, match=r"rows\.csv:3: .*video root"):
        prepare_table(tmp_path, root, f"video,label\nok.mp4,a\n{video},b\n")


def test_symlink_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.mp4").touch()
    (root / "link.mp4").symlink_to(tmp_path / "secret.mp4")
    with pytest.raises(AnnotationError, match=r"rows\.csv:2: .*outside the video root"):
        prepare_table(tmp_path, root, "video,label\nlink.mp4,a\n")


def test_repeated_sample_ids_are_an_error(tmp_path):
    mapping = "video: video\nid: id\ntask: caption\nlabels: [{type: text, column: label}]\n"
    with pytest.raises(AnnotationError, match=r"rows\.csv:3: sample id 'x1' repeats .*rows\.csv:2"):
        prepare_table(tmp_path, tmp_path, "video,id,label\na.mp4,x1,a\nb.mp4,x1,b\n", mapping)


def test_split_is_ignored_with_a_warning_for_one_split_files(tmp_path, caplog):
    (tmp_path / "78687.webm").touch()
    run(
        "ssv2",
        "--annotations",
        DATA / "ssv2_train_sample.json",
        "--video-root",
        tmp_path,
        "-o",
        tmp_path / "o.jsonl",
        "--split",
        "val",
    )
    assert "--split val is ignored" in caplog.text
    assert len(list(read_samples(tmp_path / "o.jsonl"))) == 1


def test_generic_needs_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="--mapping"):
        run(
            "generic",
            "--annotations",
            DATA / "kinetics400_val_sample.csv",
            "--video-root",
            tmp_path,
            "-o",
            tmp_path / "o.jsonl",
        )


def test_missing_inputs_are_named(tmp_path):
    with pytest.raises(AnnotationError, match="--annotations .*nope.csv: no such file"):
        run("kinetics", "--annotations", tmp_path / "nope.csv", "--video-root", tmp_path, "-o", tmp_path / "o.jsonl")
    with pytest.raises(AnnotationError, match="--video-root .*: not a directory"):
        run(
            "kinetics",
            "--annotations",
            DATA / "kinetics400_val_sample.csv",
            "--video-root",
            tmp_path / "no",
            "-o",
            tmp_path / "o.jsonl",
        )


def test_bad_arguments_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run("imagenet", "--annotations", "a", "--video-root", tmp_path, "-o", tmp_path / "o.jsonl")
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        run("kinetics", "--annotations", "a", "--video-root", tmp_path, "-o", tmp_path / "o.jsonl", "--limit", "0")


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    code = cli.main(
        [
            "prepare",
            "kinetics",
            "--annotations",
            str(tmp_path / "nope.csv"),
            "--video-root",
            str(tmp_path),
            "-o",
            str(tmp_path / "o.jsonl"),
        ]
    )
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "nope.csv: no such file" in errors[0]


def test_every_sample_file_prepares_end_to_end(tmp_path):
    """Each adapter through the command, with placeholder videos for every sample it proposes."""
    from llava_star.datasets import get_adapter
    from llava_star.datasets.adapter import Found, PrepareRequest

    cases = [
        ("kinetics400", DATA / "kinetics400_val_sample.csv", 8),
        ("kinetics600", DATA / "kinetics600_val_sample.csv", 6),
        ("kinetics700", DATA / "kinetics700_validate_sample.json", 2),
        ("ssv2", DATA / "ssv2_train_sample.json", 4),
        ("star", DATA / "star_val_sample.json", 2),
        ("charades", DATA / "charades_v1_test_sample.csv", 30),
        ("charades_sta", DATA / "charades_sta_test_sample.txt", 7),
        ("activitynet_captions", DATA / "activitynet_captions_val_1_sample.json", 13),
    ]
    for dataset, annotations, expected in cases:
        root = tmp_path / dataset
        root.mkdir()
        for result in get_adapter(dataset)(PrepareRequest(dataset, annotations, root)):
            if isinstance(result, Found):
                (root / result.sample.video).parent.mkdir(parents=True, exist_ok=True)
                (root / result.sample.video).touch()
        output = tmp_path / f"{dataset}.jsonl"
        assert run(dataset, "--annotations", annotations, "--video-root", root, "-o", output) == 0
        assert len(list(read_samples(output))) == expected, dataset
