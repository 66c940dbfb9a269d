"""`llava-star convert` on tiny checkpoints in the original repositories' layout
(tests/original_checkpoints.py): converted, loaded strictly, generating and training."""

import json

import pytest
from original_checkpoints import clip_directory, language_model_alone, original_checkpoint, vision_config_directory

from llava_star.errors import ConfigError
from llava_star.models.tiny import FRAME_SIZE, HIDDEN_SIZE, PATCH_SIZE
from llava_star.stages.convert import PROVENANCE_FILE, main

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def generate_from_video(loaded, video):
    from llava_star.media.video import read_frames
    from llava_star.models.inputs import build_inputs, video_conversation

    inputs = build_inputs(
        loaded.processor,
        [video_conversation("What colour is it?")],
        [read_frames(video, 8)],
        add_generation_prompt=True,
    )
    with torch.no_grad():
        output = loaded.model.generate(**inputs.batch, max_new_tokens=4, do_sample=False)
    return output[0, inputs.batch["input_ids"].shape[1] :]


# original name -> transformers name of a few weights of each family, compared after conversion
CHECKED = {
    "video_llava": {
        "model.image_tower.image_tower.encoder.layers.0.self_attn.k_proj.weight": "model.image_tower.encoder.layers.0.self_attn.k_proj.weight",
        "model.video_tower.video_tower.post_layernorm.weight": "model.video_tower.post_layernorm.weight",
    },
    "llava_next_video": {
        "model.vision_tower.vision_tower.vision_model.encoder.layers.1.mlp.fc1.weight": "model.vision_tower.encoder.layers.1.mlp.fc1.weight",
        "model.image_newline": "model.image_newline",
    },
    "llava_onevision": {
        "model.vision_tower.vision_tower.vision_model.encoder.layers.1.self_attn.q_proj.weight": "model.vision_tower.encoder.layers.1.self_attn.q_proj.weight",
        "model.vision_tower.vision_tower.vision_model.post_layernorm.bias": "model.vision_tower.post_layernorm.bias",
        "model.image_newline": "model.image_newline",
    },
}
CLASSES = {
    "video_llava": "VideoLlavaForConditionalGeneration",
    "llava_next_video": "LlavaNextVideoForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(CHECKED))
def test_video_originals_convert_load_generate_and_train(tmp_path, synthetic_dataset, kind):
    from llava_star.models.loading import load_model
    from llava_star.stages.train import TrainConfig, run

    source, state = original_checkpoint(tmp_path / "original", kind, safetensors=kind != "video_llava")
    output = tmp_path / "converted"
    tower = vision_config_directory(
        tmp_path / "tower", kind
    )  # the towers' geometry (tiny here; the real one by default)
    assert main([str(source), "-o", str(output), "--vision-tower", str(tower)]) == 0
    loaded = load_model(output, device="cpu")
    assert loaded.family == kind and type(loaded.model).__name__ == CLASSES[kind]
    converted = loaded.model.state_dict()
    # every original weight, under its transformers name, unchanged
    pairs = {
        **CHECKED[kind],
        "model.layers.1.mlp.down_proj.weight": "model.language_model.layers.1.mlp.down_proj.weight",
        "model.mm_projector.2.bias": "model.multi_modal_projector.linear_2.bias",
    }
    for old, new in pairs.items():
        assert torch.equal(converted[new], state[old]), old
    vocab = state["model.embed_tokens.weight"].shape[0]
    embeddings = converted["model.language_model.embed_tokens.weight"]
    assert torch.equal(embeddings[:vocab], state["model.embed_tokens.weight"]) and embeddings.shape[0] % 64 == 0
    if kind == "llava_onevision":  # the new tokens fit in Qwen2's spare rows: nothing grows
        assert embeddings.shape[0] == vocab and max(loaded.processor.tokenizer.get_vocab().values()) < vocab
    provenance = json.loads((output / PROVENANCE_FILE).read_text())
    assert provenance["class"] == CLASSES[kind] and set(provenance["added_tokens"]) == {"<image>", "<video>"}
    assert provenance["parameters"] == len(state) - 1  # all but the inv_freq buffer
    if kind == "llava_onevision":  # SigLIP with its last layer deleted: LLaVA's layer -2 of 3 is the last of 2
        assert (
            loaded.model.config.vision_config.num_hidden_layers == 2 and loaded.model.config.vision_feature_layer == -1
        )
    video = synthetic_dataset.root / "videos" / "synthetic-00000.mp4"
    assert len(generate_from_video(loaded, video)) >= 1
    records = [
        {
            "id": "a",
            "video": "videos/synthetic-00000.mp4",
            "conversations": [
                {"from": "human", "value": "<video>\nWhat colour is it?"},
                {"from": "gpt", "value": "It is red."},
            ],
        }
    ]
    (tmp_path / "train.json").write_text(json.dumps(records))
    summary = run(
        TrainConfig(
            model=str(output),
            data=(str(tmp_path / "train.json"),),
            video_root=str(synthetic_dataset.root),
            output_dir=str(tmp_path / "trained"),
            max_steps=1,
            per_device_train_batch_size=1,
            dataloader_num_workers=0,
            learning_rate=1e-3,
            warmup_ratio=0.0,
        )
    )
    assert summary["global_step"] == 1 and summary["first_loss"] > 0
    trained = load_model(tmp_path / "trained", device="cpu").model.state_dict()
    assert not torch.equal(trained["lm_head.weight"], converted["lm_head.weight"])


def test_llava_video_with_grid_newlines_is_refused_saying_why(tmp_path):
    source, _ = original_checkpoint(tmp_path / "LLaVA-Video-7B-Qwen2", "llava_onevision", safetensors=True)
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps(dict(config, mm_newline_position="grid")))
    with pytest.raises(ConfigError, match="mm_newline_position 'grid'.*one image_newline after each video"):
        main([str(source), "-o", str(tmp_path / "out")])


@pytest.mark.slow
def test_llava_15_original_converts_with_a_local_vision_tower_and_trains_a_step(tmp_path):
    import numpy as np
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    source, state = original_checkpoint(tmp_path / "llava-v1.5-7b", "llava", safetensors=True)
    output = tmp_path / "llava-v1.5-7b-hf"
    with pytest.raises(
        ConfigError, match="do not contain their vision tower .*openai/clip-vit-large-patch14-336.*--vision-tower"
    ):
        main([str(source), "-o", str(output)])
    tower, tower_state = clip_directory(tmp_path / "clip")
    assert main([str(source), "-o", str(output), "--vision-tower", str(tower)]) == 0
    model = LlavaForConditionalGeneration.from_pretrained(output)
    processor = AutoProcessor.from_pretrained(output)
    converted = {key: value.clone() for key, value in model.state_dict().items()}
    assert torch.equal(
        converted["model.vision_tower.encoder.layers.1.mlp.fc2.weight"],
        tower_state[next(k for k in tower_state if k.endswith("encoder.layers.1.mlp.fc2.weight"))],
    )
    assert torch.equal(converted["model.multi_modal_projector.linear_1.weight"], state["model.mm_projector.0.weight"])
    assert torch.equal(converted["lm_head.weight"][: state["lm_head.weight"].shape[0]], state["lm_head.weight"])
    image = np.random.default_rng(0).integers(0, 256, (FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}],
        add_generation_prompt=True,
    )
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_index).sum() == (FRAME_SIZE // PATCH_SIZE) ** 2
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
    # llava_star's trainer takes it (family "llava": image and text records)
    from PIL import Image

    from llava_star.stages.train import TrainConfig, run

    (tmp_path / "images").mkdir()
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    records = [
        {
            "id": "a",
            "image": "a.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat is it?"},
                {"from": "gpt", "value": "It is red."},
            ],
        }
    ]
    (tmp_path / "train.json").write_text(json.dumps(records))
    trained = tmp_path / "trained"
    summary = run(
        TrainConfig(
            model=str(output),
            data=(str(tmp_path / "train.json"),),
            image_root=str(tmp_path / "images"),
            output_dir=str(trained),
            max_steps=1,
            per_device_train_batch_size=1,
            learning_rate=1e-3,
            warmup_ratio=0.0,
            dataloader_num_workers=0,
            image_aspect_ratio="pad",
        )
    )
    assert summary["global_step"] == 1 and summary["family"] == "llava"
    after = LlavaForConditionalGeneration.from_pretrained(trained).state_dict()
    assert not torch.equal(after["lm_head.weight"], converted["lm_head.weight"])  # it learned
    assert torch.equal(
        after["model.vision_tower.post_layernorm.weight"], converted["model.vision_tower.post_layernorm.weight"]
    )


@pytest.mark.slow
@pytest.mark.parametrize("mistral", [False, True], ids=["vicuna", "mistral"])
def test_llava_next_image_original_converts_generates_and_trains(tmp_path, mistral):
    import numpy as np
    from PIL import Image

    from llava_star.models.inputs import build_inputs, from_llava_turns
    from llava_star.models.loading import load_model
    from llava_star.stages.train import TrainConfig, run

    source, state = original_checkpoint(tmp_path / "llava-v1.6-7b", "llava_next", safetensors=True, mistral=mistral)
    output = tmp_path / "llava-v1.6-7b-hf"
    assert (
        main(
            [
                str(source),
                "-o",
                str(output),
                "--vision-tower",
                str(vision_config_directory(tmp_path / "tower", "llava")),
            ]
        )
        == 0
    )
    loaded = load_model(output, device="cpu")
    assert loaded.family == "llava_next" and type(loaded.model).__name__ == "LlavaNextForConditionalGeneration"
    assert loaded.model.config.text_config.model_type == ("mistral" if mistral else "llama")
    converted = {key: value.clone() for key, value in loaded.model.state_dict().items()}
    assert torch.equal(converted["model.image_newline"], state["model.image_newline"])
    assert torch.equal(
        converted["model.vision_tower.encoder.layers.0.mlp.fc2.bias"],
        state["model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc2.bias"],
    )
    assert loaded.model.config.image_grid_pinpoints == [[FRAME_SIZE, FRAME_SIZE], [FRAME_SIZE, 2 * FRAME_SIZE]]
    image = np.random.default_rng(0).integers(0, 256, (FRAME_SIZE, 2 * FRAME_SIZE, 3), dtype=np.uint8)  # two tiles
    turns = [{"from": "human", "value": "<image>\nWhat is it?"}]
    inputs = build_inputs(
        loaded.processor, [from_llava_turns(turns)], [None], images=[image], add_generation_prompt=True
    )
    with torch.no_grad():
        generated = loaded.model.generate(**inputs.batch, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] > inputs.batch["input_ids"].shape[1]
    (tmp_path / "images").mkdir()
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    records = [{"id": "a", "image": "a.png", "conversations": [*turns, {"from": "gpt", "value": "It is red."}]}]
    (tmp_path / "train.json").write_text(json.dumps(records))
    summary = run(
        TrainConfig(
            model=str(output),
            data=(str(tmp_path / "train.json"),),
            image_root=str(tmp_path / "images"),
            output_dir=str(tmp_path / "trained"),
            max_steps=1,
            per_device_train_batch_size=1,
            learning_rate=1e-3,
            warmup_ratio=0.0,
            dataloader_num_workers=0,
        )
    )
    assert summary["global_step"] == 1 and summary["family"] == "llava_next"
    trained = load_model(tmp_path / "trained", device="cpu").model.state_dict()
    assert not torch.equal(trained["lm_head.weight"], converted["lm_head.weight"])


def test_what_cannot_be_converted_is_refused_saying_why(tmp_path):
    source, _ = original_checkpoint(tmp_path / "vl", "video_llava", safetensors=True)
    with pytest.raises(ConfigError, match="expected a local checkpoint directory"):
        main(["LanguageBind/Video-LLaVA-7B", "-o", str(tmp_path / "out")])
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps(dict(config, mm_projector_type="linear")))
    with pytest.raises(ConfigError, match="only mlp2x_gelu"):
        main([str(source), "-o", str(tmp_path / "out1")])
    (source / "config.json").write_text(
        json.dumps(dict(config, architectures=["VideoLlavaForConditionalGeneration"], model_type="video_llava"))
    )
    with pytest.raises(ConfigError, match="not an original LLaVA checkpoint"):
        main([str(source), "-o", str(tmp_path / "out2")])


@pytest.mark.parametrize(
    "kind, what",
    [
        ("video_llava", "Video-LLaVA"),
        ("llava", "LLaVA-1.5"),
        ("llava_next", "LLaVA-NeXT image"),
        ("llava_next_video", "LLaVA-NeXT-Video"),
        ("llava_onevision", "LLaVA-OneVision"),
    ],
)
def test_load_model_names_the_convert_command_for_an_original_checkpoint(tmp_path, kind, what):
    # on 50b0a39: "unsupported model type 'llava'" or transformers' "does not recognize this architecture"
    from llava_star.models.loading import load_model

    source, _ = original_checkpoint(tmp_path / "original", kind, safetensors=True)
    with pytest.raises(ConfigError, match=f"original {what}.* checkpoint .*llava-star convert {source} -o {source}-hf"):
        load_model(source, device="cpu")


def test_a_language_model_alone_is_composed_with_the_vision_tower_and_mm_projector_bin(tmp_path):
    """LLaVA's finetune.sh: --model_name_or_path vicuna --vision_tower clip --pretrain_mm_mlp_adapter mm_projector.bin."""
    from transformers import LlavaForConditionalGeneration

    from llava_star.models.loading import load_model

    source, language = language_model_alone(tmp_path / "vicuna-7b-v1.5")
    with pytest.raises(
        ConfigError,
        match=r"a language model alone \(llama\).*llava-star convert .*--vision-tower CLIP_DIR "
        r"\[--projector mm_projector.bin\]",
    ):
        load_model(source, device="cpu")  # what train_mem.py meets with the script's --model_name_or_path
    tower, _ = clip_directory(tmp_path / "clip")
    projector = {
        f"model.mm_projector.{i}.{kind}": torch.randn(HIDDEN_SIZE, HIDDEN_SIZE)
        if kind == "weight"
        else torch.randn(HIDDEN_SIZE)
        for i in ("0", "2")
        for kind in ("weight", "bias")
    }
    torch.save(projector, tmp_path / "mm_projector.bin")
    output = tmp_path / "llava-v1.5-7b-composed"
    assert (
        main(
            [
                str(source),
                "-o",
                str(output),
                "--vision-tower",
                str(tower),
                "--projector",
                str(tmp_path / "mm_projector.bin"),
            ]
        )
        == 0
    )
    model = LlavaForConditionalGeneration.from_pretrained(output)
    assert torch.equal(model.model.multi_modal_projector.linear_2.weight, projector["model.mm_projector.2.weight"])
    assert torch.equal(
        model.model.language_model.layers[1].self_attn.o_proj.weight, language["model.layers.1.self_attn.o_proj.weight"]
    )
    assert load_model(output, device="cpu").family == "llava"
    # pretrain.sh: no projector yet, a new one
    fresh = tmp_path / "pretrain-start"
    assert main([str(source), "-o", str(fresh), "--vision-tower", str(tower)]) == 0
    assert json.loads((fresh / PROVENANCE_FILE).read_text())["composed"]
    with pytest.raises(ConfigError, match="--projector: .* has its own projector"):
        main(
            [
                str(original_checkpoint(tmp_path / "orig", "llava", safetensors=True)[0]),
                "-o",
                str(tmp_path / "x"),
                "--vision-tower",
                str(tower),
                "--projector",
                str(tmp_path / "mm_projector.bin"),
            ]
        )


def test_an_image_model_refuses_video_instead_of_dropping_the_frames(tmp_path, synthetic_dataset):
    from llava_star.media.video import read_frames
    from llava_star.models.inputs import build_inputs, video_conversation

    source, _ = original_checkpoint(tmp_path / "llava-v1.5-7b", "llava", safetensors=True)
    tower, _ = clip_directory(tmp_path / "clip")
    assert main([str(source), "-o", str(tmp_path / "hf"), "--vision-tower", str(tower)]) == 0
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tmp_path / "hf")
    frames = read_frames(synthetic_dataset.root / "videos" / "synthetic-00000.mp4", 4)
    with pytest.raises(ConfigError, match="LlavaProcessor takes no video"):
        build_inputs(processor, [video_conversation("What colour is it?")], [frames], add_generation_prompt=True)
