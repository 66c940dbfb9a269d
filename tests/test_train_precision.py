"""``--bf16`` without DeepSpeed trains what fp32 trains (mixed precision, fp32 master weights).

Before the fix ``--bf16`` loaded bf16 weights and the Trainer's AdamW updated them in bf16:
at lr 2e-5 most updates are below half a bf16 step of a weight of std 0.02 and round to
nothing (a tiny Video-LLaVA: 28.5% of the language model's entries moved, the loss fell
half as far as in fp32, the update's cosine with fp32's was 0.52). Each family here runs 30
steps at lr 2e-5 in fp32 and in bf16, from the same weights, on the same batches.
"""

from __future__ import annotations

import logging

import pytest

from llava_star.models.tiny import build_tiny_model

torch = pytest.importorskip("torch")
logger = logging.getLogger(__name__)

STEPS = 30
MIN_LOSS_DROP_RATIO = 0.8
MIN_UPDATE_COSINE = 0.95


def train(model, data, video_root, output, **extra):
    from llava_star.stages.train import TrainConfig, run

    config = TrainConfig(
        model=str(model),
        data=(str(data),),
        video_root=str(video_root),
        output_dir=str(output),
        max_steps=STEPS,
        per_device_train_batch_size=2,
        learning_rate=2e-5,
        warmup_ratio=0.0,
        lr_scheduler_type="constant",
        dataloader_num_workers=0,
        num_frames=4,
        seed=0,
        **extra,
    )
    return run(config)


def trained_update(base, output):
    """The flattened change of every language-model weight (the part the paper trains in full)."""
    from llava_star.models.loading import load_model
    from llava_star.training.parts import parameter_group

    before = load_model(str(base), device="cpu").model.state_dict()
    after = load_model(str(output), device="cpu", dtype="float32").model.state_dict()
    keys = sorted(key for key in before if parameter_group(key) == "language" and before[key].dim() == 2)
    return torch.cat([(after[key].float() - before[key].float()).flatten() for key in keys])


def loss_drop(losses):
    """Mean loss of the first five steps minus that of the last five (the same batches in both runs)."""
    return sum(losses[:5]) / 5 - sum(losses[-5:]) / 5


@pytest.mark.slow
@pytest.mark.parametrize("family", ["video_llava", "llava_next_video", "llava_onevision", "qwen2_vl"])
def test_bf16_mixed_precision_follows_fp32(family, train_json, synthetic_dataset, tmp_path):
    model = build_tiny_model(family, tmp_path / family)
    fp32 = train(model, train_json, synthetic_dataset.root, tmp_path / "fp32")
    bf16 = train(model, train_json, synthetic_dataset.root, tmp_path / "bf16", bf16=True)
    fp32_update, bf16_update = trained_update(model, tmp_path / "fp32"), trained_update(model, tmp_path / "bf16")
    cosine = torch.nn.functional.cosine_similarity(fp32_update, bf16_update, dim=0).item()
    ratio = loss_drop(bf16["losses"]) / loss_drop(fp32["losses"])
    moved = (bf16_update != 0).float().mean().item()
    logger.info(
        "%s: loss drop bf16/fp32 %.3f, update cosine %.4f, entries moved %.1f%%", family, ratio, cosine, 100 * moved
    )
    assert loss_drop(fp32["losses"]) > 0
    assert ratio >= MIN_LOSS_DROP_RATIO, f"{family}: bf16 dropped the loss {ratio:.2f} as far as fp32"
    assert cosine >= MIN_UPDATE_COSINE, f"{family}: bf16's update has cosine {cosine:.3f} with fp32's"
    assert moved > 0.99, f"{family}: bf16 moved {moved:.1%} of the language model's entries"


def test_without_deepspeed_the_trained_weights_are_fp32_and_the_frozen_ones_stay_bf16(tmp_path):
    from llava_star.models.loading import load_model
    from llava_star.training.config import TrainConfig, model_dtype
    from llava_star.training.parts import set_trainable
    from llava_star.training.precision import upcast_trained_weights

    config = TrainConfig(model="m", data=("d.json",), output_dir="o", bf16=True)
    loaded = load_model(str(build_tiny_model("video_llava", tmp_path / "m")), dtype=model_dtype(config), device="cpu")
    set_trainable(loaded.model, config)
    assert upcast_trained_weights(loaded.model) > 0
    dtypes = {(p.requires_grad, p.dtype) for p in loaded.model.parameters()}
    assert dtypes == {(True, torch.float32), (False, torch.bfloat16)}
