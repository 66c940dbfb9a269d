"""A run resumed from a mid-run checkpoint ends with the weights of the uninterrupted run.

Each case trains 6 steps twice from the same tiny model: once straight through (saving
``checkpoint-3`` on the way), once resumed from that checkpoint. The final weights must
agree to 1e-5 (float32, CPU): before the fix, transformers 5.23's resume loaded none of a
LLaVA-family checkpoint's weights and the resumed run went on from the base model, and
with LoRA the projector (trained in full beside the adapters) went back to its base
weights. The learning rate is high enough (1e-3) that a lost update shows as 1e-3 or more.
DeepSpeed cases run ``llava-star train`` in one DeepSpeed process, as a launcher would.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from tiny_model_helpers import run_command, single_process_env

from llava_star.models.tiny import build_tiny_model

torch = pytest.importorskip("torch")
logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5
STEPS, RESUME_AT = 6, 3


def options(model, data, video_root, output, **extra):
    base = {
        "model": str(model),
        "data": [str(data)],
        "video_root": str(video_root),
        "output_dir": str(output),
        "max_steps": STEPS,
        "per_device_train_batch_size": 2,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "dataloader_num_workers": 0,
        "num_frames": 4,
        "seed": 0,
        "save_strategy": "steps",
        "save_steps": RESUME_AT,
        "save_total_limit": None,
    }
    base.update(extra)
    return base


def train_in_process(values):
    from llava_star.stages.train import make_config, run

    return run(make_config(values))


def train_in_one_deepspeed_process(values):
    """``python -m llava_star train`` as one DeepSpeed rank (the environment torchrun sets)."""
    config = Path(values["output_dir"] + ".yaml")
    config.write_text(json.dumps(values))  # JSON is YAML
    run_command([sys.executable, "-m", "llava_star", "train", "--config", str(config)], REPO, single_process_env())
    return json.loads((Path(values["output_dir"]) / "train_summary.json").read_text())


def final_weights(directory):
    """The weights as ``from_pretrained`` loads them (ZeRO-3 saves the language model under
    transformers' legacy names, which the loader maps)."""
    from llava_star.models.loading import load_model

    return load_model(str(directory), device="cpu").model.state_dict()


def weight_names(directory):
    from safetensors import safe_open

    with safe_open(str(Path(directory) / "model.safetensors"), "pt") as handle:
        return set(handle.keys())


def max_difference(first, second):
    assert first.keys() == second.keys()
    return max((first[key].float() - second[key].float()).abs().max().item() for key in first)


def resumed_and_uninterrupted(train, model, data, video_root, tmp_path, **extra):
    """(uninterrupted summary, resumed summary, max weight difference, max moved by training)."""
    straight = train(options(model, data, video_root, tmp_path / "straight", **extra))
    checkpoint = tmp_path / "straight" / f"checkpoint-{RESUME_AT}"
    assert (checkpoint / "trainer_state.json").is_file()
    resumed = train(
        options(model, data, video_root, tmp_path / "resumed", resume_from_checkpoint=str(checkpoint), **extra)
    )
    straight_weights, resumed_weights = final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed")
    moved = max_difference(straight_weights, final_weights(model))
    difference = max_difference(straight_weights, resumed_weights)
    logger.info(
        "%s %s: resumed vs uninterrupted max weight difference %.3g (training moved them by %.3g)",
        Path(model).name,
        extra or "",
        difference,
        moved,
    )
    return straight, resumed, difference, moved


@pytest.mark.slow
@pytest.mark.parametrize("family", ["video_llava", "llava_next_video", "llava_onevision", "qwen2_vl"])
def test_resumed_run_ends_with_the_uninterrupted_weights(family, train_json, synthetic_dataset, tmp_path):
    model = build_tiny_model(family, tmp_path / family)
    straight, resumed, difference, moved = resumed_and_uninterrupted(
        train_in_process, model, train_json, synthetic_dataset.root, tmp_path
    )
    assert moved > 1e-3  # training changed the weights enough for a lost update to show
    assert difference <= TOLERANCE, f"{family}: resumed weights differ by {difference:.3g}"
    assert resumed["losses"] == pytest.approx(straight["losses"], abs=1e-5)  # the history comes with the checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("family", ["video_llava", "qwen2_vl"])
def test_resumed_lora_run_keeps_its_adapters_and_its_projector(family, train_json, synthetic_dataset, tmp_path):
    pytest.importorskip("peft")
    model = build_tiny_model(family, tmp_path / family)
    straight, resumed, difference, _ = resumed_and_uninterrupted(
        train_in_process,
        model,
        train_json,
        synthetic_dataset.root,
        tmp_path,
        lora=True,
        lora_r=4,
        lora_alpha=8,
        projector_learning_rate=1e-3,
    )
    assert difference <= TOLERANCE, f"{family} LoRA: resumed (merged) weights differ by {difference:.3g}"
    assert resumed["losses"] == pytest.approx(straight["losses"], abs=1e-5)  # the history comes with the checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_resumed_deepspeed_run_ends_with_the_uninterrupted_weights(zero, train_json, synthetic_dataset, tmp_path):
    pytest.importorskip("deepspeed")
    model = build_tiny_model("video_llava", tmp_path / "video_llava")
    deepspeed = str(REPO / "scripts" / f"{zero}.json")
    straight, resumed, difference, moved = resumed_and_uninterrupted(
        train_in_one_deepspeed_process, model, train_json, synthetic_dataset.root, tmp_path, deepspeed=deepspeed
    )
    assert moved > 1e-3
    assert difference <= TOLERANCE, f"{zero}: resumed weights differ by {difference:.3g}"
    # saved under the hub's names, as the base (ZeRO-3 wrote language_model.model.model.*: vLLM cannot read it)
    assert weight_names(tmp_path / "straight") == weight_names(model)
    assert resumed["losses"] == pytest.approx(straight["losses"], abs=1e-5)  # the history comes with the checkpoint


def test_a_checkpoint_of_another_model_is_refused_by_name(tmp_path):
    """A checkpoint whose weights do not fit is an error naming it, never a silent partial load."""
    from llava_star.models.loading import load_model
    from llava_star.training.resume import CheckpointError, load_model_weights

    video_llava = load_model(str(build_tiny_model("video_llava", tmp_path / "video_llava")), device="cpu").model
    qwen = build_tiny_model("qwen2_vl", tmp_path / "qwen2_vl")
    with pytest.raises(CheckpointError, match="qwen2_vl.*no place for"):
        load_model_weights(video_llava, qwen)
