"""Kill -9 a self-training cycle at random moments, rerun it, and count what was lost or doubled.

A reference cycle runs once uninterrupted (synthetic videos, some of them broken; a tiny
Video-LLaVA; held-out evaluation and an lmms-eval task). Then each round starts the same
cycle in a fresh directory, kills its whole process group with SIGKILL at a random moment
inside a chosen stage (generate, export, train, eval), reruns the same command to the end,
and compares with the reference: the ids of the generation and failure shards (each id
once), the ids of train.json, and the held-out and lmms-eval results.

    python scripts/soak.py --rounds 20          # prints: kills: 20, lost: 0, duplicated: 0
    python scripts/soak.py --rounds 4 --no-lmms-eval

Exit status 1 when anything was lost, doubled or different.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from llava_star.runs import CycleRunDir, GenerationDir

logger = logging.getLogger("soak")
STAGES = ("generate", "export", "train", "eval")


@dataclass(frozen=True)
class Inputs:
    samples: Path
    held_out: Path
    video_root: Path
    model: Path


def make_inputs(root: Path, seed: int) -> Inputs:
    """Synthetic colour questions with a missing, a corrupt and a truncated video, and a tiny model."""
    from llava_star.datasets.synthetic import make_synthetic_dataset
    from llava_star.models.tiny import build_tiny_model

    dataset = make_synthetic_dataset(root / "data", num_videos=12, seed=seed)

    def colour_questions(path: Path) -> list[dict[str, Any]]:
        return [sample for sample in map(json.loads, path.read_text().splitlines()) if sample["task"] == "colour"]

    train, held_out = colour_questions(dataset.train)[:12], colour_questions(dataset.test)[:4]
    good = (dataset.root / train[0]["video"]).read_bytes()
    (dataset.root / "broken_corrupt.mp4").write_bytes(bytes(range(256)) * 16)
    (dataset.root / "broken_truncated.mp4").write_bytes(good[: len(good) // 3])
    broken = [
        {**train[0], "id": f"broken-{name}", "video": f"broken_{name}.mp4"}
        for name in ("missing", "corrupt", "truncated")
    ]
    samples, held = root / "train.jsonl", root / "held_out.jsonl"
    samples.write_text("".join(json.dumps(s) + "\n" for s in train + broken))
    held.write_text("".join(json.dumps(s) + "\n" for s in held_out + broken[:1]))
    model = build_tiny_model("video_llava", root / "model", seed=seed)
    return Inputs(samples, held, dataset.root, model)


def write_cycle_config(inputs: Inputs, output_dir: Path, lmms_eval: bool) -> Path:
    mix = output_dir.parent / f"{output_dir.name}.mix.json"
    record = json.loads(inputs.samples.read_text().splitlines()[0])
    # a random model keeps no answer; a mixed-in record makes every cycle train
    mix.write_text(
        json.dumps(
            [
                {
                    "id": "mix-0",
                    "video": record["video"],
                    "conversations": [
                        {"from": "human", "value": "<video>\n" + record["question"]},
                        {"from": "gpt", "value": "It is red."},
                    ],
                }
            ]
        )
    )
    config = {
        "model": str(inputs.model),
        "samples": str(inputs.samples),
        "video_root": str(inputs.video_root),
        "output_dir": str(output_dir),
        "cycles": 1,
        "min_kept_gain": None,
        "generate": {"batch_size": 2, "num_frames": 4, "max_new_tokens": 16, "num_workers": 0},
        "train": {
            "mix": [str(mix)],
            "options": {
                "max_steps": 6,
                "per_device_train_batch_size": 2,
                "learning_rate": 1e-3,
                "dataloader_num_workers": 0,
                "save_strategy": "steps",
                "save_steps": 2,
            },
        },
        "eval": {
            "samples": str(inputs.held_out),
            "baseline": False,
            "lmms_tasks": ["llava_star_qa"] if lmms_eval else [],
        },
    }
    path = output_dir.parent / f"{output_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_cycle(config: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.Popen(
        [sys.executable, "-m", "llava_star", "cycle", "--config", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def run_cycle(config: Path) -> None:
    process = start_cycle(config)
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"cycle failed ({process.returncode}): {stderr.decode()[-3000:]}")


def stage_started(output_dir: Path, stage: str) -> Path:
    """The file whose appearance says ``stage`` has begun (generate writes its config first)."""
    cycle = CycleRunDir(output_dir).cycle(1)
    return cycle.generations.config if stage == "generate" else cycle.marker(STAGES[STAGES.index(stage) - 1])


def running_stage(output_dir: Path) -> str:
    """The stage a run is in, from the files stages write first and the markers they leave last."""
    cycle = CycleRunDir(output_dir).cycle(1)
    if not stage_started(output_dir, "generate").exists():
        return "start"
    return next((stage for stage in STAGES if cycle.done(stage) is None), "done")


def stage_durations(output_dir: Path) -> dict[str, float]:
    """Seconds each stage of the reference run took, from its first file to its marker."""
    cycle = CycleRunDir(output_dir).cycle(1)
    return {
        stage: max(0.05, cycle.marker(stage).stat().st_mtime - stage_started(output_dir, stage).stat().st_mtime)
        for stage in STAGES
    }


def kill_inside(config: Path, output_dir: Path, stage: str, delay: float, timeout: float = 600) -> str:
    """Start the cycle, SIGKILL its process group ``delay`` s after ``stage`` starts; return where it was."""
    process = start_cycle(config)
    deadline = time.monotonic() + timeout
    try:
        while not stage_started(output_dir, stage).exists() and process.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {stage}")
            time.sleep(0.005)
        time.sleep(delay)
        where = running_stage(output_dir)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()
    return where if process.returncode == -signal.SIGKILL else "finished before the kill"


def outcome(output_dir: Path) -> dict[str, Any]:
    """What a finished run produced: ids (with multiplicity) and results."""
    cycle = CycleRunDir(output_dir).cycle(1)

    def shard_ids(directory: GenerationDir) -> collections.Counter:
        lines = [
            json.loads(line)
            for shard in directory.generation_shards() + directory.failure_shards()
            for line in shard.read_text().splitlines()
        ]
        return collections.Counter(line["id"] for line in lines)

    evaluation = json.loads(cycle.eval_result.read_text())
    lmms = None
    if evaluation.get("lmms_eval_dir"):
        lmms = json.loads((Path(evaluation["lmms_eval_dir"]) / "metrics.json").read_text())["tasks"]
    return {
        "generations": shard_ids(cycle.generations),
        "eval_generations": shard_ids(cycle.eval_generations),
        "train_ids": collections.Counter(record["id"] for record in json.loads(cycle.train_data.read_text())),
        "held_out": {key: evaluation[key] for key in ("samples", "passed", "accuracy", "unreadable_videos")},
        "lmms_eval": lmms,
    }


def compare(reference: dict[str, Any], found: dict[str, Any]) -> tuple[int, int, list[str]]:
    """(lost ids, duplicated lines, other differences)."""
    lost = duplicated = 0
    for key in ("generations", "eval_generations", "train_ids"):
        lost += sum((reference[key] - found[key]).values())
        duplicated += sum(count - 1 for count in found[key].values() if count > 1)
    different = [key for key in ("held_out", "lmms_eval") if reference[key] != found[key]]
    return lost, duplicated, different


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-lmms-eval", dest="lmms_eval", action="store_false")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.workdir or Path(scratch)
        inputs = make_inputs(root / "inputs", args.seed)
        reference_dir = root / "reference"
        run_cycle(write_cycle_config(inputs, reference_dir, args.lmms_eval))
        reference = outcome(reference_dir)
        durations = stage_durations(reference_dir)
        logger.info("reference run: %s", {stage: round(seconds, 2) for stage, seconds in durations.items()})
        kills, lost, duplicated, different, where = 0, 0, 0, [], collections.Counter()
        for round_number in range(args.rounds):
            stage = STAGES[round_number % len(STAGES)]
            output_dir = root / f"round_{round_number}"
            config = write_cycle_config(inputs, output_dir, args.lmms_eval)
            landed = kill_inside(config, output_dir, stage, rng.uniform(0, durations[stage]))
            kills += landed != "finished before the kill"
            where[landed] += 1
            run_cycle(config)  # the rerun resumes
            round_lost, round_duplicated, round_different = compare(reference, outcome(output_dir))
            lost, duplicated = lost + round_lost, duplicated + round_duplicated
            different += [f"round {round_number}: {key}" for key in round_different]
            logger.info(
                "round %d: killed in %s; lost %d, duplicated %d%s",
                round_number,
                landed,
                round_lost,
                round_duplicated,
                f", different: {round_different}" if round_different else "",
            )
    sys.stdout.write(f"kills by stage: {dict(where)}\n")
    sys.stdout.write(f"kills: {kills}, lost: {lost}, duplicated: {duplicated}\n")
    if different:
        sys.stdout.write(f"different results: {', '.join(different)}\n")
    return 0 if not (lost or duplicated or different) else 1


if __name__ == "__main__":
    sys.exit(main())
