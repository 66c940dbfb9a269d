"""Command lines of fine-tuning: `llava-star train` flags and LLaVA's train_mem.py flags."""

import importlib.util
import json
from pathlib import Path

import pytest

from llava_star.config import config_to_dict
from llava_star.errors import ConfigError
from llava_star.stages.train import build_parser
from llava_star.training.config import TrainConfig, config_from_args
from llava_star.training.parts import parameter_group
from llava_star.training.trainer import build_training_arguments

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_mem.py"


@pytest.fixture(scope="module")
def train_mem():
    spec = importlib.util.spec_from_file_location("train_mem", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Video-LLaVA's scripts/v1_5/finetune.sh, with our checkpoint and data swapped in
VIDEO_LLAVA_FINETUNE = """
    --deepspeed scripts/zero2.json
    --model_name_or_path LanguageBind/Video-LLaVA-7B-hf
    --version v1
    --data_path train.json videoinstruct.json
    --image_folder images
    --image_tower LanguageBind/LanguageBind_Image
    --video_folder videos
    --video_tower LanguageBind/LanguageBind_Video_merge
    --mm_projector_type mlp2x_gelu
    --mm_vision_select_layer -2
    --mm_use_im_start_end False
    --mm_use_im_patch_token False
    --image_aspect_ratio pad
    --group_by_modality_length True
    --bf16 True
    --output_dir checkpoints/videollava-7b-star
    --num_train_epochs 1
    --per_device_train_batch_size 16
    --per_device_eval_batch_size 4
    --gradient_accumulation_steps 1
    --evaluation_strategy no
    --save_strategy steps
    --save_steps 50000
    --save_total_limit 1
    --learning_rate 2e-5
    --weight_decay 0.
    --warmup_ratio 0.03
    --lr_scheduler_type cosine
    --logging_steps 1
    --tf32 True
    --model_max_length 2048 --tokenizer_model_max_length 3072
    --gradient_checkpointing True
    --dataloader_num_workers 4
    --lazy_preprocess True
    --report_to tensorboard
    --cache_dir ./cache_dir
    --local_rank=0
""".split()  # noqa: SIM905 (the flags as the shell script spells them)


def test_video_llava_finetune_flags_map_onto_the_config(train_mem):
    config = train_mem.parse_args(VIDEO_LLAVA_FINETUNE)
    assert config == TrainConfig(
        model="LanguageBind/Video-LLaVA-7B-hf",
        data=("train.json", "videoinstruct.json"),
        output_dir="checkpoints/videollava-7b-star",
        video_root="videos",
        image_root="images",
        num_train_epochs=1.0,
        learning_rate=2e-5,
        lr_scheduler_type="cosine",
        warmup_ratio=0.03,
        weight_decay=0.0,
        per_device_train_batch_size=16,
        gradient_accumulation_steps=1,
        model_max_length=3072,  # --tokenizer_model_max_length: Video-LLaVA's length after expanding video tokens
        bf16=True,
        tf32=True,
        gradient_checkpointing=True,
        deepspeed="scripts/zero2.json",
        group_by_media=True,  # --group_by_modality_length True: by media kind and by length
        group_by_length=True,
        image_aspect_ratio="pad",
        cache_dir="./cache_dir",
        dataloader_num_workers=4,
        logging_steps=1,
        save_strategy="steps",
        save_steps=50000,
        save_total_limit=1,
        report_to=("tensorboard",),
    )


def test_llava_booleans_lora_and_freezing(train_mem):
    base = ["--model_name_or_path", "m", "--data_path", "d.json", "--output_dir", "o"]
    config = train_mem.parse_args(base + ["--lora_enable", "True", "--lora_r", "8", "--lora_alpha", "16", "--bf16"])
    assert (config.lora, config.lora_r, config.lora_alpha, config.bf16) == (True, 8, 16, True)
    assert train_mem.parse_args(base + ["--bf16", "False"]).bf16 is False
    projector_only = train_mem.parse_args(base + ["--tune_mm_mlp_adapter", "True"])
    assert projector_only.freeze_language_model and projector_only.freeze_vision_tower
    assert not projector_only.freeze_projector
    assert train_mem.parse_args(base + ["--freeze_backbone", "True"]).freeze_language_model
    assert not train_mem.parse_args(base + ["--unfreeze_mm_vision_tower", "True"]).freeze_vision_tower
    assert train_mem.parse_args(base + ["--report_to", "none"]).report_to == ()


@pytest.mark.slow  # the first import of transformers.TrainingArguments takes ~10 s here
def test_training_arguments_pass_through(train_mem):
    base = ["--model_name_or_path", "m", "--data_path", "d.json", "--output_dir", "o"]
    config = train_mem.parse_args(base + ["--max_grad_norm", "0.5", "--optim=adamw_torch", "--run_name", "star"])
    assert dict(config.trainer_args) == {"max_grad_norm": 0.5, "optim": "adamw_torch", "run_name": "star"}
    with pytest.raises(ConfigError, match="trainer_args.warmup_steps: set it through"):
        train_mem.parse_args(base + ["--warmup_steps", "10"])
    with pytest.raises(ConfigError, match="--no_such_flag: unknown flag"):
        train_mem.parse_args(base + ["--no_such_flag", "1"])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--bits", "4"], "--bits"),
        (["--mm_projector_lr=-2e-5"], "projector_learning_rate: expected a positive number"),
        (["--image_aspect_ratio", "crop"], "--image_aspect_ratio crop"),
        (["--evaluation_strategy", "steps"], "--evaluation_strategy"),
        (["--learning_rate", "-1"], "learning_rate"),
        (["--bf16", "True", "--fp16", "True"], "bf16, fp16"),
    ],
)
def test_bad_llava_flags_name_the_flag(train_mem, flags, message):
    base = ["--model_name_or_path", "m", "--data_path", "d.json", "--output_dir", "o"]
    with pytest.raises(ConfigError, match=message):
        train_mem.parse_args(base + flags)


def test_llava_star_train_flags_and_yaml(tmp_path):
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("learning_rate: 1.0e-4\nlora: true\ntrainer_args: {max_grad_norm: 0.3}\n")
    args = build_parser().parse_args(
        [
            "--config",
            str(yaml_file),
            "--model",
            "m",
            "--data",
            "a.json",
            "b.json",
            "-o",
            "out",
            "--video-root",
            "v",
            "--image-folder",
            "i",
            "--epochs",
            "2",
            "--no-freeze-vision-tower",
            "--trainer-arg",
            "optim=adamw_torch",
        ]
    )
    config = config_from_args(args)
    assert config.data == ("a.json", "b.json") and config.video_root == "v" and config.image_root == "i"
    assert config.learning_rate == 1e-4 and config.lora and config.num_train_epochs == 2.0
    assert config.freeze_vision_tower is False
    assert dict(config.trainer_args) == {"max_grad_norm": 0.3, "optim": "adamw_torch"}
    yaml_file.write_text("learning_rat: 1.0\n")
    with pytest.raises(ConfigError, match="learning_rat: unknown training option"):
        config_from_args(
            build_parser().parse_args(["--config", str(yaml_file), "--model", "m", "--data", "a", "-o", "o"])
        )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('bf16: "no"\n', "bf16: expected true or false, got 'no'"),
        ("per_device_train_batch_size: four\n", "per_device_train_batch_size: expected an integer"),
    ],
)
def test_train_config_values_are_checked_against_their_types(tmp_path, text, message):
    # on 50b0a39 train's own loader took `bf16: "no"` as true
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text(text)
    with pytest.raises(ConfigError, match=message):
        config_from_args(
            build_parser().parse_args(["--config", str(yaml_file), "--model", "m", "--data", "a", "-o", "o"])
        )


def test_paper_defaults():
    config = TrainConfig(model="m", data="train.json", output_dir="o")
    assert (config.num_train_epochs, config.learning_rate, config.lr_scheduler_type, config.warmup_ratio) == (
        1.0,
        2e-5,
        "cosine",
        0.03,
    )
    assert config.freeze_vision_tower and not config.freeze_projector and not config.freeze_language_model
    assert json.loads(json.dumps(config_to_dict(config)))["data"] == ["train.json"]


@pytest.mark.slow  # imports transformers
def test_training_arguments_from_config(tmp_path):
    config = TrainConfig(
        model="m",
        data="d.json",
        output_dir=str(tmp_path),
        gradient_checkpointing=True,
        trainer_args={"max_grad_norm": 0.5},
    )
    args = build_training_arguments(config)
    assert args.learning_rate == 2e-5 and args.lr_scheduler_type == "cosine"
    assert args.get_warmup_steps(1000) == 30
    assert args.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert args.remove_unused_columns is False and args.max_grad_norm == 0.5
    with pytest.raises(ConfigError, match="trainer_args.not_a_field"):
        build_training_arguments(TrainConfig(model="m", data="d", output_dir="o", trainer_args={"not_a_field": 1}))


@pytest.mark.parametrize(
    "name, group",
    [
        ("model.video_tower.encoder.layers.0.self_attn.k_proj.weight", "vision"),
        ("model.image_tower.embeddings.patch_embedding.weight", "vision"),
        ("model.vision_tower.vision_model.post_layernorm.weight", "vision"),
        ("model.visual.blocks.0.attn.qkv.weight", "vision"),
        ("model.visual.merger.mlp.2.weight", "projector"),
        ("model.multi_modal_projector.linear_2.weight", "projector"),
        ("model.language_model.embed_tokens.weight", "language"),
        ("lm_head.weight", "language"),
        ("model.image_newline", "projector"),
    ],
)
def test_parameter_groups(name, group):
    assert parameter_group(name) == group


def test_yaml_learning_rate_in_scientific_notation_is_a_number(tmp_path):
    """PyYAML reads `2e-5` (no dot) as a string; a train config means the number."""
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("model: m\ndata: [a.json]\noutput_dir: o\nlearning_rate: 2e-5\n")
    config = config_from_args(
        build_parser().parse_args(["--config", str(yaml_file), "--trainer-arg", "max_grad_norm=1e0"])
    )
    assert config.learning_rate == 2e-5 and isinstance(config.learning_rate, float)
    assert dict(config.trainer_args)["max_grad_norm"] == 1.0


def test_lora_learning_rates_are_llavas_finetune_lora_rates(train_mem):
    """LoRA adapters learn at 2e-4 and the projector, trained in full beside them, at 2e-5
    (LLaVA's finetune_lora.sh); before, `--lora` trained the adapters at the full fine-tuning
    rate and `--lora --learning-rate 2e-4` trained the projector at 2e-4 too."""
    from llava_star.training.parts import part_learning_rates

    def rates(argv):
        config = config_from_args(build_parser().parse_args(["--model", "m", "--data", "d.json", "-o", "o", *argv]))
        return config.learning_rate, part_learning_rates(config)

    assert rates([]) == (2e-5, {})  # full fine-tuning: one rate, the paper's
    assert rates(["--lora"]) == (2e-4, {"projector": 2e-5})
    assert rates(["--lora", "--learning-rate", "2e-4"]) == (2e-4, {"projector": 2e-5})
    assert rates(["--lora", "--projector-learning-rate", "1e-4"]) == (2e-4, {"projector": 1e-4})
    assert rates(["--lora", "--freeze-projector"]) == (2e-4, {})
    # LLaVA's flags keep LLaVA's meaning: without --mm_projector_lr the projector is in the main group
    base = ["--model_name_or_path", "m", "--data_path", "d.json", "--output_dir", "o", "--lora_enable", "True"]
    llava = train_mem.parse_args([*base, "--learning_rate", "2e-4"])
    assert (llava.learning_rate, part_learning_rates(llava)) == (2e-4, {})
    llava = train_mem.parse_args([*base, "--learning_rate", "2e-4", "--mm_projector_lr", "2e-5"])
    assert (llava.learning_rate, part_learning_rates(llava)) == (2e-4, {"projector": 2e-5})


def test_every_train_option_carries_its_own_help():
    """Help lives on the field (config.option): a new or renamed field cannot lose it."""
    import dataclasses

    missing = [field.name for field in dataclasses.fields(TrainConfig) if not field.metadata.get("help")]
    assert missing == []
    shown = {action.dest: action.help for action in build_parser()._actions}
    assert all(shown[field.name] for field in dataclasses.fields(TrainConfig))
