"""One evaluation protocol: the cycle's held-out step and the project's lmms-eval tasks ask
the same prompt with the same token budget and the same decoding, answer by answer.

Both paths run for real up to the model: the cycle's held-out step through the generate
stage, the lmms-eval task through lmms-eval's own task loading and request building and the
``llava_star`` adapter; only the answerer is a stand-in that records what it was asked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llava_star.config import load_config
from llava_star.generation.answerer import Reply
from llava_star.generation.options import GenerationOptions
from llava_star.generation.prompts import direct_prompt
from llava_star.media.encode import write_video
from llava_star.stages import cycle as cycle_stage
from llava_star.stages import generate as generate_stage
from llava_star.stages.cycle import CycleConfig

pytestmark = pytest.mark.slow  # importing lmms-eval's task machinery takes ~20 s

SAMPLES = [
    {
        "id": "k700-1",
        "video": "a.mp4",
        "question": "What is happening in this video?",
        "source": "kinetics700",
        "task": "action_recognition",
        "labels": [{"type": "class", "value": "abseiling"}],
    },
    {
        "id": "star-1",
        "video": "b.mp4",
        "start": 0.5,
        "end": 1.5,
        "source": "star",
        "task": "multiple_choice",
        "question": "Which object was tidied up by the person?\n(A) The blanket. (B) The clothes.",
        "labels": [{"type": "choice", "value": "B", "options": {"A": "The blanket.", "B": "The clothes."}}],
    },
]


class RecordingAnswerer:
    """Answers "B" and records each prompt with the budget and decoding it was asked under."""

    def __init__(self, options: GenerationOptions) -> None:
        self.max_new_tokens = options.max_new_tokens
        self.temperature = options.temperature
        self.asked: list[dict] = []

    def replies(self, prompts, videos):
        for prompt in prompts:
            self.asked.append(
                {"prompt": prompt, "max_new_tokens": self.max_new_tokens, "temperature": self.temperature}
            )
        return [Reply("The answer is B.") for _ in prompts]


@pytest.fixture
def answerers(monkeypatch):
    """Every answerer either path builds, in order; no model is loaded."""
    built: list[RecordingAnswerer] = []

    def build_answerer(model, options, *, backend, family, device):
        built.append(RecordingAnswerer(options))
        return built[-1]

    # where the stages and the lmms adapter look these up (both import them at module level)
    for module in ("llava_star.generation.backends", "llava_star.eval_tasks.lmms_adapter"):
        monkeypatch.setattr(f"{module}.build_answerer", build_answerer)
    for module in ("llava_star.models.loading", "llava_star.eval_tasks.lmms_adapter"):
        monkeypatch.setattr(f"{module}.model_family_and_type", lambda name: ("video_llava", "video_llava"))
    return built


def _held_out_step(tmp_path: Path, monkeypatch) -> tuple[dict, object]:
    """The cycle's held-out step on SAMPLES with sampling settings of its own: the generate
    stage runs for real; the lmms-eval step's config is kept, not run."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        write_video(videos / name, np.zeros((8, 32, 32, 3), dtype=np.uint8), fps=4)
    samples = tmp_path / "held_out.jsonl"
    samples.write_text("".join(json.dumps(sample) + "\n" for sample in SAMPLES))
    config = load_config(
        CycleConfig,
        None,
        [
            f"model={tmp_path}",
            f"samples={samples}",
            f"video_root={videos}",
            f"output_dir={tmp_path / 'run'}",
            f"eval.samples={samples}",
            "eval.lmms_tasks=[llava_star_qa]",
            "generate.max_new_tokens=77",
            "generate.temperature=0.7",
            "generate.num_frames=2",
            "generate.num_workers=0",
        ],
    )
    configs = {}

    def run_stage(stage, run, stage_config, launch_prefix, config_file):
        configs[stage] = stage_config
        if stage == "generate":
            return generate_stage.run(stage_config)
        return None

    monkeypatch.setattr(cycle_stage, "run_stage", run_stage)
    runner = cycle_stage.CycleRunner(config)
    result = runner.evaluate(runner.run_dir.baseline, str(tmp_path), 0)
    return result, configs["eval"]


def _lmms_eval_task(eval_config, monkeypatch, tmp_path: Path) -> list[dict]:
    """What the adapter is asked for each doc of the task, as ``llava-star eval`` would run it."""
    from lmms_eval.tasks import TaskManager, get_task_dict

    from llava_star.eval_tasks.docs import bind_tasks
    from llava_star.eval_tasks.lmms_adapter import LlavaStarVideo
    from llava_star.stages.evaluate import _model_args

    monkeypatch.setenv("LLAVA_STAR_VIDEO_DIR", str(eval_config.video_root))
    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "cache"))
    folder, _ = bind_tasks(eval_config.samples, tmp_path / "tasks")
    ((name, task),) = get_task_dict(
        list(eval_config.tasks), TaskManager(include_path=str(folder), include_defaults=False)
    ).items()
    task.build_all_requests(limit=None, rank=0, world_size=1)
    adapter = LlavaStarVideo.create_from_arg_string(_model_args(eval_config), {"batch_size": eval_config.batch_size})
    adapter.task_dict = {name: task.dataset}
    assert adapter.generate_until(list(task.instances)) == ["The answer is B."] * len(task.instances)
    return adapter.answerer.asked


def test_held_out_step_and_lmms_eval_tasks_ask_the_same(tmp_path, monkeypatch, answerers):
    result, eval_config = _held_out_step(tmp_path, monkeypatch)
    (held_out,) = answerers
    lmms_asked = _lmms_eval_task(eval_config, monkeypatch, tmp_path)
    assert sorted(lmms_asked, key=lambda asked: asked["prompt"]) == sorted(
        held_out.asked, key=lambda asked: asked["prompt"]
    )
    # the cycle's own settings reach both paths; its sampling temperature does not
    assert {asked["max_new_tokens"] for asked in held_out.asked} == {77}
    assert {asked["temperature"] for asked in held_out.asked} == {0.0}
    assert result["protocol"] == {"prompt": "direct", "max_new_tokens": 77, "temperature": 0.0, "num_frames": 2}


def test_without_the_cycle_both_paths_default_to_the_generation_options(tmp_path, monkeypatch, answerers):
    """``llava-star eval`` alone and the cycle's defaults: GenerationOptions' budget, nowhere restated."""
    from llava_star.stages.evaluate import EvalConfig

    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(sample) + "\n" for sample in SAMPLES))
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        write_video(videos / name, np.zeros((8, 32, 32, 3), dtype=np.uint8), fps=4)
    eval_config = EvalConfig(
        model=str(tmp_path), tasks=("star_qa",), output_dir=tmp_path / "eval", samples=samples, video_root=videos
    )
    (asked,) = _lmms_eval_task(eval_config, monkeypatch, tmp_path)
    cycle_default = load_config(CycleConfig, None, ["model=m", "samples=s", "video_root=v", "output_dir=o"]).generate
    assert asked == {
        "prompt": direct_prompt(SAMPLES[1]["question"]),  # no task suffix: the held-out step asks no suffix either
        "max_new_tokens": cycle_default.max_new_tokens,
        "temperature": 0.0,
    }
    assert cycle_default.max_new_tokens == GenerationOptions().max_new_tokens
