"""``llava-star eval``: score a model on the project's lmms-eval tasks.

lmms-eval runs in a subprocess (its import sets up logging and CUDA state we do not want
in the caller, e.g. the cycle) with the ``llava_star`` model adapter registered, and the
tasks bound to the given samples file (:mod:`llava_star.eval_tasks.docs`). lmms-eval 0.7.3
exits 0 even when a task crashed (the patch :mod:`patches.lmms_eval_exit_status` makes it
exit 1), so success is also judged from its results file: every requested task must have
a result. ``--lmms-model`` runs one of lmms-eval's built-in wrappers instead of the
adapter (``qwen2_vl``, ``llava_hf``, ...), with the runtime patches of :mod:`patches`
applied in the lmms-eval process. The metrics go to ``OUT_DIR/metrics.json``::

    {"config": {...}, "model": ..., "samples": ..., "limit": 2, "tasks": {"kinetics700_qa": {"accuracy": 0.5}},
     "num_docs": {"kinetics700_qa": 2}, "lmms_eval_results": ".../xxx_results.json"}
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_star.config import add_config_flags, config_from_flags, config_to_dict, option
from llava_star.distributed import die_with_parent
from llava_star.errors import ConfigError, EvaluationError
from llava_star.eval_tasks import GROUP_NAME, MODEL_NAME, TASK_NAMES, UNREADABLE_VIDEOS_ENV, group_tasks
from llava_star.eval_tasks.hooks import CLIP_CACHE_VARIABLE, video_root
from llava_star.eval_tasks.results import find_results_file, log_tail, task_metrics
from llava_star.generation.options import MODEL_ARGS, GenerationOptions, options_from_model_args
from llava_star.generation.protocol import protocol_record
from llava_star.records import read_jsonl, read_samples, write_json_atomic
from llava_star.runs import exclusive_directory

logger = logging.getLogger(__name__)

# lmms-eval's own command line, with the runtime patches of patches/ applied (lmms-eval
# 0.7.3's wrappers on transformers 5.23; a crashed evaluation exits 1) and our adapter
# registered whether or not the package is installed (the entry point only exists after
# `pip install`)
_LAUNCH = (
    "import sys; from patches import apply_patches; apply_patches(); "
    "from llava_star.eval_tasks.lmms_adapter import lmms_eval_main; sys.exit(lmms_eval_main(sys.argv[1:]))"
)
# the frame-count argument of the built-in wrappers --num-frames is passed as
WRAPPER_FRAMES_ARG = {
    "qwen2_vl": "max_num_frames",
    "qwen2_5_vl": "max_num_frames",
    "huggingface": "max_num_frames",
    "llava_hf": "max_frames_num",
    "video_llava": "num_frames",
}
_GENERATION = GenerationOptions()  # the generation defaults, which the adapter applies too


@dataclass(frozen=True)
class EvalConfig:
    model: str = option(help="checkpoint folder or hub id of a video LVLM")
    tasks: tuple[str, ...] = option(
        help=f"{', '.join(TASK_NAMES)}, the group {GROUP_NAME}, or lmms-eval tasks (tempcompass); comma-separated"
    )
    output_dir: Path = option(
        help="folder for metrics.json and lmms-eval's files", flags=("-o", "--output", "--output-dir")
    )
    samples: Path | None = option(None, help="prepared test samples (llava-star prepare --split test, or synthetic)")
    video_root: Path | None = option(None, help="folder the samples' videos are relative to")
    limit: int | None = option(None, help="score only the first N samples of each task")
    num_frames: int = option(_GENERATION.num_frames, help="frames decoded per video")
    batch_size: int = option(1, help="lmms-eval's --batch_size: questions answered per generate call")
    max_new_tokens: int | None = option(
        None,
        help=f"longest answer in tokens (default: llava-star generate's, {_GENERATION.max_new_tokens}; "
        "the cycle passes its generate.max_new_tokens)",
    )
    model_args: str = option(
        "", help="more key=value,... for the lmms-eval model (adapter: dtype, device, backend; default: none)"
    )
    lmms_model: str = option(
        MODEL_NAME,
        help=f"lmms-eval model to run: {MODEL_NAME} (the project's adapter) or a built-in wrapper "
        f"({', '.join(WRAPPER_FRAMES_ARG)}; docs/evaluate.md), loading --model as pretrained=",
    )
    force_simple: bool = option(
        False, help="lmms-eval's --force_simple: the wrapper's simple variant, not its chat one"
    )
    clip_cache: Path | None = option(
        None,
        help="folder for the clip files of ranged and frame-folder docs (default: $LLAVA_STAR_CLIP_CACHE, "
        "else VIDEO_ROOT/.llava_star_clips)",
    )

    def __post_init__(self) -> None:
        # `--tasks a,b` and `tasks: [a, b]` mean the same
        object.__setattr__(self, "tasks", tuple(task.strip() for item in self.tasks for task in item.split(",")))
        if not self.tasks or any(not task for task in self.tasks):
            raise ConfigError(f"--tasks: expected a comma-separated list of task names, got {','.join(self.tasks)!r}")
        if "," in self.model:
            raise ConfigError(
                f"--model: lmms-eval splits model arguments on ',', so the path cannot hold one: {self.model!r}"
            )
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit: expected a positive number of samples per task, got {self.limit}")
        if self.num_frames < 1:
            raise ConfigError(f"--num-frames: expected at least 1, got {self.num_frames}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens: expected at least 1, got {self.max_new_tokens}")
        if self.max_new_tokens is not None and "max_new_tokens=" in self.model_args:
            raise ConfigError("--max-new-tokens: also given in --model-args; give it once")
        if self.lmms_model != MODEL_NAME and self.max_new_tokens is None and "max_new_tokens=" in self.model_args:
            raise ConfigError("--model-args: a built-in wrapper takes the answer budget as --max-new-tokens")
        if self.own_tasks and self.samples is None:
            raise ConfigError(f"--samples: the tasks {', '.join(self.own_tasks)} read a prepared samples file")

    @property
    def generation(self) -> GenerationOptions:
        """The generation options the adapter answers with (their protocol goes into metrics.json)."""
        given = dict(item.split("=", 1) for item in filter(None, self.model_args.split(",")) if "=" in item)
        given = {key.strip(): value.strip() for key, value in given.items() if key.strip() in MODEL_ARGS}
        if self.max_new_tokens is not None:
            given["max_new_tokens"] = self.max_new_tokens
        return options_from_model_args({"num_frames": self.num_frames, "batch_size": self.batch_size, **given})

    @property
    def own_tasks(self) -> tuple[str, ...]:
        """The requested tasks (groups expanded) that are the project's, not lmms-eval's."""
        expanded = []
        for task in self.tasks:
            expanded.extend(group_tasks() if task == GROUP_NAME else [task] if task in TASK_NAMES else [])
        return tuple(dict.fromkeys(expanded))


def _model_args(config: EvalConfig) -> str:
    model = Path(config.model).resolve() if Path(config.model).exists() else config.model
    args = [f"pretrained={model}"]
    if config.lmms_model == MODEL_NAME:
        args.append(f"num_frames={config.num_frames}")
        if config.max_new_tokens is not None:
            args.append(f"max_new_tokens={config.max_new_tokens}")
    else:  # a wrapper's own frame-count argument, unless --model-args names it
        frames = WRAPPER_FRAMES_ARG.get(config.lmms_model)
        if frames is not None and f"{frames}=" not in config.model_args:
            args.append(f"{frames}={config.num_frames}")
    return ",".join(args + ([config.model_args] if config.model_args else []))


def lmms_eval_command(config: EvalConfig, include_path: Path | None, output_path: Path) -> list[str]:
    """The lmms-eval argument list (``--include_path`` takes one folder in 0.7.3)."""
    command = [sys.executable, "-c", _LAUNCH, "--model", config.lmms_model, "--model_args", _model_args(config)]
    command += ["--tasks", ",".join(config.tasks), "--batch_size", str(config.batch_size)]
    if config.lmms_model != MODEL_NAME and config.max_new_tokens is not None:
        command += ["--gen_kwargs", f"max_new_tokens={config.max_new_tokens}"]
    if config.force_simple:
        command.append("--force_simple")
    command += ["--output_path", str(output_path), "--log_samples"]
    if include_path is not None:
        command += ["--include_path", str(include_path)]
    if config.limit is not None:
        command += ["--limit", str(config.limit)]
    return command


def _environment(config: EvalConfig, tasks_folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])  # the folder holding llava_star/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    if config.video_root is not None:
        env["LLAVA_STAR_VIDEO_DIR"] = str(Path(config.video_root).resolve())
    if config.clip_cache is not None:
        env[CLIP_CACHE_VARIABLE] = str(Path(config.clip_cache).resolve())
    # docs are small; a cache beside them never serves a stale copy of another samples file
    env.setdefault("LMMS_EVAL_DATASETS_CACHE", str(tasks_folder / ".datasets_cache"))
    return env


def _check_video_roots(samples: Path, env: Mapping[str, str]) -> None:
    """Every dataset in the samples has a video folder (else lmms-eval would fail mid-run)."""

    for source in sorted({sample.source for sample in read_samples(samples)}):
        video_root(source, env)


def run(config: EvalConfig) -> dict[str, Any]:
    """Evaluate, check every requested task has a result, write and return the metrics."""
    out_dir = Path(config.output_dir).resolve()
    with exclusive_directory(out_dir, "eval"):
        return _evaluate(config, out_dir)


def _evaluate(config: EvalConfig, out_dir: Path) -> dict[str, Any]:

    tasks_folder = out_dir / "tasks"
    num_docs: dict[str, int] = {}
    include_path = None
    if config.own_tasks:
        from llava_star.eval_tasks.docs import bind_tasks

        assert config.samples is not None  # checked by EvalConfig
        include_path, counts = bind_tasks(config.samples, tasks_folder)
        num_docs = {task: counts[task] for task in config.own_tasks}
        empty = [task for task, count in num_docs.items() if count == 0]
        if empty:
            raise ConfigError(
                f"--tasks: {', '.join(empty)} ha{'s' if len(empty) == 1 else 've'} no sample in {config.samples} "
                f"(docs per task: {counts}); drop {'it' if len(empty) == 1 else 'them'} or use llava_star_qa"
            )
    env = _environment(config, tasks_folder)
    unreadable_path = out_dir / "unreadable_videos.jsonl"
    unreadable_path.unlink(missing_ok=True)  # every doc is answered again
    env[UNREADABLE_VIDEOS_ENV] = str(unreadable_path)
    if config.own_tasks:
        _check_video_roots(config.samples, env)
    output_path = out_dir / "lmms_eval"
    log_path = out_dir / "lmms_eval.log"
    command = lmms_eval_command(config, include_path, output_path)
    logger.info("running lmms-eval on %s (log: %s)", ",".join(config.tasks), log_path)
    started = time.time()
    with log_path.open("w", encoding="utf-8") as log:
        # the lmms-eval child dies with this process, kill -9 included: left running, it wrote
        # unreadable_videos.jsonl beside the rerun's
        dies_with_us = functools.partial(die_with_parent, os.getpid())
        completed = subprocess.run(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False, preexec_fn=dies_with_us
        )
    results_path = find_results_file(output_path, started) if output_path.exists() else None
    if completed.returncode != 0 or results_path is None:
        raise EvaluationError(
            f"lmms-eval {'exited with status ' + str(completed.returncode) if completed.returncode else 'wrote no results file'}; "
            f"see {log_path}; its last lines:\n{log_tail(log_path)}"
        )
    # lmms-eval writes NaN for an undefined metric (Spearman over one answer): json reads it
    results = json.loads(results_path.read_text(encoding="utf-8"))
    metrics = task_metrics(results.get("results", {}))
    unreadable = sum(1 for _ in read_jsonl(unreadable_path)) if unreadable_path.exists() else 0
    answered = sum(int(counts.get("effective", 0)) for counts in results.get("n-samples", {}).values())
    if unreadable and unreadable >= answered:
        raise EvaluationError(
            f"none of the {unreadable} videos could be decoded (listed in {unreadable_path}); "
            "check --video-root and LLAVA_STAR_VIDEO_DIR"
        )
    expected = list(config.own_tasks) + [task for task in config.tasks if task not in TASK_NAMES and task != GROUP_NAME]
    missing = [task for task in expected if not metrics.get(task)]
    if missing:
        raise EvaluationError(
            f"lmms-eval wrote no result for {', '.join(missing)} in {results_path}; see {log_path}; "
            f"its last lines:\n{log_tail(log_path)}"
        )
    report = {
        "config": config_to_dict(config),
        "model": config.model,
        "samples": None if config.samples is None else str(config.samples),
        "limit": config.limit,
        "tasks": metrics,
        "num_docs": num_docs,
        "lmms_model": config.lmms_model,
        # the adapter's protocol on the project's tasks; a built-in wrapper prompts and decodes its own way
        "protocol": protocol_record(config.generation) if config.lmms_model == MODEL_NAME else None,
        # decoded by the llava_star adapter only; their docs were scored as failed answers
        "unreadable_videos": unreadable,
        "lmms_eval_results": str(results_path),
    }
    write_json_atomic(out_dir / "metrics.json", report)
    logger.info("metrics: %s", json.dumps(metrics))
    return report


def config_from_args(argv: Sequence[str] | None = None) -> EvalConfig:

    parser = argparse.ArgumentParser(
        prog="llava-star eval", description="Evaluate a model with lmms-eval on the project's tasks."
    )
    parser.add_argument("--config", help="YAML of EvalConfig keys (what the cycle writes for a launcher)")
    add_config_flags(parser, EvalConfig)
    args = parser.parse_args(argv)
    config = config_from_flags(EvalConfig, args, getattr(args, "config", None))
    if config.samples is not None and not config.samples.is_file():
        raise ConfigError(f"--samples: no such file {config.samples}")
    if config.video_root is not None and not config.video_root.is_dir():
        raise ConfigError(f"--video-root: no such folder {config.video_root}")
    return config


def main(argv: list[str] | None = None) -> int:
    run(config_from_args(argv))
    return 0
