"""Every shipped DeepSpeed config is accepted by DeepSpeed's own config class once the
Trainer has filled its "auto" values, exactly as `Trainer(deepspeed=...)` does."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
CONFIGS = sorted(SCRIPTS.glob("zero*.json"))


def test_the_configs_of_llava_and_video_llava_are_shipped():
    # Video-LLaVA's finetune.sh / finetune_lora.sh name zero2_offload.json, LLaVA's zero3_offload.json
    assert [path.name for path in CONFIGS] == ["zero2.json", "zero2_offload.json", "zero3.json", "zero3_offload.json"]


def find_auto(node, prefix=""):
    if node == "auto":
        return [prefix]
    if isinstance(node, dict):
        return [key for name, value in node.items() for key in find_auto(value, f"{prefix}.{name}".lstrip("."))]
    return []


@pytest.mark.slow  # importing deepspeed takes ~7 s
@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_deepspeed_parses_the_config_after_the_trainer_fills_auto(path, tmp_path):
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    raw = json.loads(path.read_text())
    assert find_auto(raw), "the Trainer should fill batch sizes, precision and buckets"
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=2e-5,
        warmup_steps=0.03,
        bf16=True,
        use_cpu=True,
        report_to=[],
    )
    hf_config = HfTrainerDeepSpeedConfig(str(path))
    try:
        hf_config.trainer_config_process(args)
        model = SimpleNamespace(config=SimpleNamespace(hidden_size=64))
        hf_config.trainer_config_finalize(args, model, num_training_steps=100)
        assert find_auto(hf_config.config) == []
        parsed = DeepSpeedConfig(hf_config.config)
    finally:
        unset_hf_deepspeed_config()  # the Trainer keeps a global weakref; later tests must not see ZeRO-3
    assert parsed.train_micro_batch_size_per_gpu == 4
    assert parsed.gradient_accumulation_steps == 2
    assert parsed.bfloat16_config.enabled and not parsed.float16_config.enabled
    stage = raw["zero_optimization"]["stage"]
    assert parsed.zero_optimization_stage == stage
    if stage == 3:
        assert parsed.zero_config.gather_16bit_weights_on_model_save  # full weights in the saved checkpoint
    if "offload" in path.name:
        assert parsed.zero_config.offload_optimizer.device == "cpu"
    if "optimizer" not in raw and "offload" in path.name:
        # the Trainer's AdamW (with its parameter groups, e.g. --mm_projector_lr) runs on the
        # offloaded fp32 states, as in Video-LLaVA's runs; DeepSpeed refuses that unless told
        assert parsed.zero_force_ds_cpu_optimizer is False
    assert "scheduler" not in raw  # the Trainer's cosine schedule, not DeepSpeed's WarmupLR
