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

On one machine every stage runs in this process: the cycle calls each stage's ``run``
and passes its result on. On a cluster, ``launch.generate`` and ``launch.train`` give the
command that starts ``llava_star`` for that stage (e.g. ``[torchrun, --nproc_per_node=8, -m,
llava_star]`` or ``[deepspeed, --num_gpus=8, --module, llava_star]``); the stage's
arguments follow, and its result is read from the summary it wrote. The held-out answers
are a generation run, started by ``launch.generate`` too; ``launch.lmms_eval`` starts
``llava-star eval`` (e.g. in the environment where lmms-eval is installed). The
``--local_rank=N`` the deepspeed launcher puts before the command is dropped by ``llava_star.cli``.

One key, one place (docs/cycle.md): the run's ``seed`` is its only seed (sampling, the
held-out subset, training) and ``generate.num_frames`` the frames per video of every stage;
``generate.seed``, ``train.options.seed``, ``train.options.num_frames`` and the keys the
cycle sets itself are errors that name the key to set instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from llava_star.config import (
    SET_ELSEWHERE,
    check,
    config_to_dict,
    describe_keys,
    load_config,
    option,
    read_yaml_mapping,
    write_config,
)
from llava_star.errors import ConfigError, LlavaStarError
from llava_star.generation.options import GenerationOptions
from llava_star.generation.protocol import EVALUATION_SETTINGS, held_out_accuracy, protocol_record, random_subset
from llava_star.io import jsonl_lines, write_json_atomic, write_text_atomic
from llava_star.records import format_kept, kept_counts
from llava_star.runs import CycleRunDir, GenerationDir, StageDir, exclusive_directory
from llava_star.stages import evaluate, export, generate, report, train
from llava_star.training.resume import last_trainer_checkpoint

logger = logging.getLogger(__name__)

ConfigT = TypeVar("ConfigT")

# train.options keys the cycle sets: each has one place, named in the error
_TRAIN_KEYS_SET_BY_THE_CYCLE = {
    "model": "the cycle (the base model, or the previous cycle's)",
    "data": "the cycle (its train.json, and train.mix)",
    "output_dir": "the cycle (cycle_K/model)",
    "video_root": "video_root",
    "resume_from_checkpoint": "the cycle (its last complete checkpoint-N)",
    "seed": "seed",
    "num_frames": "generate.num_frames",
}
# The file the Trainer writes last into a checkpoint-N directory: a checkpoint without it was cut short.


@dataclass(frozen=True)
class TrainSettings:
    """How each cycle's model is trained.

    ``options`` are keys of ``llava-star train``'s config (its flags with underscores:
    ``learning_rate``, ``num_train_epochs``, ``per_device_train_batch_size``, ``deepspeed``,
    ``lora`` ...); the cycle writes them with the model, data and output directory into
    ``cycle_k/train_config.yaml`` and runs ``llava-star train --config`` on it.
    """

    from_checkpoint: Literal["base", "previous"] = option(
        "base", help="start each cycle's training from the base model (STaR) or from the previous cycle's model"
    )
    mix: tuple[str, ...] = option((), help="other LLaVA JSON files appended to each cycle's data")
    options: Mapping[str, Any] = option(
        default_factory=dict,
        help="`llava-star train` config keys (learning_rate, num_train_epochs, deepspeed, lora, ...)",
    )

    def __post_init__(self) -> None:
        for key, owner in _TRAIN_KEYS_SET_BY_THE_CYCLE.items():
            check(key not in self.options, f"options.{key}", f"is set by {owner}; remove it (one key, one place)")


@dataclass(frozen=True)
class EvalSettings:
    """Held-out evaluation after each cycle (direct answers, verified)."""

    samples: str | None = option(None, help="held-out samples JSONL; no evaluation when empty")
    baseline: bool = option(True, help="evaluate the starting model too (baseline/eval.json)")
    limit: int | None = option(None, help="N held-out samples only: a random subset seeded by the cycle's `seed`")
    lmms_tasks: tuple[str, ...] = option((), help="lmms-eval tasks run by `llava-star eval` after each evaluation")

    def __post_init__(self) -> None:
        check(self.limit is None or self.limit >= 1, "limit", f"must be >= 1, got {self.limit}")


@dataclass(frozen=True)
class LaunchSettings:
    """Command prefixes that start ``llava_star`` for a stage; empty means in this process."""

    generate: tuple[str, ...] = option(
        (), help="starts `llava-star generate`: the training answers and the held-out ones"
    )
    train: tuple[str, ...] = option((), help="starts `llava-star train`")
    lmms_eval: tuple[str, ...] = option((), help="starts `llava-star eval` (eval.lmms_tasks)")


@dataclass(frozen=True)
class CycleConfig:
    """Everything ``llava-star cycle`` needs; see ``configs/cycle.yaml`` for an example."""

    model: str = option(help="base checkpoint: a hub id or a local directory")
    samples: str = option(help="training samples JSONL (llava-star prepare / synthetic)")
    video_root: str = option(help="directory the samples' video paths are relative to")
    output_dir: str = option(help="the run directory")
    cycles: int = option(3, help="self-training cycles")
    min_kept_gain: float | None = option(0.01, help="stop when the kept fraction grows less; null: never")
    final_direct_only: bool = option(False, help="train a final model from the base on direct answers only")
    seed: int = option(0, help="the run's one seed: generation sampling, the held-out subset, training")
    generate: GenerationOptions = field(
        default_factory=GenerationOptions,
        metadata={"help": "`llava-star generate` options", SET_ELSEWHERE: {"seed": "seed"}},
    )
    train: TrainSettings = option(default_factory=TrainSettings, help="how each cycle's model is trained")
    eval: EvalSettings = option(default_factory=EvalSettings, help="held-out evaluation")
    launch: LaunchSettings = option(default_factory=LaunchSettings, help="command prefixes that start a stage")

    def __post_init__(self) -> None:
        check(self.cycles >= 1, "cycles", f"must be >= 1, got {self.cycles}")
        for key in ("model", "samples", "video_root", "output_dir"):
            check(bool(getattr(self, key).strip()), key, "must not be empty")


# ---------------------------------------------------------------- running the stages


def run_stage(
    command: str, run: Callable[[ConfigT], Any], config: ConfigT, launch_prefix: Sequence[str], config_file: Path
) -> Any | None:
    """Run one stage on its config: in this process, ``run(config)``, returning its result; or,
    with a launcher (torchrun, deepspeed), ``PREFIX COMMAND --config FILE`` with the same config
    written to ``config_file``, returning None (the launched stage's result is the summary it wrote)."""
    started = time.monotonic()
    if launch_prefix:
        write_config(config, config_file)
        launched = [*launch_prefix, command, "--config", str(config_file)]
        logger.info("launching: %s", " ".join(launched))
        status = subprocess.run(launched, check=False).returncode
        if status != 0:
            raise LlavaStarError(f"{' '.join(launched)} exited with status {status}")
        result = None
    else:
        logger.info("running %s in this process", command)
        result = run(config)
    logger.info("%s finished in %.1f s", command, time.monotonic() - started)
    return result


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
    def run_dir(self) -> CycleRunDir:
        return CycleRunDir(Path(self.config.output_dir))

    def generate_config(self, model: str, samples: str, output: GenerationDir, **run: Any) -> Any:
        """The generate stage's config: the cycle's ``generate`` options, seeded by the cycle."""
        options = {**config_to_dict(self.config.generate), "seed": self.config.seed, **run}
        return generate.GenerateConfig(
            **options, model=model, samples=samples, video_root=self.config.video_root, output_dir=str(output.path)
        )

    def generate(self, stage: StageDir, model: str, cycle: int) -> dict[str, Any]:
        """Answer the training samples with ``model``; kept fractions go into the marker."""
        if (done := stage.done("generate")) is not None:
            return done
        config = self.generate_config(model, self.config.samples, stage.generations, cycle=cycle)
        summary = run_stage(
            "generate", generate.run, config, self.config.launch.generate, stage.launch_config("generate")
        )
        if summary is None:  # launched: rank 0 wrote the same summary
            summary = json.loads(stage.generations.summary.read_text(encoding="utf-8"))
        counts = {key: summary[key] for key in kept_counts([])}
        return stage.mark_done("generate", {"model": model, **counts, "unreadable_videos": summary["video_failures"]})

    def export(self, stage: StageDir, generated: GenerationDir, kept: int, *, direct_only: bool) -> dict[str, Any]:
        """Write the ``kept`` answers of ``generated`` (and ``train.mix``) as LLaVA training JSON."""
        if (done := stage.done("export")) is not None:
            return done
        if not kept and not self.config.train.mix:  # the export stage refuses to write an empty file
            logger.warning("%s: no answer was kept; nothing to export", stage.path.name)
            return stage.mark_done("export", {"data": None, "samples": 0})
        config = export.ExportConfig(
            gen_dirs=(generated.path,),
            output=stage.train_data,
            direct_only=direct_only,
            mix=tuple(Path(p) for p in self.config.train.mix),
        )
        stats = run_stage("export", export.run, config, (), stage.launch_config("export"))  # always in this process
        return stage.mark_done("export", {"data": str(stage.train_data), "samples": stats.total})

    def train(self, stage: StageDir, start_model: str, export_info: dict[str, Any]) -> dict[str, Any]:
        """Fine-tune ``start_model`` on the exported data into ``stage.model``.

        With nothing kept there is nothing to learn from: the stage records the starting
        model as its result, so the next cycle generates with it again.
        """
        if (done := stage.done("train")) is not None:
            return done
        if export_info["samples"] == 0:
            logger.warning("%s: no kept answers to train on; keeping %s", stage.path.name, start_model)
            return stage.mark_done("train", {"model": start_model, "trained": False})
        values = _train_values(self.config, start_model, export_info["data"], str(stage.model))
        resume = last_trainer_checkpoint(stage.model)
        if resume is not None:  # a killed run saved checkpoints (save_strategy: steps): go on from the last
            logger.info("%s: resuming training from %s", stage.path.name, resume)
            values["resume_from_checkpoint"] = str(resume)
        elif stage.model.exists():  # a killed run with nothing to resume from: start it again
            shutil.rmtree(stage.model)
        trained = run_stage("train", train.run, train.make_config(values), self.config.launch.train, stage.train_config)
        if trained is None:  # launched: rank 0 wrote the same summary
            trained = json.loads((stage.model / train.SUMMARY_FILE).read_text(encoding="utf-8"))
        return stage.mark_done(
            "train",
            {"model": str(stage.model), "trained": True, "from": start_model, "unusable_records": trained["failures"]},
        )

    def evaluate(self, stage: StageDir, model: str, cycle: int) -> dict[str, Any] | None:
        """Held-out accuracy of ``model``: direct answers only, checked by the verifier."""
        settings = self.config.eval
        if settings.samples is None:
            return None
        if (done := stage.done("eval")) is not None:
            return done
        output = stage.eval_generations
        samples = self.held_out_samples(settings.samples)
        # the evaluation protocol (greedy, direct answers), shared with the lmms-eval tasks below
        config = self.generate_config(model, samples, output, cycle=cycle, **EVALUATION_SETTINGS)
        run_stage("generate", generate.run, config, self.config.launch.generate, stage.launch_config("eval_generate"))
        result: dict[str, Any] = {
            "model": model,
            **held_out_accuracy(output.generations()),
            "unreadable_videos": len(output.video_failures()),
            "protocol": protocol_record(config),
        }
        if settings.lmms_tasks:
            lmms = evaluate.EvalConfig(
                model=model,
                tasks=settings.lmms_tasks,
                output_dir=stage.lmms_eval,
                samples=Path(samples),
                video_root=Path(self.config.video_root),
                num_frames=config.num_frames,
                max_new_tokens=config.max_new_tokens,
            )
            run_stage("eval", evaluate.run, lmms, self.config.launch.lmms_eval, stage.launch_config("lmms_eval"))
            result["lmms_eval_dir"] = str(stage.lmms_eval)
        write_json_atomic(stage.eval_result, result)
        return stage.mark_done("eval", result)

    def held_out_samples(self, samples: str) -> str:
        """The samples every evaluation of the run answers: all of ``eval.samples``, or with
        ``eval.limit`` a random subset seeded by the cycle's ``seed``.

        The first N lines would follow the annotation file's order (often grouped by class),
        so every cycle would be measured on the same few classes. The subset is the same for
        the baseline, every cycle and a rerun (same seed, same file), so cycles compare; it is
        written to the run directory, where a launched stage reads it and a reader sees what was measured.
        """
        limit = self.config.eval.limit
        if limit is None:
            return samples
        chosen = random_subset([raw for _, raw in jsonl_lines(samples)], limit, self.config.seed)
        text = b"".join(raw if raw.endswith(b"\n") else raw + b"\n" for raw in chosen).decode("utf-8")
        path = self.run_dir.held_out_samples
        if not path.exists() or path.read_text(encoding="utf-8") != text:  # a rerun leaves it untouched
            write_text_atomic(path, text)
            logger.info("held-out samples: %d of %s (seed %d) in %s", len(chosen), samples, self.config.seed, path)
        return str(path)

    def run_cycle(self, cycle: int, model: str) -> dict[str, Any]:
        """One cycle: generate with ``model``, export, train the next model, evaluate it."""
        stage = self.run_dir.cycle(cycle)
        generated = self.generate(stage, model, cycle)
        exported = self.export(stage, stage.generations, generated["kept"], direct_only=False)
        start_model = self.config.model if self.config.train.from_checkpoint == "base" else model
        trained = self.train(stage, start_model, exported)
        evaluated = self.evaluate(stage, trained["model"], cycle)
        summary = {"cycle": cycle, "generate": generated, "export": exported, "train": trained, "eval": evaluated}
        logger.info(
            "cycle %d: %s; held-out accuracy %s",
            cycle,
            format_kept(generated),
            "n/a" if evaluated is None else f"{100 * evaluated['accuracy']:.1f}%",
        )
        return summary

    def run_final(self, last_cycle: dict[str, Any]) -> dict[str, Any]:
        """The paper's last step: train from the base model on the last cycle's direct answers only."""
        stage = self.run_dir.final
        generations = self.run_dir.cycle(last_cycle["cycle"]).generations
        exported = self.export(stage, generations, last_cycle["generate"]["kept_direct"], direct_only=True)
        trained = self.train(stage, self.config.model, exported)
        evaluated = self.evaluate(stage, trained["model"], last_cycle["cycle"] + 1)
        return {"export": exported, "train": trained, "eval": evaluated}

    def run(self) -> dict[str, Any]:
        """All cycles, resuming where a previous run stopped; returns the run summary."""
        summary: dict[str, Any] = {"baseline": None, "cycles": [], "stopped": "completed all cycles", "final": None}
        if self.config.eval.baseline:
            summary["baseline"] = self.evaluate(self.run_dir.baseline, self.config.model, 0)
        model = self.config.model
        kept: list[float] = []
        for cycle in range(1, self.config.cycles + 1):
            result = self.run_cycle(cycle, model)
            summary["cycles"].append(result)
            kept.append(result["generate"]["kept_fraction"])
            model = result["train"]["model"]
            write_json_atomic(self.run_dir.summary, summary)
            report.write_report(self.run_dir.path)
            if is_plateau(kept, self.config.min_kept_gain):
                summary["stopped"] = (
                    f"plateau after cycle {cycle}: kept fraction {kept[-2]:.3f} -> {kept[-1]:.3f} "
                    f"(min_kept_gain {self.config.min_kept_gain})"
                )
                logger.info("stopping: %s", summary["stopped"])
                break
        if self.config.final_direct_only:
            summary["final"] = self.run_final(summary["cycles"][-1])
        summary["model"] = summary["final"]["train"]["model"] if summary["final"] else model
        write_json_atomic(self.run_dir.summary, summary)
        report.write_report(self.run_dir.path)
        return summary


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
    for key, path in (
        ("samples", config.samples),
        ("video_root", config.video_root),
        ("eval.samples", config.eval.samples),
    ):
        if path is not None and not Path(path).exists():
            raise ConfigError(f"{key}: {path} does not exist")
    for index, path in enumerate(config.train.mix):
        if not Path(path).exists():
            raise ConfigError(f"train.mix[{index}]: {path} does not exist")
    try:
        train.make_config(_train_values(config, config.model, "train.json", "model"))
    except ConfigError as error:
        raise ConfigError(f"train.options.{error}") from None


def _train_values(config: CycleConfig, model: str, data: str, output_dir: str) -> dict[str, Any]:
    """The ``llava-star train`` config of one cycle: the user's ``train.options`` and the keys
    the cycle sets (which :class:`TrainSettings` keeps out of the options, so none is overridden)."""
    return {
        **config.train.options,
        "seed": config.seed,
        "num_frames": config.generate.num_frames,
        "model": model,
        "data": [data],
        "video_root": config.video_root,
        "output_dir": output_dir,
    }


def save_config(config: CycleConfig) -> None:
    """Write the resolved config beside the outputs; say which keys changed since the last run."""
    path = CycleRunDir(Path(config.output_dir)).config
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
    with exclusive_directory(config.output_dir, "cycle"):
        save_config(config)
        return CycleRunner(config).run()


def format_summary(summary: dict[str, Any]) -> str:
    """The per-cycle table printed at the end of a run (kept, rationalized, held-out accuracy)."""

    def accuracy(result: dict[str, Any] | None) -> str:
        return "-" if result is None else f"{100 * result['accuracy']:.1f}%"

    lines = [f"{'cycle':>8}  {'kept':>7}  {'direct':>7}  {'after hint':>10}  {'held-out accuracy':>17}"]
    if summary.get("baseline") is not None:
        lines.append(f"{'start':>8}  {'-':>7}  {'-':>7}  {'-':>10}  {accuracy(summary['baseline']):>17}")
    for result in summary["cycles"]:
        generated = result["generate"]
        lines.append(
            f"{result['cycle']:>8}  {100 * generated['kept_fraction']:>6.1f}%  {100 * generated['kept_direct_fraction']:>6.1f}%  "
            f"{100 * generated['kept_rationalized_fraction']:>9.1f}%  {accuracy(result['eval']):>17}"
        )
    if summary.get("final") is not None:
        lines.append(f"{'final':>8}  {'-':>7}  {'-':>7}  {'-':>10}  {accuracy(summary['final']['eval']):>17}")
    lines.append(f"stopped: {summary['stopped']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llava-star cycle",
        description="Run Video-STaR self-training cycles from a YAML config (resumes where it stopped).",
        epilog="config keys (YAML, or key=value):\n" + "\n".join(describe_keys(CycleConfig)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="cycle YAML (see configs/cycle.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a config key, e.g. cycles=2")
    args = parser.parse_args(argv)
    config = load_config(CycleConfig, args.config, args.overrides)
    summary = run_cycles(config)
    sys.stdout.write(format_summary(summary) + "\n")
    sys.stdout.write(f"report: {CycleRunDir(Path(config.output_dir).resolve()).report_page}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
