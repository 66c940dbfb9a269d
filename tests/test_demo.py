"""The CPU demo on a miniature setting (the full one is `make demo`)."""

import json
import random

import pytest

from llava_star.config import load_config
from llava_star.datasets.captions import warmup_records
from llava_star.errors import ConfigError
from llava_star.records import Label, Sample
from llava_star.stages.demo import DemoConfig, main

MINIATURE = [
    "num_videos=24",
    "warmup_videos=4",
    "warmup_steps=2",
    "cycles=2",
    "cycle_train_steps=2",
    "batch_size=4",
    "max_new_tokens=8",
    "min_kept_gain=null",
]


def test_demo_settings_errors_name_the_key():
    with pytest.raises(ConfigError, match="^warmup_steps: must be >= 1"):
        load_config(DemoConfig, None, ["warmup_steps=0"])
    with pytest.raises(ConfigError, match="^cycle: unknown key"):
        load_config(DemoConfig, None, ["cycle=2"])
    with pytest.raises(ConfigError, match="^patch_size: must divide the tiny model's 32 px frames, got 12"):
        load_config(DemoConfig, None, ["patch_size=12"])


def test_warmup_captions_come_from_the_labels_of_moving_scenes():
    def sample(video, task, value):
        return Sample(f"{video}-{task}", video, "q?", (Label("class", value),), "synthetic", task)

    samples = [
        sample("a.mp4", "colour", "red"),
        sample("a.mp4", "shape", "circle"),
        sample("a.mp4", "motion_direction", "up"),
        sample("b.mp4", "counting", "x"),
    ]
    records = warmup_records(samples, 5, random.Random(0))
    assert len(records) == 1  # b.mp4 is not a moving scene
    assert records[0]["video"] == "a.mp4"
    assert records[0]["conversations"][1] == {"from": "gpt", "value": "A red circle moves up."}
    assert records[0]["conversations"][0]["value"].startswith("<video>\n")
    caption_record, colour_hint, motion_hint = warmup_records(
        samples, 5, random.Random(0), hint_tasks=("colour", "motion_direction")
    )
    assert caption_record == records[0] | {"id": caption_record["id"]}
    assert "Answer: red." in colour_hint["conversations"][0]["value"]
    assert "Answer: up." in motion_hint["conversations"][0]["value"]
    assert colour_hint["conversations"][1] == motion_hint["conversations"][1] == caption_record["conversations"][1]


@pytest.mark.slow
def test_miniature_demo_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-o", str(out), *MINIATURE]) == 0
    printed = capsys.readouterr().out
    assert "held-out accuracy" in printed and "report:" in printed and "wall time" in printed
    result = json.loads((out / "demo.json").read_text())
    assert len(result["accuracy_by_cycle"]) == 2 and 0 <= result["warm_start_accuracy"] <= 1
    assert len(result["grounded_fraction_by_cycle"]) == 2 and "grounded fraction" in printed
    assert (out / "warmup" / "model" / "config.json").exists()
    assert (out / "cycles" / "report" / "index.html").exists()
    assert (out / "cycles" / "cycle_2" / "eval.json").exists()
    # the demo's geometry reaches the videos, the model and the frames it is shown
    assert json.loads((out / "data" / "synthetic.json").read_text())["config"]["travel"] == 1.0
    vision = json.loads((out / "warmup" / "model" / "config.json").read_text())["vision_config"]
    assert (vision["patch_size"], vision["image_size"]) == (16, 32)
    protocol = json.loads((out / "cycles" / "cycle_2" / "eval.json").read_text())["protocol"]
    assert protocol["num_frames"] == 2

    # a rerun finds every step done and trains nothing again
    warm = (out / "warmup" / "model").stat().st_mtime_ns
    assert main(["-o", str(out), *MINIATURE]) == 0
    assert (out / "warmup" / "model").stat().st_mtime_ns == warm
    assert json.loads((out / "demo.json").read_text())["accuracy_by_cycle"] == result["accuracy_by_cycle"]
