"""lmms-eval runs the project's tasks with the ``llava_star`` adapter on a tiny model (slow).

Videos (mp4 files and a folder of jpg frames, as FineDiving ships) and the tiny model are
built here; answers of a random model are nonsense, so the checks are on the run: every
task has its metrics in lmms-eval's results file and in ``metrics.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_evaluate import fake_installation

pytest.importorskip("lmms_eval", reason="the eval extra is not installed")
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
TASKS = ("kinetics700_qa", "finediving_aqa", "star_qa")
FINEDIVING_METRICS = {
    "accuracy",
    "score_accuracy",
    "difficulty_accuracy",
    "score_spearman",
    "score_relative_l2",
    "parse_rate",
}


def _samples() -> list[dict]:
    kinetics = [
        {
            "id": f"k700-{index}",
            "video": f"kinetics/{index}.mp4",
            "question": "What is happening in this video?",
            "labels": [{"type": "class", "value": name, "vocabulary": ["abseiling", "juggling balls", "yoga"]}],
            "source": "kinetics700",
            "task": "action_recognition",
        }
        for index, name in enumerate(["abseiling", "juggling balls", "yoga"])
    ]
    dives = [
        {
            "id": f"fd-{index}",
            "video": f"FineDiving/dive{index}",
            "question": "What is the dive's score and difficulty?",
            "labels": [
                {"type": "number", "value": score, "name": "score", "rel_tolerance": 0.05},
                {"type": "number", "value": difficulty, "name": "difficulty", "tolerance": 0.05},
            ],
            "source": "finediving",
            "task": "score",
        }
        for index, (score, difficulty) in enumerate([(75.6, 3.2), (48.0, 2.0), (90.1, 3.6)])
    ]
    star = [
        {
            "id": f"star-{index}",
            "video": "star/6H78U.mp4",
            "start": 0.5,
            "end": 1.5,
            "question": "Which object was tidied up by the person?\n(A) The blanket. (B) The clothes. (C) The towel.",
            "labels": [
                {
                    "type": "choice",
                    "value": value,
                    "options": {"A": "The blanket.", "B": "The clothes.", "C": "The towel."},
                },
                {"type": "time_range", "value": [0.5, 1.5]},
            ],
            "source": "star",
            "task": "multiple_choice",
        }
        for index, value in enumerate("BA")
    ]
    return kinetics + dives + star


@pytest.fixture(scope="module")
def evaluation_inputs(tmp_path_factory):
    from PIL import Image

    from llava_star.media.encode import write_video
    from llava_star.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("eval_inputs")
    rng = np.random.default_rng(0)
    videos = root / "videos"
    for name in ("kinetics/0", "kinetics/1", "kinetics/2", "star/6H78U"):
        write_video(videos / f"{name}.mp4", rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8), fps=8)
    for index in range(3):
        folder = videos / "FineDiving" / f"dive{index}"
        folder.mkdir(parents=True)
        for frame in range(6):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{frame:05d}.jpg")
    samples = root / "test.jsonl"
    samples.write_text("".join(json.dumps(sample) + "\n" for sample in _samples()), encoding="utf-8")
    model = build_tiny_model("video_llava", root / "tiny_video_llava")
    return {"root": root, "videos": videos, "samples": samples, "model": model}


def _environment(inputs: dict, *prefix: Path) -> dict[str, str]:
    path = os.pathsep.join([*(str(p) for p in prefix), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    return dict(
        os.environ,
        PYTHONPATH=path.rstrip(os.pathsep),
        HF_HUB_OFFLINE="1",
        LLAVA_STAR_VIDEO_DIR=str(inputs["videos"]),
        LMMS_EVAL_DATASETS_CACHE=str(inputs["root"] / "datasets_cache"),
    )


def test_lmms_eval_command_line_with_the_installed_adapter(evaluation_inputs, tmp_path):
    bound = subprocess.run(
        [
            sys.executable,
            "-m",
            "llava_star.eval_tasks",
            "--samples",
            str(evaluation_inputs["samples"]),
            "-o",
            str(tmp_path / "tasks"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = _environment(evaluation_inputs, fake_installation(tmp_path / "site"))
    command = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        "llava_star",
        "--model_args",
        f"pretrained={evaluation_inputs['model']},num_frames=4,max_new_tokens=12",
        "--tasks",
        ",".join(TASKS),
        "--include_path",
        bound,
        "--limit",
        "2",
        "--output_path",
        str(tmp_path / "out"),
    ]
    completed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    results_files = list((tmp_path / "out").rglob("*_results.json"))
    assert completed.returncode == 0 and len(results_files) == 1, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads(results_files[0].read_text())["results"]
    assert set(results) == set(TASKS)
    assert {key.split(",")[0] for key in results["finediving_aqa"] if "stderr" not in key} - {
        "alias"
    } == FINEDIVING_METRICS
    for task in ("kinetics700_qa", "star_qa"):
        assert 0.0 <= results[task]["accuracy,none"] <= 1.0
    assert 0.0 <= results["finediving_aqa"]["parse_rate,none"] <= 1.0


def test_llava_star_eval_writes_the_metrics(evaluation_inputs, tmp_path):
    out = tmp_path / "eval"
    command = [
        sys.executable,
        "-m",
        "llava_star",
        "eval",
        "--model",
        str(evaluation_inputs["model"]),
        "--tasks",
        "video_star,llava_star_qa",
        "--samples",
        str(evaluation_inputs["samples"]),
        "--video-root",
        str(evaluation_inputs["videos"]),
        "-o",
        str(out),
        "--limit",
        "2",
        "--num-frames",
        "4",
        "--model-args",
        "max_new_tokens=12",
    ]
    env = _environment(evaluation_inputs)
    completed = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["tasks"]) == {*TASKS, "video_star", "llava_star_qa"}
    assert report["config"]["tasks"] == ["video_star", "llava_star_qa"] and report["config"]["limit"] == 2
    assert set(report["tasks"]["finediving_aqa"]) == FINEDIVING_METRICS
    assert 0.0 <= report["tasks"]["video_star"]["accuracy"] <= 1.0
    assert report["num_docs"] == {"kinetics700_qa": 3, "finediving_aqa": 3, "star_qa": 2, "llava_star_qa": 8}
    logged = list((out / "lmms_eval").rglob("*star_qa*.jsonl"))
    assert logged, "per-answer logs (--log_samples) are missing"


def test_llava_star_eval_fails_loudly_when_no_video_decodes(evaluation_inputs, tmp_path):
    """A wrong video root: every doc unreadable is an error, not a score of zero."""
    out = tmp_path / "eval"
    empty_videos = tmp_path / "no_videos"
    empty_videos.mkdir()
    command = [
        sys.executable,
        "-m",
        "llava_star",
        "eval",
        "--model",
        str(evaluation_inputs["model"]),
        "--tasks",
        "star_qa",
        "--samples",
        str(evaluation_inputs["samples"]),
        "--video-root",
        str(empty_videos),
        "-o",
        str(out),
        "--limit",
        "1",
        "--num-frames",
        "2",
    ]
    completed = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=_environment(evaluation_inputs),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "none of the 1 videos could be decoded" in completed.stderr and "--video-root" in completed.stderr
    assert not (out / "metrics.json").exists()


def test_one_unreadable_video_is_scored_as_failed_and_counted(evaluation_inputs, tmp_path):
    # on 50b0a39 one missing video failed the whole lmms-eval run
    samples = [sample for sample in _samples() if sample["source"] == "kinetics700"]
    samples.append({**samples[0], "id": "k700-missing", "video": "kinetics/missing.mp4"})
    samples_path = tmp_path / "test.jsonl"
    samples_path.write_text("".join(json.dumps(sample) + "\n" for sample in samples), encoding="utf-8")
    out = tmp_path / "eval"
    command = [
        sys.executable,
        "-m",
        "llava_star",
        "eval",
        "--model",
        str(evaluation_inputs["model"]),
        "--tasks",
        "kinetics700_qa",
        "--samples",
        str(samples_path),
        "--video-root",
        str(evaluation_inputs["videos"]),
        "-o",
        str(out),
        "--num-frames",
        "2",
        "--model-args",
        "max_new_tokens=8",
    ]
    completed = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=_environment(evaluation_inputs),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    assert report["unreadable_videos"] == 1 and report["num_docs"] == {"kinetics700_qa": 4}
    assert [
        json.loads(line)["video"].endswith("missing.mp4")
        for line in (out / "unreadable_videos.jsonl").read_text().splitlines()
    ] == [True]


def test_llava_star_eval_on_the_synthetic_test_split(tmp_path):
    """What the cycle runs: the synthetic test split, scored on every label, with a Qwen2-VL-family model."""
    from llava_star.datasets.synthetic import make_synthetic_dataset
    from llava_star.models.tiny import build_tiny_model

    synthetic = make_synthetic_dataset(tmp_path / "synthetic", num_videos=6, seed=0)
    model = build_tiny_model("qwen2_vl", tmp_path / "tiny_qwen2_vl")
    out = tmp_path / "eval"
    command = [
        sys.executable,
        "-m",
        "llava_star",
        "eval",
        "--model",
        str(model),
        "--tasks",
        "llava_star_qa,kinetics700_qa",
        "--samples",
        str(synthetic.test),
        "--video-root",
        str(synthetic.root),
        "-o",
        str(out),
        "--limit",
        "2",
        "--num-frames",
        "4",
        "--model-args",
        "max_new_tokens=8",
    ]
    env = _environment({"videos": synthetic.root, "root": tmp_path})
    completed = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["tasks"]) == {"llava_star_qa", "kinetics700_qa"}
    assert report["num_docs"]["llava_star_qa"] == synthetic.num_samples - len(synthetic.train.read_text().splitlines())
    assert 0.0 <= report["tasks"]["llava_star_qa"]["accuracy"] <= 1.0
