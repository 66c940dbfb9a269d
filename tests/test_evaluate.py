"""``llava-star eval``: its checks before and after the lmms-eval run, and the adapter's registration."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llava_star.errors import ConfigError
from llava_star.eval_tasks.results import find_results_file, task_metrics
from llava_star.stages.evaluate import (
    EvalConfig,
    config_from_args,
    lmms_eval_command,
    run,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

KINETICS = {
    "id": "k700-1",
    "video": "a.mp4",
    "question": "What is happening in this video?",
    "labels": [{"type": "class", "value": "abseiling"}],
    "source": "kinetics700",
    "task": "action_recognition",
}


def _config(tmp_path: Path, **overrides) -> EvalConfig:
    values = {
        "model": "ckpt",
        "tasks": ("kinetics700_qa",),
        "output_dir": tmp_path / "out",
        "samples": tmp_path / "s.jsonl",
    }
    values.update(overrides)
    return EvalConfig(**values)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"samples": None}, "--samples"),
        ({"tasks": ("video_star",), "samples": None}, "--samples: the tasks kinetics700_qa, finediving_aqa, star_qa"),
        ({"model": "a,b"}, "--model"),
        ({"limit": 0}, "--limit"),
        ({"num_frames": 0}, "--num-frames"),
        ({"tasks": ("star_qa", "")}, "--tasks"),
    ],
)
def test_bad_configs_name_the_flag(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, **overrides)


def test_lmms_eval_tasks_need_no_samples(tmp_path):
    config = _config(tmp_path, tasks=("tempcompass",), samples=None)
    assert config.own_tasks == ()


def test_group_expands_to_its_tasks(tmp_path):
    config = _config(tmp_path, tasks=("video_star", "star_qa", "llava_star_qa", "tempcompass"))
    assert config.own_tasks == ("kinetics700_qa", "finediving_aqa", "star_qa", "llava_star_qa")


def test_command_line_flags(tmp_path):
    config = _config(tmp_path, tasks=("kinetics700_qa", "star_qa"), limit=2, num_frames=4, model_args="dtype=float32")
    command = lmms_eval_command(config, tmp_path / "tasks", tmp_path / "out")
    flags = {
        name: command[command.index(name) + 1] for name in command if name.startswith("--") and name != "--log_samples"
    }
    assert flags["--model"] == "llava_star"
    assert flags["--model_args"] == "pretrained=ckpt,num_frames=4,dtype=float32"
    assert flags["--tasks"] == "kinetics700_qa,star_qa"
    assert flags["--include_path"] == str(tmp_path / "tasks")  # one folder: 0.7.3 reads a comma list as one path
    assert flags["--limit"] == "2"
    assert "--log_samples" in command


@pytest.mark.parametrize(
    ("wrapper", "model_args", "expected"),
    [
        ("qwen2_vl", "device=cpu", "pretrained=ckpt,max_num_frames=4,device=cpu"),
        ("llava_hf", "max_frames_num=16", "pretrained=ckpt,max_frames_num=16"),  # named there: kept
        ("video_llava", "", "pretrained=ckpt,num_frames=4"),
        ("some_other_wrapper", "a=1", "pretrained=ckpt,a=1"),
    ],
)
def test_a_built_in_wrapper_gets_its_own_arguments(tmp_path, wrapper, model_args, expected):
    config = _config(tmp_path, num_frames=4, max_new_tokens=6, lmms_model=wrapper, model_args=model_args)
    command = lmms_eval_command(config, tmp_path / "tasks", tmp_path / "out")
    flags = {
        name: command[command.index(name) + 1] for name in command if name.startswith("--") and name != "--log_samples"
    }
    assert (flags["--model"], flags["--model_args"], flags["--gen_kwargs"]) == (wrapper, expected, "max_new_tokens=6")
    assert "--force_simple" not in command and "apply_patches()" in command[2]
    simple = _config(tmp_path, lmms_model=wrapper, force_simple=True)
    assert "--force_simple" in lmms_eval_command(simple, None, tmp_path / "out")


def test_a_wrapper_takes_the_answer_budget_as_a_flag(tmp_path):
    with pytest.raises(ConfigError, match="--max-new-tokens"):
        _config(tmp_path, lmms_model="qwen2_vl", model_args="max_new_tokens=5")


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="--samples: no such file"):
        config_from_args(["--model", "m", "--tasks", "star_qa", "--samples", str(tmp_path / "x.jsonl"), "-o", "o"])
    samples = tmp_path / "s.jsonl"
    samples.write_text("")
    with pytest.raises(ConfigError, match="--video-root: no such folder"):
        config_from_args(
            [
                "--model",
                "m",
                "--tasks",
                "star_qa",
                "--samples",
                str(samples),
                "--video-root",
                str(tmp_path / "v"),
                "-o",
                "o",
            ]
        )


@pytest.mark.parametrize(
    "results, expected",
    [
        (
            {
                "star_qa": {
                    "alias": "star_qa",
                    "accuracy,none": 0.5,
                    "accuracy_stderr,none": "N/A",
                    "accuracy_stderr_clt,none": 0.1,
                    "accuracy_stderr_clustered,none": "N/A",
                }
            },
            {"star_qa": {"accuracy": 0.5}},
        ),
        (
            {"finediving_aqa": {"score_spearman,none": float("nan"), "parse_rate,none": 1.0}},
            {"finediving_aqa": {"score_spearman": None, "parse_rate": 1.0}},  # NaN is not JSON
        ),
        ({"video_star": {"alias": "video_star", " ": " "}}, {"video_star": {}}),
    ],
)
def test_task_metrics(results, expected):
    assert task_metrics(results) == expected


def test_results_file_must_be_new(tmp_path):
    old = tmp_path / "llava_star" / "old_results.json"
    old.parent.mkdir()
    old.write_text("{}")
    started = time.time() + 1
    assert find_results_file(tmp_path, started) is None
    os.utime(old, (started + 1, started + 1))
    assert find_results_file(tmp_path, started) == old


def test_a_task_without_samples_fails_before_lmms_eval(tmp_path):
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps(KINETICS) + "\n")
    with pytest.raises(ConfigError, match="star_qa has no sample in .*use llava_star_qa"):
        run(_config(tmp_path, tasks=("kinetics700_qa", "star_qa"), samples=samples))
    assert not (tmp_path / "out" / "lmms_eval.log").exists()


def test_a_dataset_without_a_video_folder_fails_before_lmms_eval(tmp_path, monkeypatch):
    monkeypatch.delenv("LLAVA_STAR_VIDEO_DIR", raising=False)
    monkeypatch.delenv("LLAVA_STAR_VIDEO_DIR_KINETICS700", raising=False)
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps(KINETICS) + "\n")
    with pytest.raises(ConfigError, match="LLAVA_STAR_VIDEO_DIR_KINETICS700"):
        run(_config(tmp_path, samples=samples))
    assert not (tmp_path / "out" / "lmms_eval.log").exists()


def _entry_point_from_setup_cfg() -> str:
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "setup.cfg")
    return parser["options.entry_points"]["lmms_eval.models"].strip()


def fake_installation(folder: Path) -> Path:
    """A dist-info with setup.cfg's entry points, as ``pip install`` would leave it."""
    dist_info = folder / "llava_star-0.0.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: llava-star\nVersion: 0.0.0\n")
    (dist_info / "entry_points.txt").write_text(f"[lmms_eval.models]\n{_entry_point_from_setup_cfg()}\n")
    return folder


@pytest.mark.slow
def test_lmms_eval_finds_the_adapter_through_the_entry_point(tmp_path):
    pytest.importorskip("lmms_eval", reason="the eval extra is not installed")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake_installation(tmp_path)), str(REPO_ROOT)]))
    code = "from lmms_eval.models import get_model; print(get_model('llava_star').__qualname__)"
    found = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.strip().splitlines()[-1] == "LlavaStarVideo"
