"""The official launch scripts' flag sets, copied as data, against our scripts/train_mem.py.

Each script's arguments are those of haotian-liu/LLaVA scripts/v1_5/*.sh,
PKU-YuanGroup/Video-LLaVA scripts/v1_5/*.sh and LLaVA-VL/LLaVA-NeXT
scripts/video/train/*.sh, verbatim after `train_mem.py` (shell variables given the
scripts' example values, then split as the shell splits them). Every set parses into a
TrainConfig, or is refused with a message that says why and what to pass instead.
"""

import importlib.util
import shlex
from pathlib import Path
from string import Template

import pytest

from llava_star.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

LLAVA_FINETUNE = """
    --deepspeed ./scripts/zero3.json
    --model_name_or_path lmsys/vicuna-13b-v1.5
    --version v1
    --data_path ./playground/data/llava_v1_5_mix665k.json
    --image_folder ./playground/data
    --vision_tower openai/clip-vit-large-patch14-336
    --pretrain_mm_mlp_adapter ./checkpoints/llava-v1.5-13b-pretrain/mm_projector.bin
    --mm_projector_type mlp2x_gelu
    --mm_vision_select_layer -2
    --mm_use_im_start_end False
    --mm_use_im_patch_token False
    --image_aspect_ratio pad
    --group_by_modality_length True
    --bf16 True
    --output_dir ./checkpoints/llava-v1.5-13b
    --num_train_epochs 1
    --per_device_train_batch_size 16
    --per_device_eval_batch_size 4
    --gradient_accumulation_steps 1
    --evaluation_strategy "no"
    --save_strategy "steps"
    --save_steps 50000
    --save_total_limit 1
    --learning_rate 2e-5
    --weight_decay 0.
    --warmup_ratio 0.03
    --lr_scheduler_type "cosine"
    --logging_steps 1
    --tf32 True
    --model_max_length 2048
    --gradient_checkpointing True
    --dataloader_num_workers 4
    --lazy_preprocess True
    --report_to wandb
"""
LORA = "--lora_enable True --lora_r 128 --lora_alpha 256 --mm_projector_lr 2e-5\n"
LLAVA_FINETUNE_LORA = LORA + LLAVA_FINETUNE.replace(
    "checkpoints/llava-v1.5-13b\n", "checkpoints/llava-v1.5-13b-lora\n"
).replace("--learning_rate 2e-5", "--learning_rate 2e-4")
# finetune_task.sh: from the finished LLaVA-1.5 checkpoint, so no projector file
LLAVA_FINETUNE_TASK = (
    LLAVA_FINETUNE.replace("lmsys/vicuna-13b-v1.5", "liuhaotian/llava-v1.5-13b")
    .replace("--pretrain_mm_mlp_adapter ./checkpoints/llava-v1.5-13b-pretrain/mm_projector.bin\n", "")
    .replace("checkpoints/llava-v1.5-13b\n", "checkpoints/llava-v1.5-13b-task\n")
)
LLAVA_FINETUNE_TASK_LORA = LORA + LLAVA_FINETUNE_TASK.replace("-task\n", "-task-lora\n").replace(
    "--learning_rate 2e-5", "--learning_rate 2e-4"
)
LLAVA_PRETRAIN = """
    --deepspeed ./scripts/zero2.json
    --model_name_or_path lmsys/vicuna-13b-v1.5
    --version plain
    --data_path ./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json
    --image_folder ./playground/data/LLaVA-Pretrain/images
    --vision_tower openai/clip-vit-large-patch14-336
    --mm_projector_type mlp2x_gelu
    --tune_mm_mlp_adapter True
    --mm_vision_select_layer -2
    --mm_use_im_start_end False
    --mm_use_im_patch_token False
    --bf16 True
    --output_dir ./checkpoints/llava-v1.5-13b-pretrain
    --num_train_epochs 1
    --per_device_train_batch_size 32
    --per_device_eval_batch_size 4
    --gradient_accumulation_steps 1
    --evaluation_strategy "no"
    --save_strategy "steps"
    --save_steps 24000
    --save_total_limit 1
    --learning_rate 1e-3
    --weight_decay 0.
    --warmup_ratio 0.03
    --lr_scheduler_type "cosine"
    --logging_steps 1
    --tf32 True
    --model_max_length 2048
    --gradient_checkpointing True
    --dataloader_num_workers 4
    --lazy_preprocess True
    --report_to wandb
"""
VIDEO_LLAVA_VARIABLES = {
    "JSON_FOLDER": "llava_all_image_video/ft_json",
    "IMAGE_FOLDER": "llava_all_image_video",
    "VIDEO_FOLDER": "llava_all_image_video",
}
VIDEO_LLAVA_FINETUNE = """
    --deepspeed ./scripts/zero2_offload.json
    --model_name_or_path lmsys/vicuna-7b-v1.5
    --version v1
    --data_path ${JSON_FOLDER}/llava_image_tune_.json ${JSON_FOLDER}/videochatgpt_tune_.json ${JSON_FOLDER}/nlp_tune.json
    --image_folder ${IMAGE_FOLDER}
    --image_tower LanguageBind/LanguageBind_Image
    --video_folder ${VIDEO_FOLDER}
    --video_tower LanguageBind/LanguageBind_Video_merge
    --mm_projector_type mlp2x_gelu
    --pretrain_mm_mlp_adapter ./checkpoints/videollava-7b-pretrain/mm_projector.bin
    --mm_vision_select_layer -2
    --mm_use_im_start_end False
    --mm_use_im_patch_token False
    --image_aspect_ratio pad
    --group_by_modality_length True
    --bf16 True
    --output_dir ./checkpoints/videollava-7b
    --num_train_epochs 1
    --per_device_train_batch_size 16
    --per_device_eval_batch_size 4
    --gradient_accumulation_steps 1
    --evaluation_strategy "no"
    --save_strategy "steps"
    --save_steps 50000
    --save_total_limit 1
    --learning_rate 2e-5
    --weight_decay 0.
    --warmup_ratio 0.03
    --lr_scheduler_type "cosine"
    --logging_steps 1
    --tf32 True
    --model_max_length 2048  --tokenizer_model_max_length 3072
    --gradient_checkpointing True
    --dataloader_num_workers 4
    --lazy_preprocess True
    --report_to tensorboard
    --cache_dir "./cache_dir"
"""
VIDEO_LLAVA_FINETUNE_LORA = LORA + VIDEO_LLAVA_FINETUNE.replace("/videollava-7b\n", "/videollava-7b-lora\n").replace(
    "--learning_rate 2e-5", "--learning_rate 2e-4"
)
VIDEO_LLAVA_PRETRAIN = """
    --deepspeed ./scripts/zero2.json
    --model_name_or_path lmsys/vicuna-7b-v1.5
    --version v1
    --data_path ${JSON_FOLDER}/llava_image_.json ${JSON_FOLDER}/valley_.json
    --image_folder ${IMAGE_FOLDER}
    --image_tower LanguageBind/LanguageBind_Image
    --video_folder ${VIDEO_FOLDER}
    --video_tower LanguageBind/LanguageBind_Video_merge
    --mm_projector_type mlp2x_gelu
    --tune_mm_mlp_adapter True
    --mm_vision_select_layer -2
    --mm_use_im_start_end False
    --mm_use_im_patch_token False
    --bf16 True
    --output_dir ./checkpoints/videollava-7b-pretrain
    --num_train_epochs 1
    --per_device_train_batch_size 32
    --per_device_eval_batch_size 4
    --gradient_accumulation_steps 1
    --evaluation_strategy "no"
    --save_strategy "steps"
    --save_steps 24000
    --save_total_limit 1
    --learning_rate 1e-3
    --weight_decay 0.
    --warmup_ratio 0.03
    --lr_scheduler_type "cosine"
    --logging_steps 1
    --tf32 True
    --model_max_length 2048  --tokenizer_model_max_length 3072
    --gradient_checkpointing True
    --dataloader_num_workers 8
    --lazy_preprocess True
    --report_to tensorboard
    --cache_dir "./cache_dir"
"""
LLAVA_NEXT_VARIABLES = {
    "IMAGE_FOLDER": "XXX",
    "VIDEO_FOLDER": "XXX",
    "DATA_YAML": "exp.yaml",
    "VISION_MODEL_VERSION": "google/siglip-so400m-patch14-384",
    "PROMPT_VERSION": "qwen_1_5",
    "PREV_STAGE_CHECKPOINT": "lmms-lab/llava-onevision-qwen2-7b-ov-si",
    "MID_RUN_NAME": "llavanext-google_siglip-so400m-patch14-384-Qwen_Qwen2-7B-Instruct-ov_to_video_am9",
}
# SO400M_Qwen2_7B_ov_to_video_am9.sh (the 72B script differs in the checkpoint and --frames_upbound 32)
LLAVA_NEXT_VIDEO = """
    --deepspeed scripts/zero3.json
    --model_name_or_path $PREV_STAGE_CHECKPOINT
    --version $PROMPT_VERSION
    --data_path $DATA_YAML
    --image_folder $IMAGE_FOLDER
    --video_folder $VIDEO_FOLDER
    --mm_tunable_parts="mm_vision_tower,mm_mlp_adapter,mm_language_model"
    --mm_vision_tower_lr=2e-6
    --vision_tower ${VISION_MODEL_VERSION}
    --mm_projector_type mlp2x_gelu
    --mm_vision_select_layer -2
    --mm_use_im_start_end False
    --mm_use_im_patch_token False
    --group_by_modality_length True
    --image_aspect_ratio anyres_max_9
    --image_grid_pinpoints  "(1x1),...,(6x6)"
    --mm_patch_merge_type spatial_unpad
    --bf16 True
    --run_name $MID_RUN_NAME
    --output_dir ./work_dirs/$MID_RUN_NAME
    --num_train_epochs 1
    --per_device_train_batch_size 1
    --per_device_eval_batch_size 4
    --gradient_accumulation_steps 2
    --evaluation_strategy "no"
    --save_strategy "steps"
    --save_steps 500
    --save_total_limit 1
    --learning_rate 1e-5
    --weight_decay 0.
    --warmup_ratio 0.03
    --lr_scheduler_type "cosine"
    --logging_steps 1
    --tf32 True
    --model_max_length 32768
    --gradient_checkpointing True
    --dataloader_num_workers 2
    --lazy_preprocess True
    --report_to wandb
    --torch_compile True
    --torch_compile_backend "inductor"
    --dataloader_drop_last True
    --frames_upbound 64
    --mm_newline_position grid
    --add_time_instruction True
    --force_sample True
    --mm_spatial_pool_stride 2
"""
LLAVA_NEXT_VIDEO_72B = LLAVA_NEXT_VIDEO.replace("--frames_upbound 64", "--frames_upbound 32")


def arguments(script, variables=None):
    """The script's arguments as the shell hands them to train_mem.py."""
    return shlex.split(Template(script).substitute(variables or {}))


@pytest.fixture(scope="module")
def train_mem():
    spec = importlib.util.spec_from_file_location("train_mem", REPO / "scripts" / "train_mem.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


COMMON = {
    "num_train_epochs": 1.0,
    "weight_decay": 0.0,
    "warmup_ratio": 0.03,
    "lr_scheduler_type": "cosine",
    "bf16": True,
    "tf32": True,
    "gradient_checkpointing": True,
    "save_strategy": "steps",
    "save_total_limit": 1,
    "logging_steps": 1,
}
LLAVA_PARSED = dict(
    COMMON,
    model="lmsys/vicuna-13b-v1.5",
    data=("./playground/data/llava_v1_5_mix665k.json",),
    image_root="./playground/data",
    deepspeed="./scripts/zero3.json",
    model_max_length=2048,
    per_device_train_batch_size=16,
    save_steps=50000,
    dataloader_num_workers=4,
    report_to=("wandb",),
    projector_weights="./checkpoints/llava-v1.5-13b-pretrain/mm_projector.bin",
    image_aspect_ratio="pad",
    group_by_media=True,
    group_by_length=True,
    learning_rate=2e-5,
    output_dir="./checkpoints/llava-v1.5-13b",
)
LORA_PARSED = {"lora": True, "lora_r": 128, "lora_alpha": 256, "projector_learning_rate": 2e-5, "learning_rate": 2e-4}
VIDEO_LLAVA_PARSED = dict(
    LLAVA_PARSED,
    model="lmsys/vicuna-7b-v1.5",
    deepspeed="./scripts/zero2_offload.json",
    data=tuple(
        f"llava_all_image_video/ft_json/{name}"
        for name in ("llava_image_tune_.json", "videochatgpt_tune_.json", "nlp_tune.json")
    ),
    image_root="llava_all_image_video",
    video_root="llava_all_image_video",
    model_max_length=3072,
    report_to=("tensorboard",),
    cache_dir="./cache_dir",
    projector_weights="./checkpoints/videollava-7b-pretrain/mm_projector.bin",
    output_dir="./checkpoints/videollava-7b",
)
PRETRAIN = {
    "prompt_template": "plain",  # --version plain (LLaVA's pretrain.sh; Video-LLaVA's says v1)
    "projector_weights": None,
    "image_aspect_ratio": "square",
    "group_by_media": False,
    "group_by_length": False,
    "learning_rate": 1e-3,
    "per_device_train_batch_size": 32,
    "save_steps": 24000,
    "deepspeed": "./scripts/zero2.json",
    "freeze_language_model": True,
    "freeze_vision_tower": True,  # --tune_mm_mlp_adapter True: the projector alone
}

SCRIPTS = {
    "LLaVA/scripts/v1_5/finetune.sh": (LLAVA_FINETUNE, None, LLAVA_PARSED),
    "LLaVA/scripts/v1_5/finetune_lora.sh": (
        LLAVA_FINETUNE_LORA,
        None,
        dict(LLAVA_PARSED, **LORA_PARSED, output_dir="./checkpoints/llava-v1.5-13b-lora"),
    ),
    "LLaVA/scripts/v1_5/finetune_task.sh": (
        LLAVA_FINETUNE_TASK,
        None,
        dict(
            LLAVA_PARSED,
            model="liuhaotian/llava-v1.5-13b",
            projector_weights=None,
            output_dir="./checkpoints/llava-v1.5-13b-task",
        ),
    ),
    "LLaVA/scripts/v1_5/finetune_task_lora.sh": (
        LLAVA_FINETUNE_TASK_LORA,
        None,
        dict(
            LLAVA_PARSED,
            **LORA_PARSED,
            model="liuhaotian/llava-v1.5-13b",
            projector_weights=None,
            output_dir="./checkpoints/llava-v1.5-13b-task-lora",
        ),
    ),
    "LLaVA/scripts/v1_5/pretrain.sh": (
        LLAVA_PRETRAIN,
        None,
        dict(
            LLAVA_PARSED,
            **PRETRAIN,
            data=("./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json",),
            image_root="./playground/data/LLaVA-Pretrain/images",
            output_dir="./checkpoints/llava-v1.5-13b-pretrain",
        ),
    ),
    "Video-LLaVA/scripts/v1_5/finetune.sh": (VIDEO_LLAVA_FINETUNE, VIDEO_LLAVA_VARIABLES, VIDEO_LLAVA_PARSED),
    "Video-LLaVA/scripts/v1_5/finetune_lora.sh": (
        VIDEO_LLAVA_FINETUNE_LORA,
        VIDEO_LLAVA_VARIABLES,
        dict(VIDEO_LLAVA_PARSED, **LORA_PARSED, output_dir="./checkpoints/videollava-7b-lora"),
    ),
    "Video-LLaVA/scripts/v1_5/pretrain.sh": (
        VIDEO_LLAVA_PRETRAIN,
        VIDEO_LLAVA_VARIABLES,
        dict(
            VIDEO_LLAVA_PARSED,
            **dict(PRETRAIN, prompt_template="checkpoint"),
            dataloader_num_workers=8,
            output_dir="./checkpoints/videollava-7b-pretrain",
            data=("llava_all_image_video/ft_json/llava_image_.json", "llava_all_image_video/ft_json/valley_.json"),
        ),
    ),
}
LLAVA_NEXT_SCRIPTS = {
    "LLaVA-NeXT/scripts/video/train/SO400M_Qwen2_7B_ov_to_video_am9.sh": (LLAVA_NEXT_VIDEO, 64),
    "LLaVA-NeXT/scripts/video/train/SO400M_Qwen2_72B_ov_to_video_am9.sh": (LLAVA_NEXT_VIDEO_72B, 32),
}


@pytest.mark.slow  # the TrainingArguments check of passed-through flags imports transformers
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_official_llava_and_video_llava_scripts_parse_into_their_train_config(train_mem, script):
    from llava_star.training.config import TrainConfig

    text, variables, expected = SCRIPTS[script]
    config = train_mem.parse_args(arguments(text, variables))
    assert config == TrainConfig(**expected)
    assert (REPO / config.deepspeed).is_file()  # the DeepSpeed config the script names is shipped


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(LLAVA_NEXT_SCRIPTS))
def test_llava_next_video_scripts_are_refused_for_the_newline_layout_transformers_fixes_otherwise(train_mem, script):
    text, frames = LLAVA_NEXT_SCRIPTS[script]
    flags = arguments(text, LLAVA_NEXT_VARIABLES)
    with pytest.raises(
        ConfigError,
        match="--mm_newline_position grid: .* one image_newline after each video.*pass --mm_newline_position one_token",
    ):
        train_mem.parse_args(flags)
    flags[flags.index("grid")] = "one_token"
    config = train_mem.parse_args(flags)  # the rest of the script is honoured
    assert config.video_time_instruction  # --add_time_instruction True
    assert config.model == "lmms-lab/llava-onevision-qwen2-7b-ov-si" and config.data == ("exp.yaml",)
    assert config.num_frames == frames  # --frames_upbound with --force_sample True: that many, uniformly
    assert (config.freeze_vision_tower, config.freeze_projector, config.freeze_language_model) == (False, False, False)
    assert config.vision_learning_rate == 2e-6 and config.learning_rate == 1e-5
    assert config.image_aspect_ratio == "square"  # anyres_max_9: the OneVision processor tiles images itself
    assert config.group_by_length and config.model_max_length == 32768 and config.gradient_accumulation_steps == 2
    assert dict(config.trainer_args) == {
        "dataloader_drop_last": True,
        "run_name": LLAVA_NEXT_VARIABLES["MID_RUN_NAME"],
        "torch_compile": True,
        "torch_compile_backend": "inductor",
    }


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--frames_upbound", "32"], "--frames_upbound/--video_fps without --force_sample True"),
        (["--mm_spatial_pool_stride", "4"], "pools video features by 2"),
        (["--mm_spatial_pool_mode", "average"], "bilinear"),
        (["--mm_tunable_parts", "mm_vision_resampler"], "no vision resampler"),
        (["--image_aspect_ratio", "crop_split"], "expected pad, square, anyres"),
        (["--mm_projector_type", "mlp3x_gelu"], "mlp2x_gelu projector alone"),
        (["--mm_use_im_start_end", "True"], "no <im_start>/<im_end>"),
        (["--mm_vision_select_feature", "cls"], "patch or cls_patch"),
    ],
)
def test_options_that_cannot_be_honoured_say_what_to_use(train_mem, flags, message):
    base = ["--model_name_or_path", "m", "--data_path", "d.json", "--output_dir", "o"]
    with pytest.raises(ConfigError, match=message):
        train_mem.parse_args(base + flags)


def with_values(flags, **values):
    """``flags`` with the values of some flags replaced (the paths and sizes of this machine)."""
    flags = list(flags)
    for name, value in values.items():
        flags[flags.index("--" + name) + 1] = str(value)
    return flags


def run_train_mem(flags, *, max_steps, output):
    """scripts/train_mem.py with ``flags`` as one DeepSpeed process (what torchrun would set); its summary."""
    import json
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PATH": "/usr/bin:/bin",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    command = [sys.executable, str(REPO / "scripts" / "train_mem.py"), *flags, "--max_steps", str(max_steps)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((output / "train_summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("zero", ["zero3", "zero2"])
def test_llavas_finetune_task_lora_script_trains_a_converted_llava_15(train_mem, tmp_path, zero):
    """LLaVA's scripts/v1_5/finetune_task_lora.sh as it is (LoRA, --mm_projector_lr, ZeRO-3,
    --image_aspect_ratio pad, --group_by_modality_length, gradient checkpointing), on
    liuhaotian/llava-v1.5-13b's layout converted by `llava-star convert`; only the paths,
    sizes and what needs a GPU (--tf32) or the network (--report_to wandb) changed. With
    --bf16 the adapters must share the weights' dtype under DeepSpeed (one flat buffer per
    group), ZeRO-2 as ZeRO-3."""
    pytest.importorskip("deepspeed")
    pytest.importorskip("peft")
    import json

    import numpy as np
    from original_checkpoints import clip_directory, original_checkpoint
    from PIL import Image

    from llava_star.stages.convert import main as convert

    source, _ = original_checkpoint(tmp_path / "llava-v1.5-13b", "llava", safetensors=True)
    model = tmp_path / "llava-v1.5-13b-hf"
    assert convert([str(source), "-o", str(model), "--vision-tower", str(clip_directory(tmp_path / "clip")[0])]) == 0
    images = tmp_path / "playground" / "data"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = []
    for index in range(4):
        Image.fromarray(rng.integers(0, 256, (24, 32 + 8 * index, 3), dtype=np.uint8)).save(images / f"{index}.png")
        records.append(
            {
                "id": str(index),
                "image": f"{index}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat is it?"},
                    {"from": "gpt", "value": "It is red."},
                ],
            }
        )
    records.append(
        {"id": "text", "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]}
    )
    (tmp_path / "mix.json").write_text(json.dumps(records))
    flags = with_values(
        arguments(LLAVA_FINETUNE_TASK_LORA),
        model_name_or_path=model,
        data_path=tmp_path / "mix.json",
        image_folder=images,
        output_dir=tmp_path / "out",
        deepspeed=REPO / "scripts" / f"{zero}.json",
        per_device_train_batch_size=2,
        dataloader_num_workers=0,
        tf32=False,
        report_to="none",
        lora_r=4,
        lora_alpha=8,
    )
    assert train_mem.parse_args(flags).lora  # the same flag set the parse test checks
    summary = run_train_mem(flags, max_steps=2, output=tmp_path / "out")
    assert summary["family"] == "llava" and summary["deepspeed_stage"] == int(zero[-1]) and summary["global_step"] == 2
    assert summary["learning_rates"] == {"language": [2e-4], "projector": [2e-5]} and summary["group_by_length"]


@pytest.mark.slow
def test_video_llavas_finetune_lora_script_trains_a_converted_video_llava(train_mem, tmp_path, synthetic_dataset):
    """Video-LLaVA's scripts/v1_5/finetune_lora.sh as it is (LoRA, --mm_projector_lr,
    --pretrain_mm_mlp_adapter, zero2_offload.json, images + videos + text in three files,
    --tokenizer_model_max_length, --cache_dir), on LanguageBind/Video-LLaVA-7B's layout
    converted by `llava-star convert` in place of the script's vicuna + towers."""
    pytest.importorskip("deepspeed")
    pytest.importorskip("peft")
    import json

    import numpy as np
    import torch
    from original_checkpoints import original_checkpoint, vision_config_directory
    from PIL import Image

    from llava_star.stages.convert import main as convert

    source, state = original_checkpoint(tmp_path / "Video-LLaVA-7B", "video_llava", safetensors=False)
    model = tmp_path / "Video-LLaVA-7B-hf"
    assert (
        convert(
            [
                str(source),
                "-o",
                str(model),
                "--vision-tower",
                str(vision_config_directory(tmp_path / "t", "video_llava")),
            ]
        )
        == 0
    )
    projector = {key: value for key, value in state.items() if "mm_projector" in key}
    torch.save(projector, tmp_path / "mm_projector.bin")  # what Video-LLaVA's pretrain.sh leaves
    folder = tmp_path / "llava_all_image_video"
    (folder / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((24, 40, 3), np.uint8)).save(folder / "images" / "a.png")
    (folder / "videos").mkdir()
    for index in range(2):  # copied: a link out of the video folder is refused
        name = f"synthetic-0000{index}.mp4"
        (folder / "videos" / name).write_bytes((synthetic_dataset.root / "videos" / name).read_bytes())
    question = {"from": "human", "value": "What is it?"}
    files = {
        "llava_image_tune_.json": [
            {
                "id": "i",
                "image": "images/a.png",
                "conversations": [{**question, "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "Black."}],
            }
        ],
        "videochatgpt_tune_.json": [
            {
                "id": f"v{i}",
                "video": f"videos/synthetic-0000{i}.mp4",
                "conversations": [{**question, "value": "<video>\nWhat is it?"}, {"from": "gpt", "value": "A shape."}],
            }
            for i in range(2)
        ],
        "nlp_tune.json": [{"id": "t", "conversations": [question, {"from": "gpt", "value": "Nothing."}]}],
    }
    for name, records in files.items():
        (tmp_path / name).write_text(json.dumps(records))
    flags = with_values(
        arguments(VIDEO_LLAVA_FINETUNE_LORA, VIDEO_LLAVA_VARIABLES),
        model_name_or_path=model,
        image_folder=folder,
        video_folder=folder,
        output_dir=tmp_path / "out",
        deepspeed=REPO / "scripts" / "zero2_offload.json",
        pretrain_mm_mlp_adapter=tmp_path / "mm_projector.bin",
        per_device_train_batch_size=2,
        dataloader_num_workers=0,
        tf32=False,
        report_to="none",
        lora_r=4,
        lora_alpha=8,
        cache_dir=tmp_path / "cache",
    )
    at = flags.index("--data_path")
    flags[at + 1 : at + 4] = [str(tmp_path / name) for name in files]
    assert train_mem.parse_args(flags).projector_weights == str(tmp_path / "mm_projector.bin")
    summary = run_train_mem(flags, max_steps=2, output=tmp_path / "out")
    assert summary["family"] == "video_llava" and summary["deepspeed_stage"] == 2 and summary["global_step"] == 2
    assert summary["records"] == 4 and summary["failures"] == 0 and summary["group_by_length"]
    assert summary["learning_rates"] == {"language": [2e-4], "projector": [2e-5]}


@pytest.mark.slow
def test_llava_nexts_video_script_trains_a_converted_onevision(train_mem, tmp_path, synthetic_dataset):
    """LLaVA-NeXT's SO400M_Qwen2_7B_ov_to_video_am9.sh (a YAML data list, every part tuned,
    the vision tower's own rate, the time instruction, anyres_max_9) on
    lmms-lab/llava-onevision-qwen2-7b-ov-si's layout converted by `llava-star convert`;
    --mm_newline_position one_token (transformers' layout, the refused grid aside), and
    paths, frames, sizes, --tf32 / --torch_compile / wandb changed for this machine."""
    pytest.importorskip("deepspeed")
    import json

    from original_checkpoints import original_checkpoint, vision_config_directory

    from llava_star.stages.convert import main as convert

    source, _ = original_checkpoint(tmp_path / "llava-onevision-qwen2-7b-ov-si", "llava_onevision", safetensors=True)
    model = tmp_path / "ov-hf"
    assert (
        convert(
            [
                str(source),
                "-o",
                str(model),
                "--vision-tower",
                str(vision_config_directory(tmp_path / "t", "llava_onevision")),
            ]
        )
        == 0
    )
    records = [
        {
            "id": f"v{i}",
            "video": f"videos/synthetic-0000{i}.mp4",
            "conversations": [{"from": "human", "value": "<video>\nWhat is it?"}, {"from": "gpt", "value": "A shape."}],
        }
        for i in range(4)
    ]
    (tmp_path / "0_30_s_academic_v0_1_cap.json").write_text(json.dumps(records))
    (tmp_path / "exp.yaml").write_text(
        'datasets:\n  - json_path: 0_30_s_academic_v0_1_cap.json\n    sampling_strategy: "first:50%"\n'
    )
    variables = dict(
        LLAVA_NEXT_VARIABLES,
        PREV_STAGE_CHECKPOINT=str(model),
        DATA_YAML=str(tmp_path / "exp.yaml"),
        VIDEO_FOLDER=str(synthetic_dataset.root),
        IMAGE_FOLDER=str(tmp_path),
        MID_RUN_NAME="run",
    )
    flags = with_values(
        arguments(LLAVA_NEXT_VIDEO, variables),
        output_dir=tmp_path / "out",
        deepspeed=REPO / "scripts" / "zero3.json",
        mm_newline_position="one_token",
        frames_upbound=4,
        tf32=False,
        torch_compile=False,
        report_to="none",
        dataloader_num_workers=0,
    )
    assert train_mem.parse_args(flags).video_time_instruction
    summary = run_train_mem(flags, max_steps=1, output=tmp_path / "out")
    assert summary["family"] == "llava_onevision" and summary["records"] == 2  # first:50% of 4
    assert summary["failures"] == 0 and summary["global_step"] == 1
    assert summary["learning_rates"] == {"language": [1e-5], "projector": [1e-5], "vision": [2e-6]}
