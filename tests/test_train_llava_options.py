"""LLaVA's training options honoured as LLaVA does: the projector's own learning rate,
LLaVA's mm_projector.bin, images padded to a square, batches by modality and length, and
LLaVA-NeXT's YAML data lists. Tiny real models, real images, the real Trainer."""

import dataclasses
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_model_helpers import free_port, single_process_env

from llava_star.errors import ConfigError, RecordError
from llava_star.training.parts import parameter_group

torch = pytest.importorskip("torch")
REPO = Path(__file__).resolve().parents[1]


def load(path):
    from llava_star.models.loading import load_model

    return load_model(path, device="cpu")


def llava_projector_file(model, path, scale=1.0):
    """An mm_projector.bin as LLaVA's trainer saves it: model.mm_projector.{0,2}.{weight,bias}."""
    projector = model.model.multi_modal_projector
    state = {
        f"model.mm_projector.{index}.{kind}": torch.randn_like(getattr(getattr(projector, layer), kind)) * scale
        for index, layer in (("0", "linear_1"), ("2", "linear_2"))
        for kind in ("weight", "bias")
    }
    torch.save(state, path)
    return state


def test_mm_projector_bin_is_loaded_into_the_transformers_projector(tiny_model, tmp_path):
    from llava_star.models.original import load_projector_weights

    model = load(tiny_model).model
    language_before = model.lm_head.weight.detach().clone()
    state = llava_projector_file(model, tmp_path / "mm_projector.bin")
    assert load_projector_weights(model, tmp_path / "mm_projector.bin") == sorted(state)
    projector = model.model.multi_modal_projector
    assert torch.equal(projector.linear_1.weight, state["model.mm_projector.0.weight"])
    assert torch.equal(projector.linear_1.bias, state["model.mm_projector.0.bias"])
    assert torch.equal(projector.linear_2.weight, state["model.mm_projector.2.weight"])
    assert torch.equal(projector.linear_2.bias, state["model.mm_projector.2.bias"])
    assert torch.equal(model.lm_head.weight, language_before)


def test_a_projector_file_that_does_not_fit_is_refused_naming_the_file(tiny_model, tmp_path):
    from llava_star.models.original import load_projector_weights

    model = load(tiny_model).model
    state = llava_projector_file(model, tmp_path / "mm_projector.bin")
    state["model.mm_projector.0.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "wrong_shape.bin")
    with pytest.raises(ConfigError, match=r"wrong_shape.bin: linear_1.weight has shape \(3, 3\)"):
        load_projector_weights(model, tmp_path / "wrong_shape.bin")
    torch.save({"model.mm_projector.0.weight": state["model.mm_projector.2.weight"]}, tmp_path / "partial.bin")
    with pytest.raises(ConfigError, match="missing"):
        load_projector_weights(model, tmp_path / "partial.bin")
    torch.save({**state, "model.mm_projector.4.weight": torch.zeros(1)}, tmp_path / "mlp3x.bin")
    with pytest.raises(ConfigError, match="mlp3x_gelu"):
        load_projector_weights(model, tmp_path / "mlp3x.bin")
    # a pickle that runs code is not loaded (torch.load weights_only)
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(subprocess.Popen, protocol=2))
    with pytest.raises(ConfigError, match="evil.bin: not a tensors-only checkpoint"):
        load_projector_weights(model, tmp_path / "evil.bin")


def test_the_projector_gets_its_own_learning_rate_in_the_built_optimizer(tiny_model, tmp_path):
    from transformers import TrainingArguments

    from llava_star.training.parts import learning_rates_by_part
    from llava_star.training.trainer import ConversationTrainer

    model = load(tiny_model).model
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(parameter_group(name) != "vision")
    args = TrainingArguments(
        output_dir=str(tmp_path), learning_rate=2e-4, weight_decay=0.1, report_to="none", use_cpu=True
    )
    trainer = ConversationTrainer(model=model, args=args, part_learning_rates={"projector": 2e-5})
    optimizer = trainer.create_optimizer()
    assert learning_rates_by_part(model, optimizer) == {"language": [2e-4], "projector": [2e-5]}
    by_id = {id(p): name for name, p in model.named_parameters()}
    for group in optimizer.param_groups:
        names = [by_id[id(p)] for p in group["params"]]
        assert {parameter_group(name) for name in names} in ({"language"}, {"projector"})
        assert group["weight_decay"] == (0.0 if all(name.endswith("bias") or "norm" in name for name in names) else 0.1)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in model.parameters() if p.requires_grad}  # every trainable parameter, once
    # the schedule scales both rates alike: the ratio stays 10
    scheduler = trainer.create_scheduler(num_training_steps=10, optimizer=optimizer)
    optimizer.step()
    scheduler.step()
    rates = sorted({group["lr"] for group in optimizer.param_groups})
    assert rates[1] / rates[0] == pytest.approx(10)


def test_zero3_offload_with_its_own_optimizer_refuses_part_learning_rates():
    from llava_star.training.config import TrainConfig
    from llava_star.training.deepspeed import check_deepspeed_optimizer

    # a rate of its own (1e-4 beside 2e-5); a part at the main rate needs no group of its own
    config = TrainConfig(
        model="m",
        data=("d",),
        output_dir="o",
        projector_learning_rate=1e-4,
        deepspeed=str(REPO / "scripts" / "zero3_offload.json"),
    )
    with pytest.raises(ConfigError, match="zero3_offload.json builds DeepSpeed's own optimizer"):
        check_deepspeed_optimizer(config)
    check_deepspeed_optimizer(dataclasses.replace(config, projector_learning_rate=config.learning_rate))
    for name in ("zero2.json", "zero2_offload.json", "zero3.json"):
        check_deepspeed_optimizer(
            TrainConfig(
                model="m",
                data=("d",),
                output_dir="o",
                projector_learning_rate=2e-5,
                deepspeed=str(REPO / "scripts" / name),
            )
        )


def test_pad_makes_a_square_of_the_processors_mean_before_the_processor(tiny_model, tmp_path):
    from PIL import Image

    from llava_star.media.images import pad_colour, pad_to_square
    from llava_star.training.data import ConversationDataset, ExampleSettings, image_pad_colour

    processor = load(tiny_model).processor
    colour = image_pad_colour(processor)
    assert colour == pad_colour(processor.image_processor.image_mean) == (122, 116, 104)  # CLIP's mean x 255
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    square = pad_to_square(wide, colour)
    assert square.shape == (40, 40, 3)
    assert (square[:8] == colour).all() and (square[32:] == colour).all()  # 8 rows above, 8 below
    assert np.array_equal(square[8:32], wide)
    tall = pad_to_square(wide.transpose(1, 0, 2), colour)
    assert (
        tall.shape == (40, 40, 3)
        and (tall[:, :8] == colour).all()
        and np.array_equal(tall[:, 8:32], wide.transpose(1, 0, 2))
    )
    # in training, the processor receives the padded picture (whole, not centre-cropped)
    (tmp_path / "images").mkdir()
    Image.fromarray(wide).save(tmp_path / "images" / "wide.png")
    record = {
        "id": "a",
        "image": "wide.png",
        "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "It is red."}],
    }
    pixels = {}
    for pad in (None, colour):
        settings = ExampleSettings(
            video_root=None,
            image_root=str(tmp_path / "images"),
            num_frames=8,
            model_max_length=4096,
            image_pad_colour=pad,
        )
        pixels[pad] = ConversationDataset([record], processor, settings)[0]["pixel_values_images"]
    expected = processor.image_processor(images=[square], return_tensors="pt")["pixel_values_images"]
    assert torch.allclose(pixels[colour], expected)
    assert not torch.allclose(pixels[None], expected)


def llava_split_to_even_chunks(indices, lengths, chunks):
    """LLaVA's llava_trainer.split_to_even_chunks, as its code states it: each index, longest
    first, to the chunk of least total length that is not yet full."""
    size = len(indices) // chunks
    out, totals = [[] for _ in range(chunks)], [0] * chunks
    for index in indices:
        shortest = totals.index(min(totals))
        out[shortest].append(index)
        totals[shortest] += lengths[index]
        if len(out[shortest]) == size:
            totals[shortest] = float("inf")
    return out


def test_modality_and_length_grouping_balances_ranks_as_llavas_sampler():
    from llava_star.training.data import MediaGroupedSampler

    kinds = ["video"] * 8 + ["text"] * 8
    lengths = [10, 80, 30, 50, 20, 70, 40, 60] + [5, 1, 3, 7, 2, 8, 4, 6]
    sampler = MediaGroupedSampler(kinds, group_size=4, seed=1, lengths=lengths, world_size=2)
    order = list(sampler)
    assert sorted(order) == list(range(16))
    for start in range(0, 16, 4):
        group = order[start : start + 4]
        assert len({kinds[i] for i in group}) == 1  # one modality per step
        first, second = group[:2], group[2:]  # rank 0's batch, rank 1's batch
        assert [first, second] == llava_split_to_even_chunks(sorted(group, key=lambda i: -lengths[i]), lengths, 2)
        assert lengths[first[0]] == max(lengths[i] for i in group)  # longest first
    assert list(MediaGroupedSampler(kinds, 4, seed=1, lengths=lengths, world_size=2)) == order  # same on every rank


def write_json(path, records):
    path.write_text(json.dumps(records))
    return path


def text_records(prefix, count):
    return [
        {
            "id": f"{prefix}-{i}",
            "conversations": [{"from": "human", "value": f"Question {i}?"}, {"from": "gpt", "value": "Yes."}],
        }
        for i in range(count)
    ]


def test_llava_next_yaml_data_lists(tmp_path):
    from llava_star.training.data_lists import load_records

    (tmp_path / "data").mkdir()
    write_json(tmp_path / "data" / "a.json", text_records("a", 10))
    (tmp_path / "data" / "b.jsonl").write_text("\n".join(json.dumps(r) for r in text_records("b", 7)) + "\n")
    write_json(tmp_path / "data" / "c.json", text_records("c", 20))
    listing = tmp_path / "exp.yaml"
    listing.write_text(
        "datasets:\n"
        '  - json_path: data/a.json\n    sampling_strategy: "first:25%"\n'  # ceil(2.5) = 3, as LLaVA-NeXT
        "  - json_path: data/b.jsonl\n    sampling_strategy: end:2\n"
        "  - json_path: data/c.json\n    sampling_strategy: random:4\n"
        "  - json_path: data/a.json\n"  # all
    )
    records = load_records([str(listing)], seed=3)
    ids = [record["id"] for record in records]
    assert ids[:3] == ["a-0", "a-1", "a-2"] and ids[3:5] == ["b-5", "b-6"]
    assert len(ids[5:9]) == 4 and all(i.startswith("c-") for i in ids[5:9]) and ids[5:9] != ["c-0", "c-1", "c-2", "c-3"]
    assert ids[9:] == [f"a-{i}" for i in range(10)]
    assert [r["id"] for r in load_records([str(listing)], seed=3)] == ids  # the seed fixes random:N
    for text, message in [
        ("datasets:\n  - json_path: data/a.json\n    sampling_strategy: half\n", r"datasets\[0\].sampling_strategy"),
        ("datasets:\n  - json_path: data/a.csv\n", r"datasets\[0\].json_path: expected a .json or .jsonl"),
        ("datasets:\n  - path: data/a.json\n", r"datasets\[0\]: expected a mapping with a json_path"),
        ("datasets: []\n", "datasets: expected a list"),
    ]:
        listing.write_text(text)
        with pytest.raises(RecordError, match=message):
            load_records([str(listing)])
    (tmp_path / "data" / "bad.jsonl").write_text(json.dumps(text_records("x", 1)[0]) + "\n{not json\n")
    listing.write_text("datasets:\n  - json_path: data/bad.jsonl\n")
    with pytest.raises(RecordError, match="bad.jsonl:2"):
        load_records([str(listing)])


def test_training_data_in_any_export_format_is_read_in_the_projects_form(tmp_path):
    """LLaVA-Video-178K-style lists write <image> for a video; LLaMA-Factory writes videos lists."""
    from llava_star.training.data_lists import load_records

    (tmp_path / "data").mkdir()
    next_video = {
        "id": "n-0",
        "video": "v/a.mp4",
        "conversations": [{"from": "human", "value": "<image>\nWhat happens?"}, {"from": "gpt", "value": "A dive."}],
    }
    factory = {
        "id": "f-0",
        "videos": ["v/b.mp4"],
        "conversations": [{"from": "human", "value": "<video>What happens?"}, {"from": "gpt", "value": "A jump."}],
    }
    (tmp_path / "data" / "next.jsonl").write_text(json.dumps(next_video) + "\n")
    write_json(tmp_path / "factory.json", [factory])
    (tmp_path / "exp.yaml").write_text("datasets:\n  - json_path: data/next.jsonl\n")
    records = load_records([str(tmp_path / "exp.yaml"), str(tmp_path / "factory.json")])
    assert [(r["id"], r["video"]) for r in records] == [("n-0", "v/a.mp4"), ("f-0", "v/b.mp4")]
    assert all(r["conversations"][0]["value"].count("<video>") == 1 for r in records)
    assert all("<image>" not in r["conversations"][0]["value"] for r in records)


def train_mem_in_one_deepspeed_process(model, data, output, deepspeed_config, *flags):
    """scripts/train_mem.py for 2 steps of batch 2 in one DeepSpeed process, as a launch script runs it."""
    command = [
        sys.executable,
        str(REPO / "scripts" / "train_mem.py"),
        "--model_name_or_path",
        str(model),
        "--data_path",
        str(data),
        "--output_dir",
        str(output),
        "--deepspeed",
        str(REPO / "scripts" / deepspeed_config),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--dataloader_num_workers",
        "0",
        "--report_to",
        "none",
        "--warmup_ratio",
        "0",
        *flags,
    ]
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin", **single_process_env()}
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.parametrize("zero", [None, "zero3"])
def test_train_mem_with_llavas_projector_options_trains_as_told(tiny_model, tmp_path, zero):
    """--pretrain_mm_mlp_adapter, --mm_projector_lr, --image_aspect_ratio pad and
    --group_by_modality_length through scripts/train_mem.py, one process; under ZeRO-3 the
    projector is partitioned when the file is loaded into it (gathered, written, partitioned)."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    records = text_records("text", 4)
    for index in range(4):
        Image.fromarray(rng.integers(0, 256, (20 + 4 * index, 32, 3), dtype=np.uint8)).save(images / f"{index}.png")
        records.append(
            {
                "id": f"image-{index}",
                "image": f"{index}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat colour is it?"},
                    {"from": "gpt", "value": "It is red."},
                ],
            }
        )
    data = write_json(tmp_path / "train.json", records)
    original = load(tiny_model).model
    state = llava_projector_file(original, tmp_path / "mm_projector.bin")
    output = tmp_path / "out"
    command = [
        sys.executable,
        str(REPO / "scripts" / "train_mem.py"),
        "--model_name_or_path",
        str(tiny_model),
        "--data_path",
        str(data),
        "--image_folder",
        str(images),
        "--output_dir",
        str(output),
        "--pretrain_mm_mlp_adapter",
        str(tmp_path / "mm_projector.bin"),
        "--mm_projector_lr",
        "1e-3",
        "--learning_rate",
        "1e-4",
        "--image_aspect_ratio",
        "pad",
        "--group_by_modality_length",
        "True",
        "--cache_dir",
        str(tmp_path / "cache"),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--dataloader_num_workers",
        "0",
        "--report_to",
        "none",
        "--warmup_ratio",
        "0",
    ]
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    if zero:
        pytest.importorskip("deepspeed")
        command += ["--deepspeed", str(REPO / "scripts" / f"{zero}.json")]
        env.update(single_process_env())
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["deepspeed_stage"] == (3 if zero else 0)
    assert summary["learning_rates"] == {"language": [1e-4], "projector": [1e-3]}
    assert summary["group_by_length"] and summary["global_step"] == 2
    assert "projector weights" in result.stderr and "mm_projector.bin" in result.stderr
    trained = load(output).model.model.multi_modal_projector.linear_2.weight
    from_file, from_checkpoint = (
        state["model.mm_projector.2.weight"],
        original.model.multi_modal_projector.linear_2.weight,
    )
    # started from the file's projector (not the checkpoint's), then two Adam steps of at most ~1e-3 each
    assert 0 < (trained - from_file).abs().max() <= 2.5e-3
    assert (from_checkpoint - from_file).abs().max() > 0.1


def test_add_time_instruction_writes_llava_nexts_sentence_with_the_clips_times(tiny_model, synthetic_dataset):
    from llava_star.media.video import read_frames
    from llava_star.training.data import ConversationDataset, ExampleSettings, with_time_instruction

    video = "videos/synthetic-00000.mp4"
    frames = read_frames(synthetic_dataset.root / video, 4, start=0.5, end=1.5)
    assert frames.duration > 1.5  # the file is longer than the clip
    record = {
        "id": "a",
        "video": video,
        "start": 0.5,
        "end": 1.5,
        "conversations": [{"from": "human", "value": "What colour is it?\n<video>"}, {"from": "gpt", "value": "Red."}],
    }
    question = with_time_instruction(record, frames)["conversations"][0]["value"]
    first, instruction, rest = question.split("\n", 2)
    assert first == "<video>" and rest == "What colour is it?\n"  # LLaVA-NeXT's replace() keeps the newline
    assert instruction.startswith("The video lasts for 1.00 seconds, and 4 frames are uniformly sampled from it.")
    times = [float(t[:-1]) for t in instruction.split("located at ")[1].split(".Please")[0].split(",")]
    assert len(times) == 4 and 0 <= times[0] < times[-1] < 1.0  # the clip's times, not the file's
    assert record["conversations"][0]["value"] == "What colour is it?\n<video>"  # the record itself is left alone
    processor = load(tiny_model).processor
    tokens = {}
    for flag in (False, True):
        settings = ExampleSettings(
            video_root=str(synthetic_dataset.root), num_frames=4, model_max_length=4096, time_instruction=flag
        )
        tokens[flag] = len(ConversationDataset([record], processor, settings)[0]["input_ids"])
    assert tokens[True] > tokens[False] + 20  # the sentence is in the training prompt


@pytest.mark.slow
def test_zero2_offload_keeps_the_projectors_learning_rate(tiny_model, tmp_path):
    """Video-LLaVA's finetune_lora.sh pairing: scripts/zero2_offload.json with --mm_projector_lr,
    one DeepSpeed process on the CPU (the Trainer's AdamW on the offloaded states)."""
    pytest.importorskip("deepspeed")
    data = write_json(tmp_path / "train.json", text_records("text", 4))
    output = tmp_path / "out"
    train_mem_in_one_deepspeed_process(
        tiny_model, data, output, "zero2_offload.json", "--mm_projector_lr", "1e-3", "--learning_rate", "1e-4"
    )
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["deepspeed_enabled"] and summary["deepspeed_stage"] == 2 and summary["global_step"] == 2
    assert summary["learning_rates"] == {"language": [1e-4], "projector": [1e-3]}


def test_version_plain_is_llavas_pretraining_prompt_and_is_saved_with_the_checkpoint(tiny_model, tmp_path):
    from PIL import Image

    from llava_star.models.families import FAMILIES
    from llava_star.models.inputs import build_inputs, from_llava_turns
    from llava_star.stages.train import TrainConfig, run

    processor = load(tiny_model).processor
    processor.chat_template = FAMILIES["video_llava"].plain_template
    turns = [
        {"from": "human", "value": "<image>\nDescribe the picture briefly."},
        {"from": "gpt", "value": "A red square."},
    ]
    text = processor.apply_chat_template(from_llava_turns(turns))
    assert text == "<image>A red square.\n"  # LLaVA's preprocess_plain: the image token, the caption, the separator
    image = np.zeros((32, 32, 3), np.uint8)
    inputs = build_inputs(
        processor,
        [from_llava_turns(turns)],
        [None],
        images=[image],
        add_generation_prompt=False,
        assistant_spans=True,
        padding_side="right",
    )
    labels = inputs.labels(-100)[0]
    learned = processor.tokenizer.decode(labels[labels != -100])
    # the loss is on the caption only, ended by the eos llava_star writes where a template's turn
    # ends with no special token (LLaVA's plain learns its "\n" separator there instead)
    assert learned == "A red square." + processor.tokenizer.eos_token
    (tmp_path / "images").mkdir()
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    data = write_json(tmp_path / "train.json", [{"id": "a", "image": "a.png", "conversations": turns}])
    output = tmp_path / "out"
    run(
        TrainConfig(
            model=str(tiny_model),
            data=(str(data),),
            image_root=str(tmp_path / "images"),
            output_dir=str(output),
            max_steps=1,
            per_device_train_batch_size=1,
            dataloader_num_workers=0,
            prompt_template="plain",
            freeze_language_model=True,
        )
    )
    assert (
        load(output).processor.chat_template == FAMILIES["video_llava"].plain_template
    )  # generation prompts the same way


def test_merging_gathered_lora_weights_is_peft_merge(tiny_model):
    """What ZeRO-3's LoRA save does with the gathered state dict equals peft's merge_and_unload."""
    pytest.importorskip("peft")
    from llava_star.models.loading import model_from_state
    from llava_star.training.config import TrainConfig
    from llava_star.training.lora import add_lora, merged_lora_state

    config = TrainConfig(model=str(tiny_model), data=("d",), output_dir="o", lora=True, lora_r=4, lora_alpha=16)
    model = add_lora(load(tiny_model).model, config)
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter)  # peft starts B at zero; a trained adapter is not
    state = {key: value.clone() for key, value in model.state_dict().items()}
    base = model.base_model.model
    merged = model_from_state(type(base), base.config, merged_lora_state(state, 16 / 4))
    reference = model.merge_and_unload().state_dict()
    assert sorted(merged.state_dict()) == sorted(reference)
    for key, value in reference.items():
        assert torch.allclose(merged.state_dict()[key], value, atol=1e-6), key
    assert not torch.equal(
        reference["model.language_model.layers.0.self_attn.q_proj.weight"],
        state["base_model.model.model.language_model.layers.0.self_attn.q_proj.base_layer.weight"],
    )


@pytest.mark.slow
def test_lora_under_zero3_as_llavas_finetune_lora_script(tiny_model, tmp_path):
    """LLaVA's finetune_lora.sh: --lora_enable True --mm_projector_lr with scripts/zero3.json; the
    saved checkpoint is the merged plain model."""
    pytest.importorskip("deepspeed")
    pytest.importorskip("peft")
    data = write_json(tmp_path / "train.json", text_records("text", 4))
    output = tmp_path / "out"
    train_mem_in_one_deepspeed_process(
        tiny_model,
        data,
        output,
        "zero3.json",
        "--lora_enable",
        "True",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--mm_projector_lr",
        "2e-5",
        "--learning_rate",
        "1e-2",
    )
    summary = json.loads((output / "train_summary.json").read_text())
    assert (
        summary["deepspeed_stage"] == 3 and summary["global_step"] == 2 and summary["trainable_parameters"]["lora"] > 0
    )
    from safetensors import safe_open

    with safe_open(str(output / "model.safetensors"), "pt") as weights:
        assert not [key for key in weights.keys() if "lora_" in key or "base_layer" in key]  # noqa: SIM118
    before, after = load(tiny_model).model.state_dict(), load(output).model.state_dict()
    assert sorted(before) == sorted(after)
    key = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(before[key], after[key])  # the adapter is merged in
    assert torch.equal(
        before["model.video_tower.post_layernorm.weight"], after["model.video_tower.post_layernorm.weight"]
    )


@pytest.mark.slow
@pytest.mark.distributed
def test_lora_under_zero3_over_two_processes(tiny_model, tmp_path):
    """The gather is collective: every rank enters it, rank 0 alone merges and saves."""
    pytest.importorskip("deepspeed")
    pytest.importorskip("peft")
    data = write_json(tmp_path / "train.json", text_records("text", 8))
    output = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        str(REPO / "scripts" / "train_mem.py"),
        "--model_name_or_path",
        str(tiny_model),
        "--data_path",
        str(data),
        "--output_dir",
        str(output),
        "--deepspeed",
        str(REPO / "scripts" / "zero3.json"),
        "--lora_enable",
        "True",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--learning_rate",
        "1e-2",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "1",
        "--dataloader_num_workers",
        "0",
        "--report_to",
        "none",
    ]
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["deepspeed_stage"] == 3 and summary["global_step"] == 2
    before, after = load(tiny_model).model.state_dict(), load(output).model.state_dict()
    key = "model.language_model.layers.1.mlp.up_proj.weight"
    assert sorted(before) == sorted(after) and not torch.allclose(before[key], after[key])
