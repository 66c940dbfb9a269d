"""The configuration of ``llava-star cycle``: its sections, the checks made when it loads, and
the per-cycle table it prints; the stage itself is ``llava_star/stages/cycle.py``.

One key, one place (docs/cycle.md): the run's ``seed`` is its only seed (sampling, the
held-out subset, training) and ``generate.num_frames`` the frames per video of every stage;
``generate.seed``, ``train.options.seed``, ``train.options.num_frames`` and the keys the
cycle sets itself are errors that name the key to set instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from llava_star.config import SET_ELSEWHERE, check, option
from llava_star.errors import ConfigError
from llava_star.generation.options import GenerationOptions
from llava_star.training.config import make_config

# train.options keys the cycle sets: each has one place, named in the error
_TRAIN_KEYS_SET_BY_THE_CYCLE = {
    "model": "the cycle (the base model, or the previous cycle's)",
    "data": "the cycle (its train.json, and train.mix)",
    "output_dir": "the cycle (cycle_K/model)",
    "video_root": "video_root",
    "resume_from_checkpoint": "the cycle (its last complete checkpoint-N)",
    "seed": "seed",
    "num_frames": "generate.num_frames",
    "objective": "train.objective",
}
OBJECTIVES = ("sft", "dpo", "sft_then_dpo")


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
    drop_ungrounded: bool = option(
        False,
        help="leave out kept answers the grounding check flagged (needs generate.grounding_check blank|shuffle)",
    )
    objective: str = option(
        "sft",
        help="sft (train on the kept answers), dpo (DPO on the cycle's preference pairs: export --format dpo) "
        "or sft_then_dpo (SFT, then DPO from the SFT model as its reference)",
    )
    dpo_options: Mapping[str, Any] = option(
        default_factory=dict,
        help="`llava-star train` keys for the DPO step, over `options` (learning_rate, max_steps, dpo_beta, ...)",
    )
    max_pairs: int = option(1, help="preference pairs per question at most (export --max-pairs)")
    verified_only: bool = option(
        True,
        help="train on the answers the verifier passed (Video-STaR); false: on every answer, the no-verifier "
        "ablation (needs generate.rationalize: false)",
    )

    def __post_init__(self) -> None:
        check(
            self.objective in OBJECTIVES,
            "objective",
            f"expected one of {', '.join(OBJECTIVES)}, got {self.objective!r}",
        )
        check(self.max_pairs >= 1, "max_pairs", f"must be >= 1, got {self.max_pairs}")
        for key, owner in _TRAIN_KEYS_SET_BY_THE_CYCLE.items():
            check(key not in self.options, f"options.{key}", f"is set by {owner}; remove it (one key, one place)")
            check(
                key not in self.dpo_options, f"dpo_options.{key}", f"is set by {owner}; remove it (one key, one place)"
            )


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
        check(
            not self.train.drop_ungrounded or self.generate.grounding_check != "none",
            "train.drop_ungrounded",
            "needs generate.grounding_check: blank or shuffle (no answer is flagged without the check)",
        )
        check(
            self.train.verified_only or not self.generate.rationalize,
            "train.verified_only",
            "false trains on every direct answer; set generate.rationalize: false (nothing is retried without a verifier)",
        )
        check_train_options(self)


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


def check_input_files(config: CycleConfig) -> None:
    """Fail before any model loads when an input file is missing."""
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


def check_train_options(config: CycleConfig) -> None:
    """``train.options`` checked as ``llava-star train`` checks its config, when the cycle's
    config loads: an unknown key or a bad value fails here, not cycles later in the train stage."""
    try:
        make_config(train_values(config, config.model, "train.json", "model"))
    except ConfigError as error:
        raise ConfigError(f"train.options.{error}") from None
    if config.train.objective != "sft":
        try:
            make_config(train_values(config, config.model, "pairs.json", "model", objective="dpo"))
        except ConfigError as error:
            raise ConfigError(f"train.dpo_options.{error}") from None


def train_values(
    config: CycleConfig, model: str, data: str, output_dir: str, *, objective: str = "sft"
) -> dict[str, Any]:
    """The ``llava-star train`` config of one cycle: the user's ``train.options`` (and, for the
    DPO step, ``train.dpo_options`` over them) and the keys the cycle sets (which
    :class:`TrainSettings` keeps out of the options, so none is overridden)."""
    dpo = {**config.train.dpo_options, "objective": "dpo"} if objective == "dpo" else {}
    return {
        **config.train.options,
        **dpo,
        "seed": config.seed,
        "num_frames": config.generate.num_frames,
        "model": model,
        "data": [data],
        "video_root": config.video_root,
        "output_dir": output_dir,
    }


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
    pairs = [(result["cycle"], result["pairs"], result["train"]) for result in summary["cycles"] if "pairs" in result]
    if pairs:  # train.objective dpo | sft_then_dpo
        margins = [
            f"cycle {cycle}: {made['pairs']}"
            + ("" if trained.get("dpo_margin") is None else f" (DPO reward margin {trained['dpo_margin']:.3f})")
            for cycle, made, trained in pairs
        ]
        lines.append("preference pairs: " + ", ".join(margins))
    if summary.get("final") is not None:
        lines.append(f"{'final':>8}  {'-':>7}  {'-':>7}  {'-':>10}  {accuracy(summary['final']['eval']):>17}")
    lines.append(f"stopped: {summary['stopped']}")
    return "\n".join(lines)
