"""Self-training cycles (Video-STaR stage 6): generate, export, train, evaluate, repeat.

``llava-star cycle --config cycle.yaml [key=value ...]`` runs, for k = 1..K::

    cycle_k/generations/   model_k answers the training samples (rationalization on)
    cycle_k/train.json     the kept answers as LLaVA conversations
    cycle_k/model/         model_{k+1}, fine-tuned from the base checkpoint (STaR)
                           or from model_k (``train_from: previous``)
    cycle_k/eval/          model_{k+1} answers the held-out samples directly
    cycle_k/eval.json      held-out accuracy: the fraction of direct answers that pass

``baseline/`` holds the same evaluation of the starting model, ``final/`` the optional
final model trained on direct answers only (the paper's recipe), ``config.yaml`` the
resolved config and ``report/`` the statistics, plots and gallery (``llava-star report``).
The loop stops early when the kept fraction grows by less than ``min_kept_gain``.

Resuming: every stage writes its outputs first and a marker ``done/STAGE.json``
(atomically) last, so a rerun of the same command skips finished stages and resumes at
the first unfinished stage of the first unfinished cycle; a generation stage killed
half-way resumes inside its shards (``llava-star generate`` skips ids already written),
a training stage from its last ``checkpoint-N`` when ``train.options`` saves some
(``save_strategy: steps``; without checkpoints it starts again).

On one machine every stage runs in this process. On a cluster, ``launch.generate``,
``launch.train`` and ``launch.eval`` give the command that starts ``llava_star`` for that
stage (e.g. ``[torchrun, --nproc_per_node=8, -m, llava_star]`` or
``[deepspeed, --num_gpus=8, --module, llava_star]``); the stage's arguments follow.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from llava_star.config import check, config_to_dict, load_config, read_yaml_mapping, write_config
from llava_star.errors import ConfigError, LlavaStarError
from llava_star.records import Generation, write_json_atomic, write_text_atomic
from llava_star.stages.report import read_generation_dir, read_video_failures, summarize

logger = logging.getLogger(__name__)

STAGES = ("generate", "export", "train", "eval")
_TRAIN_KEYS_SET_BY_THE_CYCLE = ("model", "data", "output_dir", "video_root", "resume_from_checkpoint")
# The file the Trainer writes last into a checkpoint-N directory: a checkpoint without it was cut short.
_TRAINER_STATE = "trainer_state.json"
CONFIG_NAME = "config.yaml"


@dataclass(frozen=True)
class GenerateSettings:
    """Options of ``llava-star generate`` used for both training and held-out samples."""

    batch_size: int = 8
    num_frames: int = 8
    max_new_tokens: int = 256
    temperature: float = 0.0
    rationalize: bool = True
    extra_args: tuple[str, ...] = ()  # passed verbatim, e.g. [--dtype, bfloat16]

    def __post_init__(self) -> None:
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.num_frames >= 1, "num_frames", f"must be >= 1, got {self.num_frames}")
        check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        check(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")


@dataclass(frozen=True)
class TrainSettings:
    """How each cycle's model is trained.

    ``options`` are keys of ``llava-star train``'s config (its flags with underscores:
    ``learning_rate``, ``num_train_epochs``, ``per_device_train_batch_size``, ``deepspeed``,
    ``lora`` ...); the cycle writes them with the model, data and output directory into
    ``cycle_k/train_config.yaml`` and runs ``llava-star train --config`` on it.
    """

    from_checkpoint: Literal["base", "previous"] = "base"  # STaR restarts from the base model
    mix: tuple[str, ...] = ()  # other LLaVA JSON files appended to each cycle's data
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in _TRAIN_KEYS_SET_BY_THE_CYCLE:
            check(key not in self.options, f"options.{key}", "is set by the cycle itself; remove it")


@dataclass(frozen=True)
class EvalSettings:
    """Held-out evaluation after each cycle (direct answers, verified)."""

    samples: str | None = None  # held-out samples JSONL; no evaluation when empty
    baseline: bool = True  # evaluate the starting model too (baseline/eval.json)
    limit: int | None = None  # first N held-out samples only
    lmms_tasks: tuple[str, ...] = ()  # optional lmms-eval tasks run by `llava-star eval`

    def __post_init__(self) -> None:
        check(self.limit is None or self.limit >= 1, "limit", f"must be >= 1, got {self.limit}")


@dataclass(frozen=True)
class LaunchSettings:
    """Command prefixes that start ``llava_star`` for a stage; empty means in this process."""

    generate: tuple[str, ...] = ()
    train: tuple[str, ...] = ()
    eval: tuple[str, ...] = ()


@dataclass(frozen=True)
class CycleConfig:
    """Everything ``llava-star cycle`` needs; see ``configs/cycle.yaml`` for an example."""

    model: str  # base checkpoint: a hub id or a local directory
    samples: str  # training samples JSONL (llava-star prepare / synthetic)
    video_root: str
    output_dir: str
    cycles: int = 3
    min_kept_gain: float | None = 0.01  # stop when the kept fraction grows less; null: never
    final_direct_only: bool = False  # train a final model on direct answers only
    seed: int = 0
    generate: GenerateSettings = field(default_factory=GenerateSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    launch: LaunchSettings = field(default_factory=LaunchSettings)

    def __post_init__(self) -> None:
        check(self.cycles >= 1, "cycles", f"must be >= 1, got {self.cycles}")
        for key in ("model", "samples", "video_root", "output_dir"):
            check(bool(getattr(self, key).strip()), key, "must not be empty")


# ---------------------------------------------------------------- running the stages


def _module_for(stage: str) -> str:
    from llava_star.cli import COMMANDS

    return COMMANDS[stage][0]


def run_stage(command: str, argv: list[str], launch_prefix: Sequence[str] = ()) -> None:
    """Run ``llava-star COMMAND argv`` in this process, or through ``launch_prefix`` when set."""
    started = time.monotonic()
    if launch_prefix:
        full = [*launch_prefix, command, *argv]
        logger.info("launching: %s", " ".join(full))
        status = subprocess.run(full, check=False).returncode
    else:
        logger.info("running: llava-star %s %s", command, " ".join(argv))
        status = int(importlib.import_module(_module_for(command)).main(argv) or 0)
    if status != 0:
        raise LlavaStarError(f"llava-star {command} exited with status {status}")
    logger.info("llava-star %s finished in %.1f s", command, time.monotonic() - started)


def stage_done(directory: Path, stage: str) -> dict[str, Any] | None:
    """The marker a finished stage left in ``directory/done/``, or None."""
    marker = directory / "done" / f"{stage}.json"
    if not marker.exists():
        return None
    return json.loads(marker.read_text(encoding="utf-8"))


def mark_done(directory: Path, stage: str, info: dict[str, Any]) -> dict[str, Any]:
    write_json_atomic(directory / "done" / f"{stage}.json", info)
    return info


def kept_fractions(generations: Sequence[Generation]) -> dict[str, float | int]:
    """Counts and fractions of kept answers, direct and after rationalization.

    >>> kept_fractions([])
    {'samples': 0, 'kept': 0, 'kept_direct': 0, 'kept_rationalized': 0, 'kept_fraction': 0.0, 'rationalized_fraction': 0.0}
    """
    counts = summarize(generations)
    keys = ("samples", "kept", "kept_direct", "kept_rationalized", "kept_fraction", "rationalized_fraction")
    return {key: counts[key] for key in keys}


def is_plateau(kept_by_cycle: Sequence[float], min_gain: float | None) -> bool:
    """True when the last cycle's kept fraction grew by less than ``min_gain`` over the one before.

    >>> is_plateau([0.4, 0.6], 0.01), is_plateau([0.4, 0.405], 0.01), is_plateau([0.4], 0.01)
    (False, True, False)
    """
    if min_gain is None or len(kept_by_cycle) < 2:
        return False
    return kept_by_cycle[-1] - kept_by_cycle[-2] < min_gain


@dataclass(frozen=True)
class CycleRunner:
    """Runs the stages of one run directory; every method is safe to call again after a crash."""

    config: CycleConfig

    @property
    def root(self) -> Path:
        return Path(self.config.output_dir)

    def cycle_dir(self, cycle: int) -> Path:
        return self.root / f"cycle_{cycle}"

    def _generate_argv(self, model: str, samples: str, out_dir: Path, *, cycle: int, rationalize: bool) -> list[str]:
        settings = self.config.generate
        argv = [
            "--model", model, "--samples", samples, "--video-root", self.config.video_root, "-o", str(out_dir),
            "--batch-size", str(settings.batch_size), "--num-frames", str(settings.num_frames),
            "--max-new-tokens", str(settings.max_new_tokens), "--temperature", str(settings.temperature),
            "--cycle", str(cycle),
        ]  # fmt: skip
        if not rationalize:
            argv.append("--no-rationalize")
        return argv + list(settings.extra_args)

    def generate(self, directory: Path, model: str, cycle: int) -> dict[str, Any]:
        """Answer the training samples with ``model``; kept fractions go into the marker."""
        if (done := stage_done(directory, "generate")) is not None:
            return done
        out_dir = directory / "generations"
        argv = self._generate_argv(model, self.config.samples, out_dir, cycle=cycle, rationalize=self.config.generate.rationalize)
        run_stage("generate", argv, self.config.launch.generate)
        counts = kept_fractions(read_generation_dir(out_dir))
        return mark_done(directory, "generate", {"model": model, **counts, "unreadable_videos": len(read_video_failures(out_dir))})

    def export(self, directory: Path, generation_dirs: Sequence[Path], *, direct_only: bool) -> dict[str, Any]:
        if (done := stage_done(directory, "export")) is not None:
            return done
        data = directory / "train.json"
        kept = [g for d in generation_dirs for g in read_generation_dir(d) if g.passed and not (direct_only and g.rationalized)]
        if not kept and not self.config.train.mix:  # `llava-star export` refuses to write an empty file
            logger.warning("%s: no answer was kept; nothing to export", directory.name)
            return mark_done(directory, "export", {"data": None, "samples": 0})
        argv = [*map(str, generation_dirs), "-o", str(data)]
        if direct_only:
            argv.append("--direct-only")
        for extra in self.config.train.mix:
            argv += ["--mix", extra]
        run_stage("export", argv)
        records = json.loads(data.read_text(encoding="utf-8"))
        return mark_done(directory, "export", {"data": str(data), "samples": len(records)})

    def train(self, directory: Path, start_model: str, export_info: dict[str, Any]) -> dict[str, Any]:
        """Fine-tune ``start_model`` on the exported data into ``directory/model``.

        With nothing kept there is nothing to learn from: the stage records the starting
        model as its result, so the next cycle generates with it again.
        """
        if (done := stage_done(directory, "train")) is not None:
            return done
        if export_info["samples"] == 0:
            logger.warning("%s: no kept answers to train on; keeping %s", directory.name, start_model)
            return mark_done(directory, "train", {"model": start_model, "trained": False})
        out_dir = directory / "model"
        values = _train_values(self.config, start_model, export_info["data"], str(out_dir))
        resume = last_trainer_checkpoint(out_dir)
        if resume is not None:  # a killed run saved checkpoints (save_strategy: steps): go on from the last
            logger.info("%s: resuming training from %s", directory.name, resume)
            values["resume_from_checkpoint"] = str(resume)
        elif out_dir.exists():  # a killed run with nothing to resume from: start it again
            shutil.rmtree(out_dir)
        train_config = directory / "train_config.yaml"
        write_text_atomic(train_config, yaml.safe_dump(config_to_dict(values), sort_keys=False))
        run_stage("train", ["--config", str(train_config)], self.config.launch.train)
        return mark_done(directory, "train", {"model": str(out_dir), "trained": True, "from": start_model})

    def evaluate(self, directory: Path, model: str, cycle: int) -> dict[str, Any] | None:
        """Held-out accuracy of ``model``: direct answers only, checked by the verifier."""
        settings = self.config.eval
        if settings.samples is None:
            return None
        if (done := stage_done(directory, "eval")) is not None:
            return done
        samples = settings.samples
        out_dir = directory / "eval"
        argv = self._generate_argv(model, samples, out_dir / "generations", cycle=cycle, rationalize=False)
        if settings.limit is not None:
            argv += ["--limit", str(settings.limit)]
        run_stage("generate", argv, self.config.launch.generate)
        generations = read_generation_dir(out_dir / "generations")
        passed = sum(1 for g in generations if g.passed)
        result: dict[str, Any] = {
            "model": model,
            "samples": len(generations),
            "passed": passed,
            "accuracy": passed / len(generations) if generations else 0.0,
            "unreadable_videos": len(read_video_failures(out_dir / "generations")),
        }
        if settings.lmms_tasks:
            lmms_dir = out_dir / "lmms_eval"
            argv = ["--model", model, "--tasks", ",".join(settings.lmms_tasks), "--samples", samples,
                    "--video-root", self.config.video_root, "-o", str(lmms_dir)]  # fmt: skip
            if settings.limit is not None:
                argv += ["--limit", str(settings.limit)]
            run_stage("eval", argv, self.config.launch.eval)
            result["lmms_eval_dir"] = str(lmms_dir)
        write_json_atomic(directory / "eval.json", result)
        return mark_done(directory, "eval", result)

    def run_cycle(self, cycle: int, model: str) -> dict[str, Any]:
        """One cycle: generate with ``model``, export, train the next model, evaluate it."""
        directory = self.cycle_dir(cycle)
        generated = self.generate(directory, model, cycle)
        exported = self.export(directory, [directory / "generations"], direct_only=False)
        start_model = self.config.model if self.config.train.from_checkpoint == "base" else model
        trained = self.train(directory, start_model, exported)
        evaluated = self.evaluate(directory, trained["model"], cycle)
        summary = {"cycle": cycle, "generate": generated, "export": exported, "train": trained, "eval": evaluated}
        logger.info(
            "cycle %d: kept %.1f%% (rationalized %.1f%%), held-out accuracy %s",
            cycle, 100 * generated["kept_fraction"], 100 * generated["rationalized_fraction"],
            "n/a" if evaluated is None else f"{100 * evaluated['accuracy']:.1f}%",
        )  # fmt: skip
        return summary

    def run_final(self, last_cycle: int) -> dict[str, Any]:
        """The paper's last step: train from the base model on direct answers only."""
        directory = self.root / "final"
        exported = self.export(directory, [self.cycle_dir(last_cycle) / "generations"], direct_only=True)
        trained = self.train(directory, self.config.model, exported)
        evaluated = self.evaluate(directory, trained["model"], last_cycle + 1)
        return {"export": exported, "train": trained, "eval": evaluated}

    def run(self) -> dict[str, Any]:
        """All cycles, resuming where a previous run stopped; returns the run summary."""
        self.root.mkdir(parents=True, exist_ok=True)
        summary: dict[str, Any] = {"baseline": None, "cycles": [], "stopped": "completed all cycles", "final": None}
        if self.config.eval.baseline:
            summary["baseline"] = self.evaluate(self.root / "baseline", self.config.model, 0)
        model = self.config.model
        kept: list[float] = []
        for cycle in range(1, self.config.cycles + 1):
            result = self.run_cycle(cycle, model)
            summary["cycles"].append(result)
            kept.append(result["generate"]["kept_fraction"])
            model = result["train"]["model"]
            write_json_atomic(self.root / "run.json", summary)
            _write_report(self.root)
            if is_plateau(kept, self.config.min_kept_gain):
                summary["stopped"] = (
                    f"plateau after cycle {cycle}: kept fraction {kept[-2]:.3f} -> {kept[-1]:.3f} "
                    f"(min_kept_gain {self.config.min_kept_gain})"
                )
                logger.info("stopping: %s", summary["stopped"])
                break
        if self.config.final_direct_only:
            summary["final"] = self.run_final(len(summary["cycles"]))
        summary["model"] = summary["final"]["train"]["model"] if summary["final"] else model
        write_json_atomic(self.root / "run.json", summary)
        _write_report(self.root)
        return summary


def _write_report(run_dir: Path) -> None:
    from llava_star.stages.report import write_report

    write_report(run_dir)


# ---------------------------------------------------------------- configuration


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def resolve_paths(config: CycleConfig) -> CycleConfig:
    """Local paths made absolute, so the saved config works from any directory.

    The base model stays as written when it is not a local directory (a hub id).
    """
    model = _absolute(config.model) if Path(config.model).expanduser().exists() else config.model
    eval_samples = _absolute(config.eval.samples) if config.eval.samples else None
    return replace(
        config,
        model=model,
        samples=_absolute(config.samples),
        video_root=_absolute(config.video_root),
        output_dir=_absolute(config.output_dir),
        eval=replace(config.eval, samples=eval_samples),
        train=replace(config.train, mix=tuple(_absolute(p) for p in config.train.mix)),
    )


def _check_inputs(config: CycleConfig) -> None:
    """Fail before any model loads: missing files, and train options ``llava-star train`` would refuse."""
    for key, path in (("samples", config.samples), ("video_root", config.video_root), ("eval.samples", config.eval.samples)):
        if path is not None and not Path(path).exists():
            raise ConfigError(f"{key}: {path} does not exist")
    for index, path in enumerate(config.train.mix):
        if not Path(path).exists():
            raise ConfigError(f"train.mix[{index}]: {path} does not exist")
    from llava_star.stages.train import make_config

    try:
        make_config({**_train_values(config, config.model, "train.json", "model"), **config.train.options})
    except ConfigError as error:
        raise ConfigError(f"train.options.{error}") from None


def last_trainer_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` the Trainer saved in ``output_dir``, if any."""
    steps = []
    for path in output_dir.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and (path / _TRAINER_STATE).is_file():
            steps.append((int(step), path))
    return max(steps)[1] if steps else None


def _train_values(config: CycleConfig, model: str, data: str, output_dir: str) -> dict[str, Any]:
    """The ``llava-star train`` config of one cycle: the user's options around the cycle's own keys."""
    return {"seed": config.seed, "num_frames": config.generate.num_frames, **config.train.options,
            "model": model, "data": [data], "video_root": config.video_root, "output_dir": output_dir}  # fmt: skip


def save_config(config: CycleConfig) -> None:
    """Write the resolved config beside the outputs; say which keys changed since the last run."""
    path = Path(config.output_dir) / CONFIG_NAME
    new = config_to_dict(config)
    if path.exists():
        old = read_yaml_mapping(path)
        changed = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
        if changed:
            logger.warning("%s: resuming with changed settings: %s", path, ", ".join(changed))
    write_config(config, path)


def run_cycles(config: CycleConfig) -> dict[str, Any]:
    """Run (or resume) the self-training cycles described by ``config``."""
    config = resolve_paths(config)
    _check_inputs(config)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    save_config(config)
    return CycleRunner(config).run()


def format_summary(summary: dict[str, Any]) -> str:
    """The per-cycle table printed at the end of a run (kept, rationalized, held-out accuracy)."""

    def accuracy(result: dict[str, Any] | None) -> str:
        return "-" if result is None else f"{100 * result['accuracy']:.1f}%"

    lines = [f"{'cycle':>8}  {'kept':>7}  {'rationalized':>12}  {'held-out accuracy':>17}"]
    if summary.get("baseline") is not None:
        lines.append(f"{'start':>8}  {'-':>7}  {'-':>12}  {accuracy(summary['baseline']):>17}")
    for result in summary["cycles"]:
        generated = result["generate"]
        lines.append(
            f"{result['cycle']:>8}  {100 * generated['kept_fraction']:>6.1f}%  "
            f"{100 * generated['rationalized_fraction']:>11.1f}%  {accuracy(result['eval']):>17}"
        )
    if summary.get("final") is not None:
        lines.append(f"{'final':>8}  {'-':>7}  {'-':>12}  {accuracy(summary['final']['eval']):>17}")
    lines.append(f"stopped: {summary['stopped']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llava-star cycle",
        description="Run Video-STaR self-training cycles from a YAML config (resumes where it stopped).",
    )
    parser.add_argument("--config", required=True, help="cycle YAML (see configs/cycle.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a config key, e.g. cycles=2")
    args = parser.parse_args(argv)
    config = load_config(CycleConfig, args.config, args.overrides)
    summary = run_cycles(config)
    sys.stdout.write(format_summary(summary) + "\n")
    sys.stdout.write(f"report: {Path(config.output_dir).resolve() / 'report' / 'index.html'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
