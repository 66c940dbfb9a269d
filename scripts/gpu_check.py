#!/usr/bin/env python3
"""GPU check of the paths CPU tests cannot run: a few minutes on one CUDA GPU.

    make gpu-check            # or: python scripts/gpu_check.py [--work-dir DIR] [--families ...]

On tiny models of the real checkpoints' geometry and files (tests/real_geometry.py,
tests/real_checkpoints/*.json), in bf16:

1. load with sdpa, and with flash_attention_2 when flash-attn is installed;
2. a batched generate (two prompts, left padding), sampled and greedy;
3. five training steps with DeepSpeed ZeRO-2 in one process (Video-LLaVA geometry,
   synthetic videos), bf16 weights, flash-attn when installed;
4. save, reload the checkpoint, generate;
4b. the training equivalences of the CPU suite in bf16: 30 steps of bf16 mixed precision
   follow fp32 (sdpa and flash-attn), a run resumed at step 3 of 6 ends where the
   uninterrupted run ends (no DeepSpeed, ZeRO-2, ZeRO-3), ZeRO-2 follows no DeepSpeed;
5. when vllm is installed, the vLLM backend on the families it serves: an engine per
   family (a third of the GPU), a batched greedy generate of the same two prompts, and how
   many answers equal HF's bf16 greedy answers (reported, not required: bf16 kernels of the
   two differ; on CPU in float32 they are equal, tests/vllm_backend).

Prints a pass/fail table and exits 1 when a check failed. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO_ROOT), str(_REPO_ROOT / "tests")]

logger = logging.getLogger("gpu_check")
FAMILIES = ("video_llava", "llava_next_video", "llava_onevision", "qwen2_vl", "qwen2_5_vl")


def _frames(count: int, height: int, width: int, seed: int) -> Any:
    import numpy as np

    from llava_star.media.video import Frames

    rng = np.random.default_rng(seed)
    return Frames(
        array=rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8),
        timestamps=np.arange(count) / 8.0,
        indices=np.arange(count, dtype=np.int64),
        fps=8.0,
        duration=count / 8.0,
        path="<memory>",
        total_num_frames=count,
        backend="frames",
    )


def check_generate(model_dir: Path, attention: str) -> str:
    from llava_star.models.loading import load_model
    from llava_star.stages.generate import ModelAnswerer

    loaded = load_model(model_dir, dtype="bfloat16", device="cuda", attn_implementation=attention)
    if loaded.model.config._attn_implementation != attention:
        raise RuntimeError(f"loaded with {loaded.model.config._attn_implementation}, asked for {attention}")
    videos = [_frames(8, 480, 854, seed) for seed in (0, 1)]
    prompts = ["What colour is the shape?", "Which direction does it move?"]
    sampled = ModelAnswerer(loaded, max_new_tokens=8, temperature=1.0).answer(prompts, videos)
    greedy = ModelAnswerer(loaded, max_new_tokens=8).answer(prompts, videos)
    alone = ModelAnswerer(loaded, max_new_tokens=8).answer(prompts[:1], videos[:1])
    if len(sampled) != 2 or greedy[0] != alone[0]:
        raise RuntimeError(f"batched greedy {greedy[0]!r} differs from one at a time {alone[0]!r}")
    return f"{loaded.model.dtype}, answers {len(greedy)}"


def check_vllm_generate(model_dir: Path) -> str:
    import gc

    import torch

    from llava_star.generation.answerer import ModelAnswerer
    from llava_star.generation.vllm_answerer import VllmAnswerer
    from llava_star.models.loading import load_model, model_family

    videos = [_frames(8, 480, 854, seed) for seed in (0, 1)]
    prompts = ["What colour is the shape?", "Which direction does it move?"]
    started = time.perf_counter()
    engine = VllmAnswerer(
        str(model_dir),
        family=model_family(str(model_dir)),
        max_new_tokens=8,
        dtype="bfloat16",
        gpu_memory_utilization=0.3,
    )
    start_seconds = time.perf_counter() - started
    answers = engine.answer(prompts, videos)
    del engine
    gc.collect()
    hf = ModelAnswerer(load_model(model_dir, dtype="bfloat16", device="cuda"), max_new_tokens=8).answer(prompts, videos)
    torch.cuda.empty_cache()
    if len(answers) != 2:
        raise RuntimeError(f"expected 2 answers, got {answers!r}")
    same = sum(mine == theirs for mine, theirs in zip(answers, hf))
    return f"engine start {start_seconds:.1f} s, {same}/2 answers equal to HF bf16 greedy"


def training_data(work: Path) -> tuple[Path, Path]:
    from llava_star.datasets.synthetic import make_synthetic_dataset
    from llava_star.records import read_samples

    dataset = make_synthetic_dataset(work / "synthetic", num_videos=8, seed=0)
    records = [
        {
            "id": sample.id,
            "video": sample.video,
            "conversations": [
                {"from": "human", "value": "<video>\n" + sample.question},
                {"from": "gpt", "value": f"The answer is {sample.labels[0].value}."},
            ],
        }
        for sample in read_samples(dataset.train)
    ]
    path = work / "train.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path, dataset.root


def check_train_save_reload(model_dir: Path, work: Path, attention: str | None) -> str:
    from llava_star.models.loading import load_model
    from llava_star.stages.generate import ModelAnswerer
    from llava_star.stages.train import TrainConfig, run

    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29512")
    data, videos = training_data(work)
    output = work / "checkpoint"
    config = TrainConfig(
        model=str(model_dir),
        data=(str(data),),
        video_root=str(videos),
        output_dir=str(output),
        max_steps=5,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        per_device_train_batch_size=2,
        bf16=True,
        gradient_checkpointing=True,
        deepspeed=str(_REPO_ROOT / "scripts" / "zero2.json"),
        attn_implementation=attention,
        dataloader_num_workers=0,
    )
    summary = run(config)
    if summary["global_step"] != 5 or not summary["deepspeed_enabled"]:
        raise RuntimeError(f"expected 5 DeepSpeed steps, got {summary['global_step']} ({summary['deepspeed_enabled']})")
    reloaded = load_model(output, dtype="bfloat16", device="cuda")
    answer = ModelAnswerer(reloaded, max_new_tokens=8).answer(["What colour?"], [_frames(8, 224, 224, 3)])
    return f"loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f}, {summary['attn_implementation']}, reloaded: {answer[0]!r}"


def train_steps(model_dir: Path, data: Path, videos: Path, output: Path, **options: Any) -> dict[str, Any]:
    """One ``llava-star train`` run of the equivalence checks: same data, order and schedule each time."""
    from llava_star.stages.train import TrainConfig, run

    values = {
        "max_steps": 6,
        "per_device_train_batch_size": 2,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "dataloader_num_workers": 0,
        "num_frames": 4,
        "seed": 0,
        **options,
    }
    config = TrainConfig(
        model=str(model_dir), data=(str(data),), video_root=str(videos), output_dir=str(output), **values
    )
    return run(config)


def language_update(base: Path, trained: Path) -> Any:
    """The flattened change of the language model's matrices between two checkpoints, on the CPU in fp32."""
    import torch

    from llava_star.models.loading import load_model
    from llava_star.training.parts import parameter_group

    before = load_model(base, dtype="float32", device="cpu").model.state_dict()
    after = load_model(trained, dtype="float32", device="cpu").model.state_dict()
    keys = sorted(key for key in before if parameter_group(key) == "language" and before[key].dim() == 2)
    return torch.cat([(after[key] - before[key]).flatten() for key in keys])


def check_bf16_follows_fp32(model_dir: Path, work: Path, attention: str | None, steps: int = 30) -> str:
    """bf16 mixed precision without DeepSpeed learns what fp32 learns (tests/test_train_precision.py on CPU)."""
    import torch

    data, videos = training_data(work)
    common = {"max_steps": steps, "learning_rate": 2e-5, "lr_scheduler_type": "constant"}
    fp32 = train_steps(model_dir, data, videos, work / "fp32", **common)
    bf16 = train_steps(model_dir, data, videos, work / "bf16", bf16=True, attn_implementation=attention, **common)

    def drop(losses: list[float]) -> float:
        return sum(losses[:5]) / 5 - sum(losses[-5:]) / 5

    ratio = drop(bf16["losses"]) / drop(fp32["losses"])
    cosine = torch.nn.functional.cosine_similarity(
        language_update(model_dir, work / "fp32"), language_update(model_dir, work / "bf16"), dim=0
    ).item()
    if ratio < 0.8 or cosine < 0.95:
        raise RuntimeError(
            f"bf16 loss drop {ratio:.2f} of fp32's (need >= 0.8), update cosine {cosine:.3f} (need >= 0.95)"
        )
    return f"loss drop bf16/fp32 {ratio:.3f}, update cosine {cosine:.4f}"


def check_resume_matches(model_dir: Path, work: Path, deepspeed: str | None, *, bf16: bool = True) -> str:
    """A run resumed at step 3 of 6 ends where the uninterrupted run ends (tests/test_train_resume.py on CPU).

    On a GPU the kernels are not bitwise reproducible (atomics in attention backward), so the
    difference is measured against the update itself: at most 5% of the largest change."""
    data, videos = training_data(work)
    options = {"bf16": bf16, "save_strategy": "steps", "save_steps": 3, "save_total_limit": None}
    if deepspeed:
        options["deepspeed"] = str(_REPO_ROOT / "scripts" / deepspeed)
    train_steps(model_dir, data, videos, work / "straight", **options)
    resume = str(work / "straight" / "checkpoint-3")
    train_steps(model_dir, data, videos, work / "resumed", resume_from_checkpoint=resume, **options)
    update = language_update(model_dir, work / "straight")
    difference = (update - language_update(model_dir, work / "resumed")).abs().max().item()
    largest = update.abs().max().item()
    if largest == 0 or difference > 0.05 * largest:
        raise RuntimeError(f"resumed weights differ by {difference:.3g}; the run changed them by up to {largest:.3g}")
    return f"max difference {difference:.3g} (largest change {largest:.3g})"


def check_zero2_matches_one_process(model_dir: Path, work: Path) -> str:
    """ZeRO-2 (one process, bf16) follows the same run without DeepSpeed (bf16 mixed precision)."""
    data, videos = training_data(work)
    plain = train_steps(model_dir, data, videos, work / "plain", bf16=True)
    zero2 = train_steps(
        model_dir, data, videos, work / "zero2", bf16=True, deepspeed=str(_REPO_ROOT / "scripts" / "zero2.json")
    )
    gap = max(abs(a - b) for a, b in zip(plain["losses"], zero2["losses"]))
    if len(plain["losses"]) != len(zero2["losses"]) or gap > 0.05:
        raise RuntimeError(f"loss curves differ by up to {gap:.3g}: {plain['losses']} vs {zero2['losses']}")
    return f"loss curves within {gap:.3g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, help="where to write models and checkpoints (default: a temp dir)")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from real_geometry import build_real_geometry_model

    from llava_star.optional import is_available

    if not torch.cuda.is_available():
        logger.error("gpu_check: no CUDA device; this check needs one GPU")
        return 2
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="llava_star_gpu_check_"))
    attentions = ["sdpa"] + (["flash_attention_2"] if is_available("flash_attn") else [])
    rows: list[tuple[str, str, str, float]] = []

    def check(name: str, step: Callable[[], str]) -> None:
        started = time.perf_counter()
        try:
            rows.append((name, "PASS", step(), time.perf_counter() - started))
        except Exception as error:  # noqa: BLE001 (a check that fails is a row of the table, the rest still run)
            logger.error("%s failed:\n%s", name, traceback.format_exc())
            rows.append((name, "FAIL", f"{type(error).__name__}: {error}"[:160], time.perf_counter() - started))

    models = {family: build_real_geometry_model(family, work / "models" / family) for family in args.families}
    for family, model_dir in models.items():
        for attention in attentions:
            check(f"{family} bf16 {attention} batched generate", lambda d=model_dir, a=attention: check_generate(d, a))
    if is_available("vllm"):
        from llava_star.models.families import FAMILIES as FAMILY_FACTS
        from llava_star.models.loading import model_family

        for family, model_dir in models.items():
            if FAMILY_FACTS[model_family(str(model_dir))].vllm_videos:
                check(f"{family} bf16 vllm batched generate", lambda d=model_dir: check_vllm_generate(d))
    if "video_llava" in models:
        flash = "flash_attention_2" if "flash_attention_2" in attentions else None
        check(
            "video_llava ZeRO-2 5 steps, save, reload, generate",
            lambda: check_train_save_reload(models["video_llava"], work / "train", flash),
        )
    # the training equivalences of the CPU suite, in bf16 on the GPU (a few seconds each)
    for family, model_dir in models.items():
        for attention in attentions:
            check(
                f"{family} bf16 {attention} 30 steps follow fp32",
                lambda d=model_dir, a=attention, f=family: check_bf16_follows_fp32(d, work / "bf16" / f / a, a),
            )
        check(
            f"{family} resumed == uninterrupted (bf16, no DeepSpeed)",
            lambda d=model_dir, f=family: check_resume_matches(d, work / "resume" / f, None),
        )
    if "video_llava" in models:  # ZeRO-3 last: transformers keeps its config for the rest of the process
        check(
            "video_llava ZeRO-2 == no DeepSpeed (bf16)",
            lambda: check_zero2_matches_one_process(models["video_llava"], work / "zero2"),
        )
        for zero in ("zero2.json", "zero3.json"):
            check(
                f"video_llava resumed == uninterrupted ({zero})",
                lambda z=zero: check_resume_matches(models["video_llava"], work / "resume" / z, z),
            )
    width = max(len(row[0]) for row in rows)
    lines = [f"{'check'.ljust(width)}  result  seconds  detail"]
    lines += [f"{name.ljust(width)}  {result:6}  {seconds:7.1f}  {detail}" for name, result, detail, seconds in rows]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.write(
        f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, flash-attn: {is_available('flash_attn')}, "
        f"vllm: {is_available('vllm')}\n"
    )
    return 0 if all(row[1] == "PASS" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
