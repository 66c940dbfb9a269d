"""scripts/finetune.sh: the launch command for torchrun / deepspeed on one node or many,
and a real (CPU) run of it."""

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "finetune.sh"
REQUIRED = {
    "MODEL": "LanguageBind/Video-LLaVA-7B-hf",
    "DATA": "star.json mix.json",
    "VIDEO_ROOT": "videos",
    "OUTPUT": "ckpt",
}


def train_mem():
    spec = importlib.util.spec_from_file_location("train_mem", REPO / "scripts" / "train_mem.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dry_run(extra_env, *args):
    env = {"PATH": os.environ["PATH"], "DRY_RUN": "1", "GPUS": "8", **REQUIRED, **extra_env}
    result = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, check=True)
    return shlex.split(result.stdout)


def split_at_script(command):
    position = next(i for i, token in enumerate(command) if token.endswith("train_mem.py"))
    return command[:position], command[position + 1 :]


@pytest.mark.parametrize(
    "env, launcher",
    [
        (
            {},
            [
                "torchrun",
                "--nnodes",
                "1",
                "--node_rank",
                "0",
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                "29500",
                "--nproc_per_node",
                "8",
            ],
        ),
        (
            {"NNODES": "4", "NODE_RANK": "2", "MASTER_ADDR": "node0"},
            [
                "torchrun",
                "--nnodes",
                "4",
                "--node_rank",
                "2",
                "--master_addr",
                "node0",
                "--master_port",
                "29500",
                "--nproc_per_node",
                "8",
            ],
        ),
        ({"LAUNCHER": "deepspeed"}, ["deepspeed", "--num_gpus", "8", "--master_port", "29500"]),
        (
            {"LAUNCHER": "deepspeed", "HOSTFILE": "hosts", "MASTER_ADDR": "node0"},
            ["deepspeed", "--hostfile", "hosts", "--master_addr", "node0", "--master_port", "29500"],
        ),
    ],
)
def test_launch_commands_carry_the_paper_recipe(env, launcher):
    before, after = split_at_script(dry_run(env))
    assert before == launcher
    config = train_mem().parse_args(after)
    assert config.data == ("star.json", "mix.json") and config.deepspeed.endswith("scripts/zero2.json")
    assert (config.num_train_epochs, config.learning_rate, config.lr_scheduler_type, config.warmup_ratio) == (
        1.0,
        2e-5,
        "cosine",
        0.03,
    )
    assert config.bf16 and config.tf32 and config.gradient_checkpointing and config.freeze_vision_tower
    assert config.per_device_train_batch_size * config.gradient_accumulation_steps * 8 == 128


def test_arguments_after_the_script_win():
    _, after = split_at_script(dry_run({"ZERO": "zero3"}, "--lora_enable", "True", "--learning_rate", "2e-4"))
    config = train_mem().parse_args(after)
    assert config.lora and config.learning_rate == 2e-4 and config.deepspeed.endswith("zero3.json")


def test_missing_settings_and_bad_launcher_are_refused():
    env = {"PATH": os.environ["PATH"], "DRY_RUN": "1", **REQUIRED}
    del env["VIDEO_ROOT"]
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "VIDEO_ROOT" in result.stderr
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env={**env, **REQUIRED, "LAUNCHER": "mpirun"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "LAUNCHER must be torchrun or deepspeed" in result.stderr


@pytest.mark.slow
@pytest.mark.distributed
def test_the_launcher_really_trains_on_cpu(synthetic_dataset, tmp_path):
    pytest.importorskip("deepspeed")
    from llava_star.models.tiny import build_tiny_model
    from llava_star.records import read_samples

    records = [
        {
            "id": s.id,
            "video": s.video,
            "conversations": [
                {"from": "human", "value": "<video>\n" + s.question},
                {"from": "gpt", "value": f"The colour is {s.labels[0].value}."},
            ],
        }
        for s in read_samples(synthetic_dataset.train)
        if s.task == "colour"
    ]
    data = tmp_path / "train.json"
    data.write_text(json.dumps(records))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "MODEL": str(build_tiny_model("video_llava", tmp_path / "tiny")),
        "DATA": str(data),
        "VIDEO_ROOT": str(synthetic_dataset.root),
        "OUTPUT": str(tmp_path / "out"),
        "GPUS": "1",
        "MASTER_PORT": "29561",
        "PER_DEVICE_BATCH": "2",
        "GRAD_ACCUM": "1",
        "WORKERS": "0",
        "OMP_NUM_THREADS": "1",
    }
    command = [
        "bash",
        str(SCRIPT),
        "--bf16",
        "False",
        "--tf32",
        "False",
        "--gradient_checkpointing",
        "False",
        "--max_steps",
        "2",
    ]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1200, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads((tmp_path / "out" / "train_summary.json").read_text())["global_step"] == 2


def test_an_image_folder_is_passed_when_given():
    assert train_mem().parse_args(split_at_script(dry_run({}))[1]).image_root is None
    assert train_mem().parse_args(split_at_script(dry_run({"IMAGE_ROOT": "coco"}))[1]).image_root == "coco"
