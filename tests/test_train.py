"""Fine-tuning end to end on CPU: synthetic videos -> generation shards -> export -> Trainer
-> a checkpoint that reloads and generates. LoRA, LLaVA's train_mem.py flags, DeepSpeed
ZeRO single-process and a 2-process torchrun on gloo."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_model_helpers import free_port, run_command, single_process_env

from llava_star.stages.export import main as export_main
from llava_star.stages.train import FAILURES_FILE, SUMMARY_FILE, TrainConfig, run
from llava_star.training.parts import parameter_group

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]


def data_with_a_corrupt_video(train_json, synthetic_dataset, tmp_path):
    """The exported data plus one record whose video is garbage: it must be reported, not replaced."""
    records = json.loads(train_json.read_text())
    videos = tmp_path / "videos"
    (videos / "videos").mkdir(parents=True)
    for name in {record["video"] for record in records}:
        shutil.copyfile(synthetic_dataset.root / name, videos / name)
    (videos / "videos" / "corrupt.mp4").write_bytes(b"\x00garbage" * 64)
    records.append(dict(records[0], id="corrupt-video", video="videos/corrupt.mp4"))
    data = tmp_path / "train.json"
    data.write_text(json.dumps(records))
    return data, videos


def parameters_by_group(model):
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def changed_groups(before, after):
    changed = {"vision": False, "projector": False, "language": False}
    for name, value in before.items():
        if not torch.equal(value, after[name]):
            changed[parameter_group(name)] = True
    return changed


def load(path):
    from llava_star.models.loading import load_model

    return load_model(path, device="cpu")


def generate_a_few_tokens(loaded, video_path):
    from llava_star.media.video import read_frames
    from llava_star.models.inputs import build_inputs, video_conversation

    frames = read_frames(video_path, 8)
    inputs = build_inputs(
        loaded.processor, [video_conversation("What colour is it?")], [frames], add_generation_prompt=True
    )
    with torch.no_grad():
        output = loaded.model.generate(**inputs.batch, max_new_tokens=4, do_sample=False)
    return output[0, inputs.batch["input_ids"].shape[1] :]


@pytest.mark.slow
def test_training_lowers_the_loss_reports_bad_videos_and_reloads(tiny_model, train_json, synthetic_dataset, tmp_path):
    data, videos = data_with_a_corrupt_video(train_json, synthetic_dataset, tmp_path)
    output = tmp_path / "checkpoint"
    config = TrainConfig(
        model=str(tiny_model),
        data=(str(data),),
        video_root=str(videos),
        output_dir=str(output),
        max_steps=20,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        per_device_train_batch_size=4,
        dataloader_num_workers=2,
        seed=0,
    )
    summary = run(config)
    losses = summary["losses"]
    assert len(losses) == 20 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2
    assert summary["failures"] >= 1  # reported each time the sampler reaches it, never replaced
    reported = {json.loads(line)["id"] for line in (output / FAILURES_FILE).read_text().splitlines()}
    assert reported == {"corrupt-video"}
    assert json.loads((output / SUMMARY_FILE).read_text())["global_step"] == 20
    # the vision tower stays frozen; projector and language model learn (the paper's recipe)
    before, after = parameters_by_group(load(tiny_model).model), parameters_by_group(load(output).model)
    assert changed_groups(before, after) == {"vision": False, "projector": True, "language": True}
    # the checkpoint is a plain from_pretrained directory (model + processor) that generates
    reloaded = load(output)
    assert reloaded.family == "video_llava"
    assert len(generate_a_few_tokens(reloaded, synthetic_dataset.root / "videos" / "synthetic-00000.mp4")) >= 1
    assert json.loads((output / "llava_star_train_config.json").read_text())["max_steps"] == 20


def mixed_instruction_data(tmp_path, count=6):
    """LLaVA-665K-like records to mix in: images (one missing) and text-only conversations."""
    from PIL import Image

    images = tmp_path / "images"
    (images / "coco").mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = []
    for index in range(count):
        name = f"coco/{index:012d}.jpg"
        Image.fromarray(rng.integers(0, 256, (24 + 4 * index, 40, 3), dtype=np.uint8)).save(images / name)
        records.append(
            {
                "id": f"image-{index}",
                "image": name,
                "conversations": [
                    {"from": "human", "value": "What colour is the picture?\n<image>"},
                    {"from": "gpt", "value": "It is red."},
                ],
            }
        )
        records.append(
            {
                "id": f"text-{index}",
                "conversations": [
                    {"from": "human", "value": "Is the answer yes?"},
                    {"from": "gpt", "value": "Yes, the answer is yes."},
                ],
            }
        )
    records.append(
        {
            "id": "missing-image",
            "image": "coco/missing.jpg",
            "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A star."}],
        }
    )
    path = tmp_path / "llava_mix.json"
    path.write_text(json.dumps(records))
    return path, images


@pytest.mark.slow
def test_training_on_the_papers_mixture_of_video_image_and_text_records(
    tiny_model, train_json, synthetic_dataset, tmp_path
):
    """Exported video answers + mixed-in image and text-only instruction data, images decoded in workers."""
    mix, images = mixed_instruction_data(tmp_path)
    data = tmp_path / "train.json"
    gen_dir = train_json.parent / "gen"
    assert export_main([str(gen_dir), "-o", str(data), "--mix", str(mix)]) == 0
    kinds = {("video" in r) + 2 * ("image" in r) for r in json.loads(data.read_text())}
    assert kinds == {0, 1, 2}  # text-only, video, image
    output = tmp_path / "checkpoint"
    config = TrainConfig(
        model=str(tiny_model),
        data=(str(data),),
        video_root=str(synthetic_dataset.root),
        image_root=str(images),
        output_dir=str(output),
        max_steps=12,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        per_device_train_batch_size=4,
        dataloader_num_workers=2,
        seed=0,
    )
    summary = run(config)
    losses = summary["losses"]
    assert summary["global_step"] == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    reported = [json.loads(line) for line in (output / FAILURES_FILE).read_text().splitlines()]
    assert {line["id"] for line in reported} == {"missing-image"}
    assert "coco/missing.jpg" in reported[0]["reason"] and reported[0]["image"] == "coco/missing.jpg"
    before, after = parameters_by_group(load(tiny_model).model), parameters_by_group(load(output).model)
    assert changed_groups(before, after) == {"vision": False, "projector": True, "language": True}
    assert len(generate_a_few_tokens(load(output), synthetic_dataset.root / "videos" / "synthetic-00000.mp4")) >= 1


@pytest.mark.slow
def test_lora_is_merged_into_a_plain_checkpoint(tiny_model, train_json, synthetic_dataset, tmp_path):
    pytest.importorskip("peft")
    from safetensors import safe_open

    output = tmp_path / "lora"
    config = TrainConfig(
        model=str(tiny_model),
        data=(str(train_json),),
        video_root=str(synthetic_dataset.root),
        output_dir=str(output),
        max_steps=3,
        learning_rate=1e-2,
        lora=True,
        lora_r=4,
        lora_alpha=8,
        per_device_train_batch_size=2,
        dataloader_num_workers=0,
    )
    summary = run(config)
    assert summary["trainable_parameters"]["lora"] > 0 and summary["trainable_parameters"]["language"] == 0
    with safe_open(str(output / "model.safetensors"), "pt") as weights:
        assert not [key for key in weights.keys() if "lora_" in key or "base_layer" in key]  # noqa: SIM118 (safe_open is not iterable)
    before, after = parameters_by_group(load(tiny_model).model), parameters_by_group(load(output).model)
    assert changed_groups(before, after) == {"vision": False, "projector": True, "language": True}


@pytest.mark.parametrize("placeholder", [False, True], ids=["pad-token", "placeholder-example"])
def test_a_batch_whose_samples_all_failed_learns_nothing(
    tiny_model, train_json, synthetic_dataset, tmp_path, placeholder
):
    """With a placeholder example (what training uses) the step still runs the vision tower."""
    from transformers import TrainingArguments

    from llava_star.training.data import ConversationDataset, ExampleSettings, FailedSample, PaddingCollator
    from llava_star.training.data_lists import load_records
    from llava_star.training.trainer import ConversationTrainer

    loaded = load(tiny_model)
    model = loaded.model
    model.train()
    examples = None
    if placeholder:
        settings = ExampleSettings(video_root=str(synthetic_dataset.root), num_frames=8, model_max_length=4096)
        dataset = ConversationDataset(load_records([str(train_json)]), loaded.processor, settings)
        examples = dataset.usable_example_of_each_kind()
    tower_calls = []
    model.model.video_tower.register_forward_hook(lambda *_: tower_calls.append(1))
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    trainer = ConversationTrainer(model=model, args=args)
    batch = PaddingCollator(pad_token_id=0, placeholders=examples)([FailedSample("video"), FailedSample("video")])
    assert ("pixel_values_videos" in batch) is placeholder
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    assert loss.item() == 0.0 and len(tower_calls) == int(placeholder)
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_the_parameter_anchor_gives_every_trainable_media_parameter_a_zero_gradient(tiny_model):
    from llava_star.training.parts import parameter_anchor

    model = load(tiny_model).model
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(parameter_group(name) != "vision")
    anchor = parameter_anchor(model)
    assert anchor.item() == 0.0
    anchor.backward()
    for name, parameter in model.named_parameters():
        if parameter_group(name) == "projector":
            assert parameter.grad is not None and not parameter.grad.any(), name
        else:  # frozen, or the language model, which every batch runs
            assert parameter.grad is None, name


@pytest.mark.slow
def test_train_mem_script_runs_with_llava_flags(tiny_model, train_json, synthetic_dataset, tmp_path):
    output = tmp_path / "llava_flags"
    command = [
        sys.executable,
        str(REPO / "scripts" / "train_mem.py"),
        "--model_name_or_path",
        str(tiny_model),
        "--version",
        "v1",
        "--data_path",
        str(train_json),
        "--video_folder",
        str(synthetic_dataset.root),
        "--mm_projector_type",
        "mlp2x_gelu",
        "--mm_use_im_start_end",
        "False",
        "--image_aspect_ratio",
        "pad",
        "--group_by_modality_length",
        "True",
        "--bf16",
        "False",
        "--tf32",
        "False",
        "--output_dir",
        str(output),
        "--num_train_epochs",
        "1",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "1",
        "--evaluation_strategy",
        "no",
        "--save_strategy",
        "no",
        "--learning_rate",
        "2e-5",
        "--weight_decay",
        "0.",
        "--warmup_ratio",
        "0.03",
        "--lr_scheduler_type",
        "cosine",
        "--logging_steps",
        "1",
        "--model_max_length",
        "2048",
        "--gradient_checkpointing",
        "True",
        "--dataloader_num_workers",
        "0",
        "--lazy_preprocess",
        "True",
        "--report_to",
        "none",
        "--max_grad_norm",
        "1.0",
    ]
    run_command(command, tmp_path)
    summary = json.loads((output / SUMMARY_FILE).read_text())
    assert summary["global_step"] == 2
    config = json.loads((output / "llava_star_train_config.json").read_text())
    assert config["gradient_checkpointing"] and config["trainer_args"] == {"max_grad_norm": 1.0}
    assert (output / "model.safetensors").exists() and (output / "processor_config.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_deepspeed_zero_single_process(tiny_model, train_json, synthetic_dataset, tmp_path, zero):
    """ZeRO through the Trainer on CPU (the first run JIT-builds DeepSpeed's CPU op, ~45 s, cached)."""
    pytest.importorskip("deepspeed")
    output = tmp_path / zero
    command = [
        sys.executable,
        "-m",
        "llava_star",
        "train",
        "--model",
        str(tiny_model),
        "--data",
        str(train_json),
        "--video-root",
        str(synthetic_dataset.root),
        "-o",
        str(output),
        "--max-steps",
        "3",
        "--batch-size",
        "2",
        "--num-workers",
        "0",
        "--learning-rate",
        "1e-3",
        "--deepspeed",
        str(REPO / "scripts" / f"{zero}.json"),
    ]
    run_command(command, tmp_path, single_process_env())
    summary = json.loads((output / SUMMARY_FILE).read_text())
    assert summary["deepspeed_stage"] == int(zero[-1]) and summary["deepspeed_enabled"]
    assert summary["trainable_parameters"]["language"] > 0 and summary["trainable_parameters"]["vision"] == 0
    assert summary["global_step"] == 3
    before, after = parameters_by_group(load(tiny_model).model), parameters_by_group(load(output).model)
    assert changed_groups(before, after) == {"vision": False, "projector": True, "language": True}


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_two_processes_on_gloo_with_zero2(tiny_model, train_json, synthetic_dataset, tmp_path):
    pytest.importorskip("deepspeed")
    output = tmp_path / "torchrun"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "llava_star",
        "train",
        "--model",
        str(tiny_model),
        "--data",
        str(train_json),
        "--video-root",
        str(synthetic_dataset.root),
        "-o",
        str(output),
        "--max-steps",
        "3",
        "--batch-size",
        "2",
        "--num-workers",
        "0",
        "--deepspeed",
        str(REPO / "scripts" / "zero2.json"),
    ]
    run_command(command, tmp_path, {"OMP_NUM_THREADS": "1"})
    summary = json.loads((output / SUMMARY_FILE).read_text())
    assert summary["global_step"] == 3 and summary["world_size"] == 2 and summary["deepspeed_enabled"]
    assert load(output).family == "video_llava"


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_two_processes_with_zero3_and_a_corrupt_video(train_json, synthetic_dataset, tiny_model, tmp_path):
    """ZeRO-3 with gradient checkpointing, as the GPU recipe runs it. ZeRO-3 partitions the model as it loads, counting ranks through DeepSpeed's own process
    group (on CPU it used to see one rank: "train_batch_size is not equal to ..."). A batch
    whose only video is corrupt becomes the placeholder example, so both ranks still run the
    vision tower at that step (a text-only stand-in stops gloo with a collective mismatch)."""
    pytest.importorskip("deepspeed")
    data, videos = data_with_a_corrupt_video(train_json, synthetic_dataset, tmp_path)
    records = len(json.loads(data.read_text()))
    output = tmp_path / "zero3"
    steps = -(-records // 2)  # one epoch: every record, the corrupt one included, is met once
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "llava_star",
        "train",
        "--model",
        str(tiny_model),
        "--data",
        str(data),
        "--video-root",
        str(videos),
        "-o",
        str(output),
        "--max-steps",
        str(steps),
        "--batch-size",
        "1",
        "--num-workers",
        "0",
        "--deepspeed",
        str(REPO / "scripts" / "zero3.json"),
        "--gradient-checkpointing",
    ]
    run_command(command, tmp_path, {"OMP_NUM_THREADS": "1"})
    summary = json.loads((output / SUMMARY_FILE).read_text())
    assert summary["global_step"] == steps and summary["world_size"] == 2 and summary["deepspeed_stage"] == 3
    assert summary["failures"] == 1 and "corrupt-video" in (output / FAILURES_FILE).read_text()
    assert json.loads((output / "llava_star_train_config.json").read_text())["gradient_checkpointing"]
    before, after = parameters_by_group(load(tiny_model).model), parameters_by_group(load(output).model)
    assert changed_groups(before, after) == {"vision": False, "projector": True, "language": True}


def test_zero3_over_several_processes_groups_mixed_media():
    from llava_star.training.deepspeed import group_by_media_needed

    config = TrainConfig(model="m", data=("d.json",), output_dir="o")
    videos = ["video", "video"]
    mixed = [*videos, "text"]
    assert group_by_media_needed(config, 3, 2, mixed)
    assert not group_by_media_needed(config, 3, 2, videos)  # one kind: nothing to group
    assert not group_by_media_needed(config, 2, 2, mixed)  # ZeRO-2: the parameter anchor keeps ranks in step
    assert not group_by_media_needed(config, 3, 1, mixed)
    assert group_by_media_needed(
        TrainConfig(model="m", data=("d.json",), output_dir="o", group_by_media=True), 0, 1, videos
    )


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_torchrun_two_processes_on_mixed_media(tiny_model, train_json, synthetic_dataset, tmp_path, zero):
    """Video, image and text-only records, one a step per rank. ZeRO-2: ranks meet different
    media at the same step, and without the parameter anchor gloo stops with a collective
    mismatch. ZeRO-3: batches of one kind per step (group_by_media), without which it stops too."""
    pytest.importorskip("deepspeed")
    mix, images = mixed_instruction_data(tmp_path)
    data = tmp_path / "train.json"
    assert export_main([str(train_json.parent / "gen"), "-o", str(data), "--mix", str(mix)]) == 0
    output = tmp_path / "torchrun_mixed"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "llava_star",
        "train",
        "--model",
        str(tiny_model),
        "--data",
        str(data),
        "--video-root",
        str(synthetic_dataset.root),
        "--image-folder",
        str(images),
        "-o",
        str(output),
        "--max-steps",
        "8",
        "--batch-size",
        "1",
        "--num-workers",
        "0",
        "--deepspeed",
        str(REPO / "scripts" / f"{zero}.json"),
    ]
    run_command(command, tmp_path, {"OMP_NUM_THREADS": "1"})
    summary = json.loads((output / SUMMARY_FILE).read_text())
    assert summary["global_step"] == 8 and summary["world_size"] == 2 and summary["deepspeed_enabled"]
    assert summary["deepspeed_stage"] == int(zero[-1]) and summary["group_by_media"] == (zero == "zero3")


def test_a_model_whose_parts_are_not_recognised_is_refused_not_trained_as_language():
    # on 50b0a39 a vision tower under an unknown name was silently trained with --freeze-vision-tower
    from llava_star.errors import ConfigError
    from llava_star.training.parts import set_trainable

    model = torch.nn.ModuleDict({"image_encoder": torch.nn.Linear(2, 2), "language_model": torch.nn.Linear(2, 2)})
    with pytest.raises(
        ConfigError, match=r"no projector or vision parameters recognised among \['image_encoder', 'language_model'\]"
    ):
        set_trainable(model, TrainConfig(model="m", data=("d.json",), output_dir="o"))
