"""lmms-eval's built-in wrappers run the project's tasks on the right frames (slow).

For each wrapper users run, ``llava-star eval --lmms-model WRAPPER`` (lmms-eval 0.7.3 with
the runtime patches of ``patches/``) answers ``kinetics700_qa``, ``star_qa`` and
``finediving_aqa`` on a tiny checkpoint of its family, against stamped media
(:mod:`stamped_media`): every frame says its number, and a spy (``tests/frame_spy``) reads
the numbers of the frames each video processor received. A whole video's frames span
0-59, the STAR clip's exactly its range (20-34), the FineDiving folder's its frames
(100-123). Before the tasks cut clip files, ``qwen2_vl`` read the clip doc's whole video
and skipped the folder; before the patches, five of these runs crashed (and exited 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from stamped_media import make_stamped_media

pytest.importorskip("lmms_eval", reason="the eval extra is not installed")
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
SPY = Path(__file__).resolve().parent / "frame_spy"
TASKS = ("kinetics700_qa", "star_qa", "finediving_aqa")

# (wrapper, --force-simple, tiny family, --model-args that run it on a CPU)
WRAPPERS = {
    "qwen2_vl": ("qwen2_vl", False, "qwen2_vl", "device=cpu,device_map=cpu"),
    "qwen2_5_vl (chat)": ("qwen2_5_vl", False, "qwen2_5_vl", "device=cpu,device_map=cpu"),
    "qwen2_5_vl (simple)": ("qwen2_5_vl", True, "qwen2_5_vl", "device=cpu,device_map=cpu"),
    "llava_hf (chat)": ("llava_hf", False, "llava_onevision", "device=cpu"),
    "llava_hf (simple)": ("llava_hf", True, "llava_onevision", "device=cpu"),
    # device_map=auto: otherwise the wrapper puts the model on cuda:0 whatever `device` says
    "video_llava": ("video_llava", False, "video_llava", "device=cpu,device_map=auto"),
    "huggingface": ("huggingface", False, "qwen2_5_vl", "device=cpu,device_map=cpu"),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from llava_star.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("wrappers")
    media = make_stamped_media(root)
    families = {family for _, _, family, _ in WRAPPERS.values()}
    models = {family: build_tiny_model(family, root / f"tiny_{family}") for family in families}
    return {"root": root, "media": media, "models": models}


def _run_eval(inputs: dict, out: Path, wrapper: str, force_simple: bool, family: str, model_args: str, spy: Path):
    command = [sys.executable, "-m", "llava_star", "eval", "--lmms-model", wrapper, "--model"]
    command += [str(inputs["models"][family]), "--model-args", model_args, "--tasks", ",".join(TASKS)]
    command += ["--samples", str(inputs["media"].samples), "--video-root", str(inputs["media"].videos)]
    command += ["--clip-cache", str(out.parent / "clips"), "-o", str(out), "--max-new-tokens", "6"]
    command += ["--num-frames", "8"] + (["--force-simple"] if force_simple else [])
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(SPY), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        FRAME_SPY_OUT=str(spy),
        HF_HUB_OFFLINE="1",
        LMMS_EVAL_DATASETS_CACHE=str(out.parent / "datasets_cache"),
    )
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.parametrize("name", list(WRAPPERS))
def test_each_wrapper_answers_every_task_from_the_docs_frames(inputs, tmp_path, name):
    wrapper, force_simple, family, model_args = WRAPPERS[name]
    spy = tmp_path / "frames.jsonl"
    completed = _run_eval(inputs, tmp_path / "eval", wrapper, force_simple, family, model_args, spy)
    log = tmp_path / "eval" / "lmms_eval.log"
    assert completed.returncode == 0, completed.stderr[-3000:] + (log.read_text()[-3000:] if log.exists() else "")
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(report["tasks"]) == set(TASKS) and report["lmms_model"] == wrapper
    # one video per doc; lmms-eval orders requests its own way, so they are matched by range
    stamps = sorted((json.loads(line)["stamps"] for line in spy.read_text().splitlines()), key=lambda s: s[0])
    media = inputs["media"]
    expected_spans = sorted([media.whole_range, media.clip_range, media.folder_range], key=lambda r: r.start)
    assert len(stamps) == 3, stamps
    for numbers, span in zip(stamps, expected_spans):
        assert set(numbers) <= set(span), (name, numbers, span)
        assert (numbers[0], numbers[-1]) == (span[0], span[-1]), (name, numbers, span)  # the whole range, no more


def test_a_crashed_wrapper_makes_llava_star_eval_fail(inputs, tmp_path):
    """lmms-eval 0.7.3 logs a crashed run and exits 0; ``llava-star eval`` exits non-zero."""
    completed = _run_eval(
        inputs, tmp_path / "eval", "qwen2_vl", False, "qwen2_vl", "device=cpu,not_an_argument=1", tmp_path / "spy"
    )
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "lmms-eval exited with status 1" in completed.stderr and "Unexpected kwargs" in completed.stderr
    assert not (tmp_path / "eval" / "metrics.json").exists()
