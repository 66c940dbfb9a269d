"""Self-training cycles (Video-STaR stage 6): generate, export, train, evaluate, repeat.

``llava-star cycle --config cycle.yaml [key=value ...]`` runs, for k = 1..K::

    cycle_k/generations/   model_k answers the training samples (rationalization on)
    cycle_k/train.json     the kept answers as LLaVA conversations
    cycle_k/model/         model_{k+1}, fine-tuned from the base checkpoint (STaR)
                           or from model_k (``train_from: previous``)
    cycle_k/pairs.json     ``train.objective: dpo | sft_then_dpo``: the preference pairs of
                           the generations; DPO trains model_{k+1} on them (from the SFT
                           model ``cycle_k/sft_model/`` with ``sft_then_dpo``)
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from llava_star.config import config_to_dict, describe_keys, load_config, read_yaml_mapping, write_config
from llava_star.cycle_config import (
    CycleConfig,
    EvalSettings,
    LaunchSettings,
    TrainSettings,
    check_input_files,
    format_summary,
    resolve_paths,
    train_values,
)
from llava_star.errors import LlavaStarError, NothingToExport
from llava_star.generation.protocol import (
    EVALUATION_SETTINGS,
    held_out_accuracy,
    protocol_record,
    random_subset_of_lines,
)
from llava_star.io import write_json_atomic, write_text_atomic
from llava_star.records import format_kept, grounding_counts, kept_counts
from llava_star.runs import CycleRunDir, GenerationDir, StageDir, exclusive_directory
from llava_star.stages import evaluate, export, generate, report, train
from llava_star.training.resume import last_trainer_checkpoint

__all__ = ["CycleConfig", "CycleRunner", "EvalSettings", "LaunchSettings", "TrainSettings", "main", "run_cycles"]

logger = logging.getLogger(__name__)

ConfigT = TypeVar("ConfigT")

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
        counts = {key: summary[key] for key in (*kept_counts([]), *grounding_counts([]))}
        return stage.mark_done("generate", {"model": model, **counts, "unreadable_videos": summary["video_failures"]})

    def export(self, stage: StageDir, generated: GenerationDir, kept: int, *, direct_only: bool) -> dict[str, Any]:
        """Write the ``kept`` answers of ``generated`` (and ``train.mix``) as LLaVA training JSON."""
        if (done := stage.done("export")) is not None:
            return done
        if not kept and self.config.train.verified_only and not self.config.train.mix:  # nothing to export
            logger.warning("%s: no answer was kept; nothing to export", stage.path.name)
            return stage.mark_done("export", {"data": None, "samples": 0})
        config = export.ExportConfig(
            gen_dirs=(generated.path,),
            output=stage.train_data,
            direct_only=direct_only,
            drop_ungrounded=self.config.train.drop_ungrounded,
            unverified=not self.config.train.verified_only,
            mix=tuple(Path(p) for p in self.config.train.mix),
        )
        try:
            stats = run_stage("export", export.run, config, (), stage.launch_config("export"))  # in this process
        except NothingToExport as error:  # e.g. every kept answer was flagged ungrounded
            logger.warning("%s: %s; nothing to train on", stage.path.name, error)
            return stage.mark_done("export", {"data": None, "samples": 0})
        return stage.mark_done("export", {"data": str(stage.train_data), "samples": stats.total})

    def export_pairs(self, stage: StageDir) -> dict[str, Any]:
        """The preference pairs of the cycle's generations (``export --format dpo``), for its DPO step."""
        if (done := stage.done("export_pairs")) is not None:
            return done
        config = export.ExportConfig(
            gen_dirs=(stage.generations.path,),
            output=stage.pairs_data,
            format="dpo",
            max_pairs=self.config.train.max_pairs,
            drop_ungrounded=self.config.train.drop_ungrounded,
        )
        try:
            stats = run_stage("export", export.run, config, (), stage.launch_config("export_pairs"))
        except NothingToExport as error:  # no question with both a passing and a failing answer
            logger.warning("%s: %s", stage.path.name, error)
            return stage.mark_done("export_pairs", {"data": None, "samples": 0, "pairs": 0})
        return stage.mark_done("export_pairs", {"data": str(stage.pairs_data), "samples": stats.total, **stats.pairs})

    def train(
        self,
        stage: StageDir,
        start_model: str,
        export_info: dict[str, Any],
        *,
        objective: str = "sft",
        marker: str = "train",
        output: Path | None = None,
    ) -> dict[str, Any]:
        """Fine-tune ``start_model`` on the exported data (pairs with ``objective`` dpo) into
        ``output`` (``stage.model``), recorded as ``marker``.

        With nothing kept there is nothing to learn from: the stage records the starting
        model as its result, so the next cycle generates with it again.
        """
        if (done := stage.done(marker)) is not None:
            return done
        output = output or stage.model
        if export_info["samples"] == 0:
            logger.warning("%s: nothing to train on (%s); keeping %s", stage.path.name, objective, start_model)
            return stage.mark_done(marker, {"model": start_model, "trained": False})
        values = train_values(self.config, start_model, export_info["data"], str(output), objective=objective)
        resume = last_trainer_checkpoint(output)
        if resume is not None:  # a killed run saved checkpoints (save_strategy: steps): go on from the last
            logger.info("%s: resuming training from %s", stage.path.name, resume)
            values["resume_from_checkpoint"] = str(resume)
        elif output.exists():  # a killed run with nothing to resume from: start it again
            shutil.rmtree(output)
        config_file = stage.train_config if marker == "train" else stage.launch_config(marker)
        trained = run_stage("train", train.run, train.make_config(values), self.config.launch.train, config_file)
        if trained is None:  # launched: rank 0 wrote the same summary
            trained = json.loads((output / train.SUMMARY_FILE).read_text(encoding="utf-8"))
        info = {"model": str(output), "trained": True, "from": start_model, "unusable_records": trained["failures"]}
        if objective == "dpo":  # the last logged step's figures, and every step's margin
            info.update(
                objective="dpo",
                dpo_margin=(trained["dpo_margins"] or [None])[-1],
                dpo_accuracy=(trained["dpo_accuracies"] or [None])[-1],
                dpo_margins=trained["dpo_margins"],
            )
        return stage.mark_done(marker, info)

    def train_cycle_model(self, stage: StageDir, start_model: str, exported: dict[str, Any]) -> dict[str, Any]:
        """The cycle's training by ``train.objective``: SFT on the kept answers, DPO on the
        pairs, or SFT then DPO from the SFT model (its reference). The model is ``stage.model``."""
        objective = self.config.train.objective
        if objective == "sft":
            return {"train": self.train(stage, start_model, exported)}
        steps: dict[str, Any] = {}
        if objective == "sft_then_dpo":
            steps["sft"] = self.train(stage, start_model, exported, marker="train_sft", output=stage.sft_model)
            start_model = steps["sft"]["model"]
        steps["pairs"] = self.export_pairs(stage)
        steps["train"] = self.train(stage, start_model, steps["pairs"], objective="dpo")
        return steps

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
            **held_out_accuracy(output.iter_generations()),  # one pass, memory flat in the samples
            "unreadable_videos": output.count_video_failures(),
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
        chosen = random_subset_of_lines(samples, limit, self.config.seed)
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
        steps = self.train_cycle_model(stage, start_model, exported)
        evaluated = self.evaluate(stage, steps["train"]["model"], cycle)
        summary = {"cycle": cycle, "generate": generated, "export": exported, **steps, "eval": evaluated}
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
    check_input_files(config)
    with exclusive_directory(config.output_dir, "cycle"):
        save_config(config)
        return CycleRunner(config).run()


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
