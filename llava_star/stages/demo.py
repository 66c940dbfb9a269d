"""The CPU demo: Video-STaR self-training cycles end to end in a few minutes, offline.

``llava-star demo [-o DIR] [key=value ...]`` (``make demo``):

1. writes synthetic labeled videos (coloured shapes, :mod:`llava_star.datasets.synthetic`)
   and keeps their ``colour`` and ``motion_direction`` questions (one read from any frame,
   one that needs the video over time), split by video into training and held-out;
2. builds a tiny random Video-LLaVA (:mod:`llava_star.models.tiny`) with 2x2 patches a
   frame and shows it 2 frames a clip, the geometry under which it can learn motion at all
   (docs/cycle.md, "Why these settings");
3. warms it up on captions of 120 training videos ("A red square moves left."), so it
   starts with partial competence, the way a pretrained LVLM starts on a new task;
4. runs self-training cycles (:mod:`llava_star.stages.cycle`): the model answers, the
   verifier keeps the answers that state the label, failures are asked again with the label
   as a hint, the warm model is fine-tuned on what was kept, and the held-out accuracy is
   measured after each cycle;
5. prints a table per cycle and where the report is (``DIR/cycles/report/index.html``).

``llava-star demo --ablation`` runs the arms of :mod:`llava_star.ablation` (Video-STaR, no
rationalization, no verifier, gold labels, the warm start) on the same data, warm start and
budget for several seeds, and prints one table (docs/cycle.md says how to read it).

What it shows: the loop and its parts measured with real models, prompts, verifier,
training and resume. What it does not show: anything about real video LVLMs or real
datasets; the model is ~130k parameters and the tasks are toys.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from llava_star.ablation import (
    ARMS,
    Arm,
    ablation_page,
    accuracy_by_task,
    false_claim_rate,
    format_table,
    gold_records,
    plot,
    summarize,
)
from llava_star.config import check, load_config, write_config
from llava_star.cycle_config import CycleConfig, EvalSettings, TrainSettings, format_summary
from llava_star.datasets.captions import warmup_records
from llava_star.datasets.synthetic import ATTRIBUTES, SyntheticConfig, make_synthetic_dataset, truth_by_video
from llava_star.generation.options import GenerationOptions
from llava_star.io import write_json_atomic, write_jsonl_atomic, write_text_atomic
from llava_star.log import configure_logging
from llava_star.models.tiny import FRAME_SIZE, build_tiny_model
from llava_star.records import read_samples
from llava_star.runs import CycleRunDir, StageDir
from llava_star.stages import train
from llava_star.stages.cycle import CycleRunner, run_cycles

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """The demo's knobs (``llava-star demo key=value``); the defaults are what ``make demo`` runs."""

    seed: int = 0
    # half are moving scenes with colour and motion questions; with held_out_fraction 0.4:
    # 300 training and 200 held-out videos, so 600 training and 400 held-out questions
    num_videos: int = 1000
    tasks: tuple[str, ...] = ("colour", "motion_direction")  # one read from any frame, one over time
    held_out_fraction: float = 0.4
    family: str = "video_llava"
    # The geometry under which the tiny model learns motion at all (docs/cycle.md, "Why these
    # settings"): the shape crosses from edge to edge, the model sees the clip's start and end
    # (2 frames) through 2x2 patches a frame; 8 frames of 4x4 patches stay at chance.
    num_frames: int = 2
    travel: float | None = 1.0  # how far a moving shape crosses its room (SyntheticConfig.travel)
    # the tiny Video-LLaVA's patch side (build_tiny_model); other families keep their own geometry
    patch_size: int | None = 16
    warmup_videos: int = 120  # captioned training videos the warm-up sees (30 per colour)
    warmup_steps: int = 500  # partial competence: ~90% colour, ~33% motion (chance 25%)
    warmup_hints: bool = True  # also show the captions behind the hint prompt (see warmup_records)
    cycles: int = 3
    cycle_train_steps: int = 300
    learning_rate: float = 1.0e-3
    batch_size: int = 16
    max_new_tokens: int = 16
    min_kept_gain: float | None = 0.01
    # every kept answer asked again on a flat frame of the clip's mean colour: the report's
    # grounded fraction (none: off)
    grounding_check: str = "blank"
    # the DPO variant (docs/cycle.md): sft (Video-STaR), dpo, or sft_then_dpo, which spends
    # dpo_train_steps of the cycle_train_steps on DPO, so both variants take as many optimizer steps
    objective: str = "sft"
    dpo_train_steps: int = 30
    dpo_learning_rate: float = 1.0e-4
    dpo_beta: float = 0.1
    dpo_sft_weight: float = 0.0  # the SFT term on the chosen answers (RPO), against DPO's drift
    # answers sampled per question (needs temperature > 0): more failing answers to pair
    num_answers: int = 1
    temperature: float = 0.0
    # A ~100k-parameter model gains nothing from a second intra-op thread, and on a shared
    # 2-core machine the thread sync costs ~10x per step (measured: 0.25 s vs 2.5 s).
    torch_threads: int = 1
    ablation_seeds: int = 3  # llava-star demo --ablation: every arm on seeds seed, seed+1, ...
    ablation_jobs: int = 2  # seeds run side by side, one process (and torch_threads threads) each

    def __post_init__(self) -> None:
        for key in (
            "num_videos",
            "num_frames",
            "warmup_videos",
            "warmup_steps",
            "cycles",
            "cycle_train_steps",
            "batch_size",
            "max_new_tokens",
            "torch_threads",
            "dpo_train_steps",
            "ablation_seeds",
            "ablation_jobs",
        ):
            check(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        check(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        check(
            self.patch_size is None or (self.patch_size >= 1 and FRAME_SIZE % self.patch_size == 0),
            "patch_size",
            f"must divide the tiny model's {FRAME_SIZE} px frames, got {self.patch_size}",
        )
        check(
            self.objective != "sft_then_dpo" or self.dpo_train_steps < self.cycle_train_steps,
            "dpo_train_steps",
            f"must be below cycle_train_steps ({self.cycle_train_steps}) with objective sft_then_dpo",
        )
        unknown = sorted(set(self.tasks) - set(ATTRIBUTES))
        check(bool(self.tasks) and not unknown, "tasks", f"expected some of {', '.join(ATTRIBUTES)}, got {unknown}")


def make_data(config: DemoConfig, out: Path) -> dict[str, Any]:
    """Synthetic videos, and their questions of ``config.tasks`` split into training and held-out files."""
    if (done := StageDir(out).done("data")) is not None:
        return done
    synthetic = SyntheticConfig(test_fraction=config.held_out_fraction, travel=config.travel)
    dataset = make_synthetic_dataset(out / "data", num_videos=config.num_videos, seed=config.seed, config=synthetic)
    files = {}
    for split, path in (("train", dataset.train), ("held_out", dataset.test)):
        samples = [sample for sample in read_samples(path) if sample.task in config.tasks]
        check(bool(samples), "num_videos", f"too few videos: no {', '.join(config.tasks)} questions in {split}")
        files[split] = str(out / f"questions_{split}.jsonl")
        write_jsonl_atomic(files[split], samples)
        files[f"{split}_samples"] = len(samples)
    paths = {"video_root": str(dataset.root), "all_train": str(dataset.train), "all_samples": str(dataset.samples)}
    return StageDir(out).mark_done("data", {**paths, **files})


def train_options(config: DemoConfig, steps: int) -> dict[str, Any]:
    """``llava-star train`` settings for a tiny model on 2 CPU cores (the seed and frames per
    video are the cycle's own keys: the warm-up adds them)."""
    return {
        "max_steps": steps,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": "constant",
        "warmup_ratio": 0.0,
        "per_device_train_batch_size": config.batch_size,
        "dataloader_num_workers": 0,
        "logging_steps": 10,
    }


def warm_up(config: DemoConfig, out: Path, data: dict[str, Any]) -> str:
    """Build the tiny model and train it briefly on captions; returns the warm checkpoint."""
    directory = out / "warmup"
    if (done := StageDir(directory).done("train")) is not None:
        return done["model"]

    patch_size = config.patch_size if config.family == "video_llava" else None
    base = build_tiny_model(config.family, directory / "random_model", seed=config.seed, patch_size=patch_size)
    records = warmup_records(
        list(read_samples(data["all_train"])),
        config.warmup_videos,
        random.Random(config.seed),
        hint_tasks=config.tasks if config.warmup_hints else (),
    )
    write_json_atomic(directory / "captions.json", records)

    options = {
        **train_options(config, config.warmup_steps),
        "seed": config.seed,
        "num_frames": config.num_frames,
        "model": str(base),
        "data": [str(directory / "captions.json")],
        "video_root": data["video_root"],
        "output_dir": str(directory / "model"),
    }
    train.run(train.make_config(options))
    return StageDir(directory).mark_done("train", {"model": str(directory / "model"), "captions": len(records)})[
        "model"
    ]


def cycle_config(
    config: DemoConfig, output_dir: Path, data: dict[str, Any], model: str, arm: Arm = ARMS[0]
) -> CycleConfig:
    """The demo's cycles; an ablation ``arm`` changes what each cycle trains on, nothing else."""
    return CycleConfig(
        model=model,
        samples=data["train"],
        video_root=data["video_root"],
        output_dir=str(output_dir),
        cycles=config.cycles,
        min_kept_gain=config.min_kept_gain,
        seed=config.seed,
        generate=GenerationOptions(
            batch_size=config.batch_size,
            num_frames=config.num_frames,
            max_new_tokens=config.max_new_tokens,
            grounding_check=config.grounding_check,
            num_answers=config.num_answers,
            temperature=config.temperature,
            rationalize=arm.rationalize,
        ),
        train=replace(cycle_train_settings(config), verified_only=arm.verified_only),
        eval=EvalSettings(samples=data["held_out"], baseline=True),
    )


def cycle_train_settings(config: DemoConfig) -> TrainSettings:
    """The cycle's training by ``objective``: SFT for ``cycle_train_steps``; DPO for them; or
    SFT for ``cycle_train_steps - dpo_train_steps`` then DPO for ``dpo_train_steps`` (the same
    optimizer steps as SFT alone)."""
    if config.objective == "sft":
        return TrainSettings(options=train_options(config, config.cycle_train_steps))
    dpo_steps = config.dpo_train_steps if config.objective == "sft_then_dpo" else config.cycle_train_steps
    sft_steps = config.cycle_train_steps - config.dpo_train_steps
    return TrainSettings(
        options=train_options(config, sft_steps if config.objective == "sft_then_dpo" else config.cycle_train_steps),
        objective=config.objective,
        dpo_options={
            "max_steps": dpo_steps,
            "learning_rate": config.dpo_learning_rate,
            "dpo_beta": config.dpo_beta,
            "dpo_sft_weight": config.dpo_sft_weight,
        },
    )


def grounded_fractions(run_dir: Path) -> list[dict[str, float | None]]:
    """Per cycle, the grounded fraction of the kept training answers, overall and per task."""
    fractions = []
    for number in CycleRunDir(run_dir).cycle_numbers():
        summary_file = CycleRunDir(run_dir).cycle(number).generations.summary
        if not summary_file.is_file():
            continue
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
        by_task = {task: counts["grounded_fraction"] for task, counts in summary.get("grounded_by_task", {}).items()}
        fractions.append({"overall": summary.get("grounded_fraction"), **by_task})
    return fractions


def run_demo(config: DemoConfig, out: Path) -> dict[str, Any]:
    """All demo steps (each resumes when rerun); returns the cycle summary plus timings."""
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    write_config(config, out / "demo.yaml")
    data = make_data(config, out)
    warm_model = warm_up(config, out, data)
    summary = run_cycles(cycle_config(config, out / "cycles", data, warm_model))
    warm = summary["baseline"]["accuracy"]
    last = summary["cycles"][-1]["eval"]["accuracy"]
    result = {
        "warm_start_accuracy": warm,
        "accuracy_by_cycle": [entry["eval"]["accuracy"] for entry in summary["cycles"]],
        "kept_fraction_by_cycle": [entry["generate"]["kept_fraction"] for entry in summary["cycles"]],
        "grounded_fraction_by_cycle": grounded_fractions(out / "cycles"),
        "objective": config.objective,
        "pairs_by_cycle": [entry.get("pairs", {}).get("pairs") for entry in summary["cycles"]],
        "dpo_margin_by_cycle": [entry["train"].get("dpo_margin") for entry in summary["cycles"]],
        "gain_points": round(100 * (last - warm), 1),
        "wall_seconds_this_run": round(time.monotonic() - started, 1),
        "held_out_samples": data["held_out_samples"],
        "train_samples": data["train_samples"],
        "report": str(CycleRunDir(out / "cycles").report_page),
    }
    write_json_atomic(out / "demo.json", result)
    return {"summary": summary, "result": result}


# ---------------------------------------------------------------- the ablation (--ablation)


def run_gold_arm(config: DemoConfig, out: Path, data: dict[str, Any], warm_model: str) -> dict[str, Any]:
    """Train the warm model once on gold answers (every cycle of STaR would train the same
    model on the same data from the same start) and measure it as the cycles are measured."""
    runner = CycleRunner(cycle_config(config, out, data, warm_model))
    stage = runner.run_dir.cycle(1)
    records = gold_records(list(read_samples(data["train"])), truth_by_video(read_samples(data["all_samples"])))
    if not stage.train_data.exists():
        write_json_atomic(stage.train_data, records)
    trained = runner.train(stage, warm_model, {"data": str(stage.train_data), "samples": len(records)})
    evaluated = runner.evaluate(stage, trained["model"], 1)
    by_task = accuracy_by_task(stage.eval_generations.generations())
    return {
        "accuracy": [evaluated["accuracy"]] * config.cycles,
        "by_task": by_task,
        "trained_on": [records],
        "kept": 1.0,
    }


def run_cycle_arm(config: DemoConfig, out: Path, data: dict[str, Any], warm_model: str, arm: Arm) -> dict[str, Any]:
    """Every cycle of one arm, on the same data and budget (no early stop, so arms compare)."""
    cycles = cycle_config(config, out, data, warm_model, arm)
    cycles = replace(cycles, min_kept_gain=None, eval=replace(cycles.eval, baseline=arm == ARMS[0]))
    summary = run_cycles(cycles)
    run_dir = CycleRunDir(Path(cycles.output_dir))
    trained_on = [
        json.loads(run_dir.cycle(entry["cycle"]).train_data.read_text(encoding="utf-8"))
        if entry["export"]["data"]
        else []
        for entry in summary["cycles"]
    ]
    baseline = run_dir.baseline.eval_generations
    return {
        "baseline": summary["baseline"]["accuracy"] if summary["baseline"] else None,
        "baseline_by_task": accuracy_by_task(baseline.generations()) if summary["baseline"] else None,
        "accuracy": [entry["eval"]["accuracy"] for entry in summary["cycles"]],
        "by_task": accuracy_by_task(run_dir.cycle(summary["cycles"][-1]["cycle"]).eval_generations.generations()),
        "trained_on": trained_on,
        "kept": statistics.mean(entry["export"]["samples"] / data["train_samples"] for entry in summary["cycles"]),
    }


def run_seed(config: DemoConfig, out: Path) -> dict[str, dict[str, Any]]:
    """Every arm on one seed's data and warm start; per arm its accuracies, kept fraction and
    the false-claim rate of what it trained on."""
    data = make_data(config, out)
    warm_model = warm_up(config, out, data)
    truth = truth_by_video(read_samples(data["all_samples"]))
    results = {}
    for arm in ARMS:
        if arm.name == "warm_start":
            continue
        run = run_gold_arm if arm.name == "gold" else partial(run_cycle_arm, arm=arm)
        results[arm.name] = run(config, out / arm.name, data, warm_model)
    start = results[ARMS[0].name]["baseline"]
    outcome = {
        "warm_start": {
            "accuracy": [start] + [None] * config.cycles,
            "by_task": results[ARMS[0].name]["baseline_by_task"],
            "kept": None,
            "false_claims": None,
        }
    }
    for name, result in results.items():
        pooled = [record for records in result["trained_on"] for record in records]
        outcome[name] = {
            "accuracy": [start, *result["accuracy"]],
            "by_task": result["by_task"],
            "kept": result["kept"],
            "false_claims": false_claim_rate(pooled, truth),
        }
    return outcome


def run_seed_in_process(config: DemoConfig, out: Path) -> dict[str, dict[str, Any]]:
    """:func:`run_seed` with this process's torch threads pinned, so a seed's figures do not
    depend on the process it ran in."""
    import torch

    torch.set_num_threads(config.torch_threads)
    return run_seed(config, out)


def run_ablation(config: DemoConfig, out: Path) -> dict[str, Any]:
    """Every arm on ``ablation_seeds`` seeds; writes ``ablation.json``, the table, a plot and a page."""
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    write_config(config, out / "demo.yaml")
    seeds = range(config.seed, config.seed + config.ablation_seeds)
    jobs = min(config.ablation_jobs, len(seeds))
    if jobs == 1:
        by_seed = {seed: run_seed_in_process(replace(config, seed=seed), out / f"seed_{seed}") for seed in seeds}
    else:  # the seeds are independent runs: one process each (every one pins its own torch threads)
        context = multiprocessing.get_context("spawn")  # no forked torch or tokenizer state
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=configure_logging) as pool:
            futures = {
                seed: pool.submit(run_seed_in_process, replace(config, seed=seed), out / f"seed_{seed}")
                for seed in seeds
            }
            by_seed = {seed: future.result() for seed, future in futures.items()}
    runs = {arm.name: [by_seed[seed][arm.name] for seed in by_seed] for arm in ARMS}
    table = summarize(runs, config.cycles)
    text = format_table(table, config.cycles)
    plot(table, config.cycles, out / "ablation.png")
    write_text_atomic(
        out / "index.html", ablation_page(text, config.tasks, range(config.seed, config.seed + config.ablation_seeds))
    )
    result = {"table": table, "by_seed": by_seed, "wall_seconds_this_run": round(time.monotonic() - started, 1)}
    write_json_atomic(out / "ablation.json", result)
    return {"text": text, **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llava-star demo",
        description="CPU demo: synthetic videos, a tiny Video-LLaVA, warm-up, self-training cycles, report.",
    )
    parser.add_argument("-o", "--output", type=Path, help="output folder (default demo_run, or ablation_run)")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="run every arm (Video-STaR, no rationalization, no verifier, gold labels, warm start) on "
        "ablation_seeds seeds and print one table (default output ablation_run)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="change a demo setting, e.g. cycles=2")
    args = parser.parse_args(argv)
    config = load_config(DemoConfig, None, args.overrides)
    import torch

    torch.set_num_threads(config.torch_threads)  # this process runs every stage of the demo
    if args.ablation:
        out = args.output if args.output is not None else Path("ablation_run")
        outcome = run_ablation(config, out)
        lines = [
            outcome["text"],
            f"held-out accuracy and rates in %, mean (min-max) over {config.ablation_seeds} seeds",
            f"wall time: {outcome['wall_seconds_this_run']:.0f} s",
            f"report: {(out / 'index.html').resolve()}",
        ]
        sys.stdout.write("\n".join(lines) + "\n")
        return 0
    args.output = args.output if args.output is not None else Path("demo_run")
    outcome = run_demo(config, args.output)
    result = outcome["result"]
    lines = [
        format_summary(outcome["summary"]),
        (
            f"held-out accuracy: warm start {100 * result['warm_start_accuracy']:.1f}% -> after the last cycle "
            f"{100 * result['accuracy_by_cycle'][-1]:.1f}% ({result['gain_points']:+.1f} points, "
            f"{result['held_out_samples']} held-out questions)"
        ),
        "grounded fraction of kept answers by cycle (--grounding-check "
        + config.grounding_check
        + "): "
        + ", ".join(
            "-" if entry["overall"] is None else f"{100 * entry['overall']:.0f}%"
            for entry in result["grounded_fraction_by_cycle"]
        ),
        f"wall time: {result['wall_seconds_this_run']:.0f} s",
        f"report: {Path(result['report']).resolve()}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    logger.debug("demo result: %s", json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
