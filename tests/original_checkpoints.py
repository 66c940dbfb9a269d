"""Tiny checkpoints in the original LLaVA repositories' layout, for the conversion tests.

config.json with LLaVA's own fields, weight shards under LLaVA's parameter names (built
from real transformers modules, renamed the way LLaVA's code names them), the tokenizer
files. Imported by tests/test_convert.py and tests/test_train_mem_official_flags.py
(pytest puts tests/ on the path, as for frame_numbers.py).
"""

from __future__ import annotations

import json

import torch

from llava_star.models.tiny import FRAME_SIZE, HIDDEN_SIZE, PATCH_SIZE, train_tokenizer


def tiny_clip(layers=2):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=HIDDEN_SIZE,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=FRAME_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=HIDDEN_SIZE,
    )
    return CLIPVisionModel(config)


def tiny_siglip(layers=3):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(
        hidden_size=HIDDEN_SIZE,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=FRAME_SIZE,
        patch_size=PATCH_SIZE,
        vision_use_head=False,
    )
    return SiglipVisionModel(config)


def tower_keys(module, prefix, *, drop_last_layer=False):
    """A vision tower's tensors under an original prefix; LLaVA-NeXT's SigLIP deletes its last layer."""
    state = {key.removeprefix("vision_model."): value for key, value in module.state_dict().items()}
    if drop_last_layer:
        last = f"encoder.layers.{module.config.num_hidden_layers - 1}."
        state = {key: value for key, value in state.items() if not key.startswith(last)}
    return {prefix + key: value for key, value in state.items() if not key.endswith("position_ids")}


def original_checkpoint(directory, kind, *, safetensors, mistral=False):
    """A tiny checkpoint as the original repositories ship it: liuhaotian/llava-v1.5 ("llava"),
    liuhaotian/llava-v1.6-vicuna ("llava_next"),
    LanguageBind/Video-LLaVA ("video_llava"), lmms-lab/LLaVA-NeXT-Video ("llava_next_video"),
    lmms-lab/llava-onevision-qwen2 ("llava_onevision"); returns (directory, state dict)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    qwen = kind == "llava_onevision"
    tokenizer = train_tokenizer(
        ("<|endoftext|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>") if qwen else ("<s>", "</s>", "<unk>")
    )
    if not qwen:
        tokenizer.pad_token = None
    text_class, model_class = (Qwen2Config, Qwen2ForCausalLM) if qwen else (LlamaConfig, LlamaForCausalLM)
    if mistral:  # liuhaotian/llava-v1.6-mistral-7b
        from transformers import MistralConfig, MistralForCausalLM

        text_class, model_class = MistralConfig, MistralForCausalLM
    # Qwen2's embedding matrix has rows to spare (152,064 for 151,646 tokens), LLaMA's has none
    rows = (len(tokenizer) // 64 + 2) * 64 if qwen else len(tokenizer)
    text = text_class(
        vocab_size=rows,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    state = dict(model_class(text).state_dict())  # model.embed_tokens / model.layers / model.norm / lm_head
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)  # old LLaMA checkpoints carry it
    projector = torch.nn.Sequential(
        torch.nn.Linear(HIDDEN_SIZE, HIDDEN_SIZE), torch.nn.GELU(), torch.nn.Linear(HIDDEN_SIZE, HIDDEN_SIZE)
    )
    state.update({f"model.mm_projector.{key}": value for key, value in projector.state_dict().items()})
    architecture = "LlavaQwenForCausalLM" if qwen else "LlavaMistralForCausalLM" if mistral else "LlavaLlamaForCausalLM"
    config = dict(
        text.to_dict(),
        architectures=[architecture],
        model_type="llava_mistral" if mistral else "llava",
        mm_hidden_size=HIDDEN_SIZE,
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        image_aspect_ratio="pad",
        tune_mm_mlp_adapter=False,
        use_mm_proj=True,
        torch_dtype="float32",
    )
    if kind == "video_llava":  # both towers inside the shards: LanguageBind's .vision_model, one level down
        config.update(
            image_tower="LanguageBind/LanguageBind_Image", video_tower="LanguageBind/LanguageBind_Video_merge"
        )
        for tower in ("image_tower", "video_tower"):
            state.update(tower_keys(tiny_clip(), f"model.{tower}.{tower}."))
    elif kind == "llava_next":  # llava-v1.6: anyres tiles, the tower and image_newline in the shards
        config.update(
            mm_vision_tower="openai/clip-vit-large-patch14-336",
            mm_patch_merge_type="spatial_unpad",
            image_aspect_ratio="anyres",
            image_grid_pinpoints=[[FRAME_SIZE, FRAME_SIZE], [FRAME_SIZE, 2 * FRAME_SIZE]],
        )
        state.update(tower_keys(tiny_clip(), "model.vision_tower.vision_tower.vision_model."))
        state["model.image_newline"] = torch.randn(HIDDEN_SIZE)
    elif kind == "llava_next_video":
        config.update(
            mm_vision_tower="openai/clip-vit-large-patch14-336",
            mm_patch_merge_type="spatial_unpad",
            image_aspect_ratio="anyres",
            image_grid_pinpoints=[[FRAME_SIZE, FRAME_SIZE], [FRAME_SIZE, 2 * FRAME_SIZE]],
            mm_resampler_type="spatial_pool",
            mm_spatial_pool_stride=2,
            mm_spatial_pool_mode="average",
        )
        state.update(tower_keys(tiny_clip(), "model.vision_tower.vision_tower.vision_model."))
        state["model.image_newline"] = torch.randn(HIDDEN_SIZE)
    elif kind == "llava_onevision":
        config.update(
            mm_vision_tower="google/siglip-so400m-patch14-384",
            mm_patch_merge_type="spatial_unpad",
            image_aspect_ratio="anyres_max_9",
            image_grid_pinpoints="(1x1),...,(2x2)",
            mm_spatial_pool_mode="bilinear",
        )
        state.update(tower_keys(tiny_siglip(), "model.vision_tower.vision_tower.vision_model.", drop_last_layer=True))
        state["model.image_newline"] = torch.randn(HIDDEN_SIZE)
    else:
        config.update(mm_vision_tower="openai/clip-vit-large-patch14-336")
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(directory)
    keys = sorted(state)
    halves = {"00001": keys[: len(keys) // 2], "00002": keys[len(keys) // 2 :]}
    index = {"metadata": {}, "weight_map": {}}
    for number, part in halves.items():
        name = f"model-{number}-of-00002.safetensors" if safetensors else f"pytorch_model-{number}-of-00002.bin"
        shard = {key: state[key].contiguous() for key in part}
        if safetensors:
            from safetensors.torch import save_file

            save_file(shard, directory / name, metadata={"format": "pt"})
        else:
            torch.save(shard, directory / name)
        index["weight_map"].update(dict.fromkeys(part, name))
    index_name = "model.safetensors.index.json" if safetensors else "pytorch_model.bin.index.json"
    (directory / index_name).write_text(json.dumps(index))
    return directory, state


def vision_config_directory(path, kind):
    """The towers' config the originals name by hub id (tiny here): CLIP, or SigLIP with all its layers."""
    (tiny_siglip() if kind == "llava_onevision" else tiny_clip()).save_pretrained(path)
    return path


def clip_directory(path):
    model = tiny_clip()
    model.save_pretrained(path)
    return path, model.state_dict()


def language_model_alone(directory):
    """What LLaVA's pretrain.sh / finetune.sh start from (lmsys/vicuna-7b-v1.5): a LlamaForCausalLM."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(("<s>", "</s>", "<unk>"))
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(text)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, {key: value.clone() for key, value in model.state_dict().items()}
