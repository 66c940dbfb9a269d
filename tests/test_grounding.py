"""The grounding check (generate --grounding-check): kept answers that pass without the video
are recorded grounded: false, and export --drop-ungrounded removes exactly those.

The stand-in model reads the object's colour from the frames (bright pixels), and answers
a background question from its prior ("black") whatever it is shown.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_model_helpers import one_torch_thread  # noqa: F401 (an autouse fixture)

from llava_star.errors import ConfigError
from llava_star.media.encode import write_video
from llava_star.records import Generation, Label, Sample, read_jsonl, write_jsonl_atomic
from llava_star.runs import GenerationDir
from llava_star.stages.export import main as export_main
from llava_star.stages.generate import GenerateConfig, Reply, run
from llava_star.stages.generate import main as generate_main

COLOURS = {"red": (230, 30, 30), "green": (30, 200, 40), "blue": (40, 70, 240), "yellow": (240, 220, 40)}
BACKGROUNDS = ["black", "white", "grey"]


class ColourReader:
    """Names the colour of the bright pixels it sees; says black for any background question."""

    def __init__(self):
        self.calls = []

    def replies(self, prompts, videos):
        self.calls.append([video.array.copy() for video in videos])
        answers = []
        for prompt, video in zip(prompts, videos, strict=True):
            if "background" in prompt:
                answers.append(Reply("Most of each frame is dark, so the background is black."))
                continue
            pixels = video.array.reshape(-1, 3)
            bright = pixels[pixels.max(axis=1) > 100]
            if not len(bright):
                answers.append(Reply("I cannot see any object in this video."))
                continue
            mean = bright.mean(axis=0)
            colour = min(COLOURS, key=lambda name: float(np.sum((mean - COLOURS[name]) ** 2)))
            answers.append(Reply(f"The shape in the frames is {colour}. So the object is {colour}."))
        return answers


def square_frames(rgb, count=8, size=32, offset=0):
    frames = np.zeros((count, size, size, 3), dtype=np.uint8)
    for t in range(count):
        x = 2 + offset + t
        frames[t, 10:20, x : x + 8] = rgb
    return frames


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Eight videos of a small coloured square on black: a colour and a background question each."""
    root = tmp_path_factory.mktemp("grounding")
    lines = []
    for index in range(8):
        colour = sorted(COLOURS)[index % 4]
        name = f"videos/{colour}_{index}.mp4"
        write_video(root / name, square_frames(COLOURS[colour], offset=index % 3), fps=8.0)
        for task, question, value, vocabulary in (
            ("colour", "What colour is the object?", colour, sorted(COLOURS)),
            ("background", "What colour is the background?", "black", BACKGROUNDS),
        ):
            label = {"type": "class", "value": value, "vocabulary": vocabulary}
            lines.append(
                {
                    "id": f"v{index}-{task}",
                    "video": name,
                    "question": question,
                    "labels": [label],
                    "source": "test",
                    "task": task,
                }
            )
    write_jsonl_atomic(root / "samples.jsonl", lines)
    return root


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)


def config_for(dataset, out, **overrides):
    settings = {
        "model": "stand-in",
        "samples": str(dataset / "samples.jsonl"),
        "video_root": str(dataset),
        "output_dir": str(out),
        "batch_size": 4,
        "num_frames": 4,
        "num_workers": 0,
        "rationalize": False,
    }
    return GenerateConfig(**(settings | overrides))


def lines_of(directory):
    return {
        line["id"]: line for path in sorted(Path(directory).glob("generations.*.jsonl")) for line in read_jsonl(path)
    }


def test_blank_check_flags_prior_answers_and_keeps_video_answers(dataset, tmp_path):
    answerer = ColourReader()
    summary = run(config_for(dataset, tmp_path, grounding_check="blank"), answerer=answerer)
    lines = lines_of(tmp_path)
    assert all(line["passed"] for line in lines.values())
    assert {line["grounded"] for line in lines.values() if line["task"] == "colour"} == {True}
    assert {line["grounded"] for line in lines.values() if line["task"] == "background"} == {False}
    # four direct batches of four, each followed by its check (every answer passed)
    assert len(answerer.calls) == 8
    checked = answerer.calls[1]
    assert all((video == video.reshape(-1, 3)[0]).all() for video in checked)  # one flat frame, repeated
    assert summary["grounding_checked"] == 16 and summary["ungrounded"] == 8
    assert summary["grounded_fraction"] == 0.5
    assert summary["grounded_by_task"]["colour"]["grounded_fraction"] == 1.0
    assert summary["grounded_by_task"]["background"]["grounded_fraction"] == 0.0
    assert summary["this_run"]["ungrounded"] == 8


def test_shuffle_keeps_colour_answers_ungrounded(dataset, tmp_path):
    """Shuffling checks order: the colour survives it, so the colour answers are flagged too."""
    answerer = ColourReader()
    run(config_for(dataset, tmp_path, grounding_check="shuffle"), answerer=answerer)
    assert {line["grounded"] for line in lines_of(tmp_path).values()} == {False}
    direct, checked = answerer.calls[0], answerer.calls[1]
    for original, shuffled in zip(direct, checked, strict=True):
        assert not (original == shuffled).all()
        assert sorted(map(bytes, original)) == sorted(map(bytes, shuffled))


def test_no_check_by_default_and_failed_answers_are_not_checked(dataset, tmp_path):
    answerer = ColourReader()
    summary = run(config_for(dataset, tmp_path / "none"), answerer=answerer)
    assert {line["grounded"] for line in lines_of(tmp_path / "none").values()} == {None}
    assert len(answerer.calls) == 4 and summary["grounded_fraction"] is None

    class Refuser(ColourReader):
        def replies(self, prompts, videos):
            self.calls.append(prompts)
            return [Reply("I cannot tell.") for _ in prompts]

    refuser = Refuser()
    run(config_for(dataset, tmp_path / "refused", grounding_check="blank"), answerer=refuser)
    assert len(refuser.calls) == 4  # nothing passed: nothing asked again
    assert {line["grounded"] for line in lines_of(tmp_path / "refused").values()} == {None}


def test_rationalized_answers_are_checked_with_the_original_question(dataset, tmp_path):
    class HintOnly(ColourReader):
        def replies(self, prompts, videos):
            self.calls.append(list(prompts))
            return [
                Reply("So the object is red.") if "\nAnswer: " in prompt else Reply("I cannot tell.")
                for prompt in prompts
            ]

    answerer = HintOnly()
    run(config_for(dataset, tmp_path, grounding_check="blank", rationalize=True, limit=2), answerer=answerer)
    line = lines_of(tmp_path)["v0-colour"]  # v0 is blue: the hinted answer says red and fails
    assert line["rationalized"] and line["grounded"] is None
    # a sample whose hinted answer passes is asked the original question, no hint
    asked = [prompt for call in answerer.calls for prompt in call]
    assert sum("\nAnswer: " in prompt for prompt in asked) == 2


def test_export_drop_ungrounded_removes_exactly_the_flagged(dataset, tmp_path):
    run(config_for(dataset, tmp_path / "gen", grounding_check="blank"), answerer=ColourReader())
    flagged = {key for key, line in lines_of(tmp_path / "gen").items() if line["grounded"] is False}
    export_main([str(tmp_path / "gen"), "-o", str(tmp_path / "all.json")])
    export_main([str(tmp_path / "gen"), "-o", str(tmp_path / "grounded.json"), "--drop-ungrounded"])
    everything = {record["id"] for record in json.loads((tmp_path / "all.json").read_text())}
    grounded = {record["id"] for record in json.loads((tmp_path / "grounded.json").read_text())}
    assert len(flagged) == 8 and everything - grounded == flagged
    stats = json.loads((tmp_path / "grounded.stats.json").read_text())
    assert stats["ungrounded_dropped"] == 8


def test_old_lines_without_grounded_read_as_unknown():
    sample = Sample("a", "v.mp4", "q?", (Label("yes_no", True),), "test", "t")
    line = Generation(sample, "Yes.", False, True, (), 0, "m").to_dict()
    assert line["grounded"] is None
    del line["grounded"]
    assert Generation.from_dict(line).grounded is None
    assert Generation.from_dict(line | {"grounded": False}).grounded is False


def test_the_flag_and_the_cycle_key(dataset, tmp_path):
    from llava_star.stages.cycle import CycleConfig
    from llava_star.stages.generate import parse_args

    config = parse_args(
        ["--model", "m", "--samples", "s", "--video-root", "r", "-o", "o", "--grounding-check", "shuffle"]
    )
    assert config.grounding_check == "shuffle"
    with pytest.raises(ConfigError, match="grounding_check"):
        config_for(dataset, tmp_path, grounding_check="dark")
    with pytest.raises(SystemExit):
        generate_main(["--grounding-check"])
    from llava_star.config import config_from_mapping

    cycle = config_from_mapping(
        CycleConfig,
        {"model": "m", "samples": "s", "video_root": "r", "output_dir": "o", "generate": {"grounding_check": "blank"}},
    )
    assert cycle.generate.grounding_check == "blank"


def test_synthetic_prior_only_task_is_flagged_and_video_tasks_are_kept(tmp_path):
    """llava-star synthetic --prior-only: the background question (black in every clip) passes
    without the video and is flagged; the colour answers, read from the frames, are kept."""
    from llava_star.datasets.synthetic import main as synthetic_main

    synthetic_main(["-o", str(tmp_path / "synth"), "--num-videos", "8", "--prior-only"])
    samples = list(read_jsonl(tmp_path / "synth" / "samples.jsonl"))
    assert sum(sample["task"] == "background" for sample in samples) == 4  # one per moving scene
    config = config_for(tmp_path / "synth", tmp_path / "gen", grounding_check="blank", num_frames=8)
    summary = run(config, answerer=ColourReader())
    by_task = summary["grounded_by_task"]
    assert by_task["background"] == {"checked": 4, "ungrounded": 4, "grounded_fraction": 0.0}
    assert by_task["colour"] == {"checked": 4, "ungrounded": 0, "grounded_fraction": 1.0}
    export_main([str(tmp_path / "gen"), "-o", str(tmp_path / "train.json"), "--drop-ungrounded"])
    tasks = {record["task"] for record in json.loads((tmp_path / "train.json").read_text())}
    assert tasks == {"colour"}


def test_report_shows_the_grounded_fraction_and_the_ungrounded_answers(dataset, tmp_path):
    from llava_star.stages import report

    run(config_for(dataset, tmp_path / "gen", grounding_check="blank"), answerer=ColourReader())
    assert report.main([str(tmp_path / "gen"), "-o", str(tmp_path / "report"), "--video-root", str(dataset)]) == 0
    stats = json.loads((tmp_path / "report" / "stats.json").read_text())
    training = stats["cycles"][0]["training"]
    assert training["overall"]["grounded_fraction"] == 0.5
    assert training["by_task"]["background"]["grounded_fraction"] == 0.0
    assert (tmp_path / "report" / "grounded_by_cycle.png").is_file()
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'data-status="ungrounded"' in page and 'value="ungrounded"' in page


def cycle_config_for(dataset, out, **train):
    from llava_star.config import config_from_mapping
    from llava_star.stages.cycle import CycleConfig

    return config_from_mapping(
        CycleConfig,
        {
            "model": "m",
            "samples": str(dataset / "samples.jsonl"),
            "video_root": str(dataset),
            "output_dir": str(out),
            "generate": {"grounding_check": "blank"},
            "train": train,
        },
    )


def test_the_cycle_trains_only_on_grounded_answers_with_train_drop_ungrounded(dataset, tmp_path):
    """train.drop_ungrounded: the cycle's export leaves out exactly the flagged answers, and a
    cycle whose every kept answer was flagged trains nothing instead of failing."""
    from llava_star.stages.cycle import CycleRunner

    run(config_for(dataset, tmp_path / "gen", grounding_check="blank"), answerer=ColourReader())
    lines = lines_of(tmp_path / "gen")
    grounded = {key for key, line in lines.items() if line["grounded"]}
    runner = CycleRunner(cycle_config_for(dataset, tmp_path / "run", drop_ungrounded=True))
    stage = runner.run_dir.cycle(1)
    marker = runner.export(stage, GenerationDir(tmp_path / "gen"), kept=len(lines), direct_only=False)
    assert {record["id"] for record in json.loads(stage.train_data.read_text())} == grounded
    assert marker["samples"] == len(grounded) == 8

    only_background = tmp_path / "background"
    only_background.mkdir()
    for path in sorted((tmp_path / "gen").glob("generations.*.jsonl")):
        kept = [line for line in read_jsonl(path) if line["task"] == "background"]
        write_jsonl_atomic(only_background / path.name, kept)
    stage = runner.run_dir.cycle(2)
    marker = runner.export(stage, GenerationDir(only_background), kept=8, direct_only=False)
    assert marker == {"data": None, "samples": 0} and not stage.train_data.exists()


def test_drop_ungrounded_without_the_check_is_refused_when_the_config_loads(dataset, tmp_path):
    from llava_star.config import config_from_mapping
    from llava_star.stages.cycle import CycleConfig

    values = {"model": "m", "samples": "s", "video_root": "r", "output_dir": "o", "train": {"drop_ungrounded": True}}
    with pytest.raises(ConfigError, match="^train.drop_ungrounded: needs generate.grounding_check"):
        config_from_mapping(CycleConfig, values)
    assert cycle_config_for(dataset, tmp_path, drop_ungrounded=True).train.drop_ungrounded
