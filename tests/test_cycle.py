"""Self-training cycles: end to end on tiny data, resume after kills, plateau stop, config errors."""

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llava_star.config import load_config
from llava_star.errors import ConfigError
from llava_star.records import Generation, jsonl_lines, kept_counts, read_jsonl
from llava_star.stages.cycle import (
    CycleConfig,
    format_summary,
    is_plateau,
    main,
    run_cycles,
)
from llava_star.training.resume import last_trainer_checkpoint

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- fast checks


def test_plateau_rule():
    assert not is_plateau([0.2], 0.05)
    assert not is_plateau([0.2, 0.3], 0.05)
    assert is_plateau([0.2, 0.3, 0.31], 0.05)
    assert is_plateau([0.5, 0.4], 0.0)  # a drop is a plateau too
    assert not is_plateau([0.5, 0.5], None)


def test_kept_counts_are_three_numbers_kept_direct_and_after_the_hint():
    def gen(sample_id, passed, rationalized):
        return Generation.from_dict(
            {
                "id": sample_id,
                "video": "v.mp4",
                "question": "q?",
                "source": "s",
                "task": "colour",
                "labels": [{"type": "class", "value": "red"}],
                "answer": "red",
                "rationalized": rationalized,
                "passed": passed,
                "checks": [],
                "cycle": 1,
                "model": "m",
            }
        )

    counts = kept_counts([gen("a", True, False), gen("b", True, True), gen("c", False, True), gen("d", False, False)])
    assert counts == {
        "samples": 4,
        "kept": 2,
        "kept_direct": 1,
        "kept_rationalized": 1,
        "rationalized": 2,
        "kept_fraction": 0.5,
        "kept_direct_fraction": 0.25,
        "kept_rationalized_fraction": 0.25,
    }


def test_train_options_the_cycle_owns_are_refused():
    with pytest.raises(ConfigError, match="train.options.output_dir"):
        load_config(CycleConfig, ROOT / "configs" / "cycle.yaml", ["train.options={output_dir: elsewhere}"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("generate.seed=3", "generate.seed: set by `seed`"),
        ("train.options={seed: 3}", "train.options.seed: is set by seed"),
        ("train.options={num_frames: 4}", "train.options.num_frames: is set by generate.num_frames"),
        (
            "launch.eval=[python]",
            "launch.eval: unknown key; expected one of launch.generate, launch.train, launch.lmms_eval",
        ),
    ],
)
def test_a_setting_has_one_place_in_a_cycle_config(override, message):
    """docs/cycle.md: generate.seed was accepted and overwritten by `seed`, train.options.seed
    overrode it for training; a key set in two places is now an error naming the one place."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(CycleConfig, ROOT / "configs" / "cycle.yaml", [override])


def test_the_runs_seed_and_frames_reach_every_stage_and_the_saved_config_loads_back(tmp_path):
    from llava_star.config import write_config
    from llava_star.cycle_config import train_values
    from llava_star.runs import GenerationDir
    from llava_star.stages.cycle import CycleRunner

    config = load_config(CycleConfig, ROOT / "configs" / "cycle.yaml", ["seed=7", "generate.num_frames=4"])
    generate_config = CycleRunner(config).generate_config("m", "s.jsonl", GenerationDir(tmp_path), cycle=1)
    assert (generate_config.seed, generate_config.num_frames) == (7, 4)
    assert {key: train_values(config, "m", "d.json", "o")[key] for key in ("seed", "num_frames")} == {
        "seed": 7,
        "num_frames": 4,
    }
    write_config(config, tmp_path / "config.yaml")  # as the run saves it: no generate.seed
    assert "seed" not in yaml.safe_load((tmp_path / "config.yaml").read_text())["generate"]
    assert load_config(CycleConfig, tmp_path / "config.yaml") == config


def test_every_cycle_key_has_help_in_the_commands_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    keys = [
        line.strip()
        for line in capsys.readouterr().out.split("config keys (YAML, or key=value):")[1].splitlines()
        if line.strip()
    ]
    assert "generate.batch_size" in " ".join(keys) and not any(key.startswith("generate.seed:") for key in keys)
    own = [key for key in keys if not key.startswith("generate.")]  # generate's own options document themselves
    assert len(own) == 23 and all(
        key.split(":", 1)[1].strip() and not key.split(":", 1)[1].strip().startswith("(") for key in own
    ), own


def test_in_process_stages_pass_their_results_on(tmp_path, monkeypatch):
    """The cycle calls the stage's run() and builds its marker from the summary it returns."""
    from llava_star.stages import cycle as cycle_stage

    config = load_config(
        CycleConfig,
        None,
        [
            f"model={tmp_path}",
            f"samples={tmp_path / 's.jsonl'}",
            f"video_root={tmp_path}",
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    counts = {
        "samples": 4,
        "kept": 3,
        "kept_direct": 2,
        "kept_rationalized": 1,
        "rationalized": 2,
        "kept_fraction": 0.75,
        "kept_direct_fraction": 0.5,
        "kept_rationalized_fraction": 0.25,
    }
    grounding = {"grounding_checked": 3, "ungrounded": 1, "grounded_fraction": 2 / 3, "grounded_by_task": {}}
    seen = []

    def fake_generate(stage_config):
        seen.append(stage_config)
        return {**counts, **grounding, "video_failures": 1, "this_run": {}, "model": stage_config.model}

    monkeypatch.setattr(cycle_stage.generate, "run", fake_generate)
    runner = cycle_stage.CycleRunner(config)
    marker = runner.generate(runner.run_dir.cycle(1), "model-1", 1)
    assert marker == {"model": "model-1", **counts, **grounding, "unreadable_videos": 1} and seen[0].cycle == 1
    assert json.loads((tmp_path / "run" / "cycle_1" / "done" / "generate.json").read_text()) == marker


def test_missing_inputs_name_the_key(tmp_path):
    config = load_config(
        CycleConfig,
        None,
        [
            f"model={tmp_path}",
            f"samples={tmp_path / 'nope.jsonl'}",
            f"video_root={tmp_path}",
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    with pytest.raises(ConfigError, match="^samples: .*nope.jsonl does not exist"):
        run_cycles(config)


@pytest.mark.parametrize(
    "options, key",
    [
        ({"learning_rte": 1e-3}, "train.options.learning_rte"),
        ({"learning_rate": -1.0}, "train.options.learning_rate"),
        ({"trainer_args": {"not_a_field": 1}}, "train.options.trainer_args.not_a_field"),
    ],
)
def test_bad_train_options_fail_when_the_config_loads(tmp_path, options, key):
    """Checked as `llava-star train` checks them, when the cycle's config loads (issue 27), not
    cycles later when the train stage starts."""
    with pytest.raises(ConfigError, match=f"^{key}: "):
        load_config(
            CycleConfig,
            None,
            [
                f"model={tmp_path}",
                f"samples={tmp_path / 'samples.jsonl'}",
                f"video_root={tmp_path}",
                f"output_dir={tmp_path / 'run'}",
                f"train.options={json.dumps(options)}",
            ],
        )


def test_cli_reports_a_bad_override_naming_the_key(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llava_star",
            "cycle",
            "--config",
            str(ROOT / "configs" / "cycle.yaml"),
            "generate.batchsize=4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "generate.batchsize: unknown key" in result.stderr


# ---------------------------------------------------------------- real runs on tiny data

COLOUR_TASK = "colour"


@pytest.mark.parametrize(
    "argv, environ, expected, local_rank",
    [
        (
            ["--local_rank=0", "train", "--config", "c.yaml"],
            {"LOCAL_RANK": "0"},
            ["train", "--config", "c.yaml"],
            "0",
        ),  # deepspeed
        (["--local-rank=3", "generate"], {"LOCAL_RANK": "3"}, ["generate"], "3"),  # torch.distributed.launch
        (["--local_rank", "2", "train"], {}, ["train"], "2"),  # a launcher that sets no LOCAL_RANK: the flag sets it
        (
            ["train", "--local_rank=0"],
            {},
            ["train", "--local_rank=0"],
            None,
        ),  # after the command: the command's own flag
    ],
)
def test_a_launchers_local_rank_before_the_command_is_dropped(argv, environ, expected, local_rank):
    from llava_star.cli import strip_launcher_local_rank

    assert strip_launcher_local_rank(argv, environ) == expected
    assert environ.get("LOCAL_RANK") == local_rank


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--local_rank=1", "train"], "--local_rank=1 disagrees with LOCAL_RANK=0"),
        (["--local_rank=x", "train"], "expected a non-negative number, got 'x'"),
        (["--local_rank"], "expected a number after it"),
    ],
)
def test_a_bad_launcher_local_rank_exits_2_naming_it(argv, message, monkeypatch, capsys):
    from llava_star.cli import main as cli_main

    monkeypatch.setenv("LOCAL_RANK", "0")
    assert cli_main(argv) == 2
    assert message in capsys.readouterr().err


def test_every_command_names_a_function_taking_argv():
    import inspect

    from llava_star.cli import COMMANDS, resolve

    for command, (target, _) in COMMANDS.items():
        function = resolve(target)
        assert callable(function) and list(inspect.signature(function).parameters) == ["argv"], command


class _StageStarted(Exception):
    """Raised by a stand-in stage runner once it has seen the stage's config."""


def _held_out_ids_answered(tmp_path, monkeypatch, seed):
    """The ids the baseline evaluation and cycle 1's evaluation would answer, no model run."""
    from llava_star.stages import cycle as cycle_stage

    classes = ("archery", "bowling", "cooking", "dancing", "eating")
    lines = [
        json.dumps(
            {
                "id": f"{name}-{index}",
                "video": "v.mp4",
                "question": "What happens?",
                "source": "test",
                "task": "action",
                "labels": [{"type": "class", "value": name}],
            }
        )
        for name in classes
        for index in range(8)
    ]
    samples = tmp_path / "held_out.jsonl"
    samples.write_text("\n".join(lines) + "\n")  # grouped by class, as annotation files often are
    config = load_config(
        CycleConfig,
        None,
        [
            f"model={tmp_path}",
            f"samples={samples}",
            f"video_root={tmp_path}",
            f"output_dir={tmp_path / f'run-{seed}'}",
            f"eval.samples={samples}",
            "eval.limit=10",
            f"seed={seed}",
        ],
    )
    seen = []

    def fake_run_stage(command, run, stage_config, launch_prefix, config_file):
        rows = [json.loads(raw) for _, raw in itertools.islice(jsonl_lines(stage_config.samples), stage_config.limit)]
        seen.append([row["id"] for row in rows])
        raise _StageStarted

    monkeypatch.setattr(cycle_stage, "run_stage", fake_run_stage)
    runner = cycle_stage.CycleRunner(config)
    for stage_dir, cycle in ((runner.run_dir.baseline, 0), (runner.run_dir.cycle(1), 1)):
        with pytest.raises(_StageStarted):
            runner.evaluate(stage_dir, str(tmp_path), cycle)
    return seen


def test_held_out_limit_is_a_seeded_random_subset_the_same_every_cycle(tmp_path, monkeypatch):
    """eval.limit took the first N lines: with a file grouped by class, every cycle measured
    two of five classes."""
    baseline, cycle_1 = _held_out_ids_answered(tmp_path, monkeypatch, seed=0)
    assert len(baseline) == 10 and baseline == cycle_1  # the same subset, so cycles compare
    assert len({sample_id.split("-")[0] for sample_id in baseline}) >= 4
    assert _held_out_ids_answered(tmp_path, monkeypatch, seed=0)[0] == baseline  # a rerun: the same again
    assert _held_out_ids_answered(tmp_path, monkeypatch, seed=1)[0] != baseline  # another seed: another draw


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """Synthetic videos, the colour questions split into train / held-out, and a tiny VideoLlava."""
    from llava_star.datasets.synthetic import main as synthetic_main
    from llava_star.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny-cycle")
    assert synthetic_main(["-o", str(root / "data"), "--num-videos", "24", "--seed", "0"]) == 0
    for split, limit in (("train", 16), ("test", 6)):
        lines = [
            line
            for line in (root / "data" / f"{split}.jsonl").read_text().splitlines()
            if json.loads(line)["task"] == COLOUR_TASK
        ]
        assert lines, f"no {COLOUR_TASK} samples in the synthetic {split} split"
        (root / f"{split}.jsonl").write_text("\n".join(lines[:limit]) + "\n")
    model = build_tiny_model("video_llava", root / "model", seed=0)
    # A random model keeps no answer; a few mixed-in LLaVA records make every cycle train.
    samples = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()][:4]
    mix = [
        {
            "id": f"mix-{index}",
            "video": sample["video"],
            "conversations": [
                {"from": "human", "value": "<video>\n" + sample["question"]},
                {"from": "gpt", "value": f"The object is {sample['labels'][0]['value']}."},
            ],
        }
        for index, sample in enumerate(samples)
    ]
    (root / "mix.json").write_text(json.dumps(mix))
    return {"root": root, "model": model, "mix": root / "mix.json"}


def write_config(tmp_path, setup, **overrides):
    data = {
        "model": str(setup["model"]),
        "samples": str(setup["root"] / "train.jsonl"),
        "video_root": str(setup["root"] / "data"),
        "output_dir": str(tmp_path / "run"),
        "cycles": 2,
        "min_kept_gain": None,
        "generate": {"batch_size": 4, "num_frames": 8, "max_new_tokens": 12},
        "train": {
            "mix": [str(setup["mix"])],
            "options": {
                "max_steps": 2,
                "per_device_train_batch_size": 4,
                "learning_rate": 1.0e-3,
                "dataloader_num_workers": 0,
            },
        },
        "eval": {"samples": str(setup["root"] / "test.jsonl")},
    }
    for key, value in overrides.items():
        node = data
        *parents, last = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = value
    path = tmp_path / "cycle.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def ids_in(directory):
    ids = []
    for shard in sorted(Path(directory).glob("generations.*.jsonl")):
        ids.extend(line["id"] for line in read_jsonl(shard))
    return ids


@pytest.mark.slow
def test_two_cycles_end_to_end(tmp_path, tiny_setup, capsys):
    config = write_config(tmp_path, tiny_setup, final_direct_only=True)
    assert main(["--config", str(config)]) == 0
    run = tmp_path / "run"
    train_ids = [json.loads(line)["id"] for line in (tiny_setup["root"] / "train.jsonl").read_text().splitlines()]
    test_ids = [json.loads(line)["id"] for line in (tiny_setup["root"] / "test.jsonl").read_text().splitlines()]
    for cycle in (1, 2):
        directory = run / f"cycle_{cycle}"
        assert sorted(ids_in(directory / "generations")) == sorted(train_ids)
        assert sorted(ids_in(directory / "eval" / "generations")) == sorted(test_ids)
        evaluation = json.loads((directory / "eval.json").read_text())
        assert evaluation["samples"] == len(test_ids) and 0 <= evaluation["accuracy"] <= 1
        for stage in ("generate", "export", "train", "eval"):
            assert (directory / "done" / f"{stage}.json").exists()
        exported = json.loads((directory / "done" / "export.json").read_text())
        records = json.loads((directory / "train.json").read_text())
        assert len(records) == exported["samples"] >= 4  # the kept answers and the mix
        train_info = json.loads((directory / "done" / "train.json").read_text())
        assert train_info["trained"] and (directory / "model" / "config.json").exists()
        # STaR: every cycle starts again from the base checkpoint
        assert train_info["from"] == str(tiny_setup["model"].resolve())
    # model_2 (trained in cycle 1) generates cycle 2
    generations = list(
        read_jsonl(next((run / "cycle_2" / "generations").glob("generations.*.jsonl")), Generation.from_dict)
    )
    assert {g.cycle for g in generations} == {2}
    assert (run / "baseline" / "eval.json").exists()
    saved = load_config(CycleConfig, run / "config.yaml")
    assert saved.output_dir == str(run.resolve()) and saved.cycles == 2
    stats = json.loads((run / "report" / "stats.json").read_text())
    assert [entry["label"] for entry in stats["cycles"]] == ["start", "1", "2", "final"]
    assert (run / "report" / "index.html").exists() and (run / "report" / "accuracy_by_cycle.png").exists()
    summary = json.loads((run / "run.json").read_text())
    assert summary["stopped"] == "completed all cycles" and len(summary["cycles"]) == 2
    # the paper's final model: from the base, on the last cycle's direct answers only
    final_records = json.loads((run / "final" / "train.json").read_text())
    assert final_records and not any(record.get("rationalized") for record in final_records)
    assert summary["final"]["eval"]["samples"] == len(test_ids) and summary["model"] == str(run / "final" / "model")
    out = capsys.readouterr().out
    assert "held-out accuracy" in out and "report:" in out

    # a rerun of a finished run does nothing again
    before = {path: path.stat().st_mtime_ns for path in run.rglob("*.jsonl")}
    assert main(["--config", str(config)]) == 0
    assert before == {path: path.stat().st_mtime_ns for path in run.rglob("*.jsonl")}


@pytest.mark.slow
def test_plateau_stops_early(tmp_path, tiny_setup):
    # kept fraction can never grow by more than 100 points: the run stops after cycle 2
    # ... with generation and training launched as separate processes, as torchrun would start them
    launch = [sys.executable, "-m", "llava_star"]
    config = load_config(
        CycleConfig,
        write_config(
            tmp_path,
            tiny_setup,
            cycles=4,
            min_kept_gain=1.01,
            **{"launch.generate": launch, "launch.train": list(launch), "eval.samples": None},
        ),
    )
    summary = run_cycles(config)
    assert len(summary["cycles"]) == 2 and summary["stopped"].startswith("plateau after cycle 2")
    assert not (tmp_path / "run" / "cycle_3").exists()
    assert "plateau" in format_summary(summary) and summary["baseline"] is None
    assert ids_in(tmp_path / "run" / "cycle_2" / "generations")  # written by the launched process
    # the launched stages ran the configs the cycle wrote from its own dataclasses
    generate_config = yaml.safe_load((tmp_path / "run" / "cycle_2" / "generate_config.yaml").read_text())
    assert (
        generate_config["seed"] == config.seed and generate_config["batch_size"] == 4 and generate_config["cycle"] == 2
    )
    assert yaml.safe_load((tmp_path / "run" / "cycle_1" / "train_config.yaml").read_text())["max_steps"] == 2
    assert (tmp_path / "run" / "cycle_1" / "model" / "config.json").exists()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_the_deepspeed_launcher_trains_a_cycle(tmp_path, tiny_setup, monkeypatch):
    """configs/cycle.yaml's launch.train, [deepspeed, --num_gpus=N, --module, llava_star], with
    the real launcher on one CPU process: it puts --local_rank=0 before the command, which the
    CLI refused ("unknown command '--local_rank=0'")."""
    pytest.importorskip("deepspeed")
    launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or shutil.which("deepspeed")
    if launcher is None:
        pytest.skip("the deepspeed launcher is not on PATH")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    launch = [launcher, "--num_gpus=1", f"--master_port={free_port()}", "--module", "llava_star"]
    config = load_config(
        CycleConfig,
        write_config(
            tmp_path,
            tiny_setup,
            cycles=1,
            **{
                "launch.train": launch,
                "eval.samples": None,
                "generate.max_new_tokens": 4,
            },
        ),
    )
    summary = run_cycles(config)
    model = tmp_path / "run" / "cycle_1" / "model"
    assert summary["cycles"][0]["train"]["trained"] and (model / "config.json").exists()
    assert json.loads((model / "train_summary.json").read_text())["global_step"] == 2  # train.options.max_steps


def run_until(config, condition, timeout=600):
    """Start `llava-star cycle` in a subprocess and kill -9 it as soon as ``condition()`` holds."""
    process = subprocess.Popen(
        [sys.executable, "-m", "llava_star", "cycle", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while not condition():
            if process.poll() is not None:
                raise AssertionError(f"the run ended before the kill point: {process.stderr.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for the kill point")
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()


def shard_lines(directory):
    return sum(len(shard.read_bytes().splitlines()) for shard in Path(directory).glob("generations.*.jsonl"))


@pytest.mark.slow
def test_resume_after_kill_between_stages(tmp_path, tiny_setup):
    config = write_config(tmp_path, tiny_setup, cycles=1, **{"eval.baseline": False})
    cycle_dir = tmp_path / "run" / "cycle_1"
    run_until(config, lambda: (cycle_dir / "done" / "export.json").exists())
    assert not (cycle_dir / "done" / "eval.json").exists()
    generated = {path: path.stat().st_mtime_ns for path in (cycle_dir / "generations").glob("*.jsonl")}
    exported = (cycle_dir / "train.json").stat().st_mtime_ns
    assert main(["--config", str(config)]) == 0
    # the finished stages were not run again, the unfinished ones were
    assert generated == {path: path.stat().st_mtime_ns for path in (cycle_dir / "generations").glob("*.jsonl")}
    assert (cycle_dir / "train.json").stat().st_mtime_ns == exported
    assert (cycle_dir / "done" / "train.json").exists() and (cycle_dir / "eval.json").exists()


@pytest.mark.slow
def test_resume_after_kill_in_the_middle_of_generation(tmp_path, tiny_setup):
    config = write_config(tmp_path, tiny_setup, cycles=1, **{"eval.baseline": False, "generate.batch_size": 1})
    generations = tmp_path / "run" / "cycle_1" / "generations"
    run_until(config, lambda: generations.is_dir() and shard_lines(generations) >= 3)
    written = shard_lines(generations)
    train_ids = [json.loads(line)["id"] for line in (tiny_setup["root"] / "train.jsonl").read_text().splitlines()]
    assert 3 <= written < len(train_ids) + 1, "the kill came too late to test a resume inside generation"
    assert main(["--config", str(config)]) == 0
    ids = ids_in(generations)
    assert sorted(ids) == sorted(train_ids)  # every sample exactly once
    assert (tmp_path / "run" / "cycle_1" / "eval.json").exists()


def test_last_trainer_checkpoint_skips_cut_short_ones(tmp_path):
    from llava_star.training.manifest import write_manifest

    assert last_trainer_checkpoint(tmp_path / "missing") is None
    for step, complete in ((2, True), (10, True), (12, False)):  # checkpoint-12 was cut short
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
            write_manifest(tmp_path / f"checkpoint-{step}")  # written last, once every rank has saved
    (tmp_path / "checkpoint-final").mkdir()
    assert last_trainer_checkpoint(tmp_path) == tmp_path / "checkpoint-10"  # 10 > 2 as numbers, not as text


@pytest.mark.slow
def test_resume_after_kill_in_the_middle_of_training(tmp_path, tiny_setup):
    options = {
        "max_steps": 8,
        "per_device_train_batch_size": 2,
        "learning_rate": 1.0e-3,
        "dataloader_num_workers": 0,
        "save_strategy": "steps",
        "save_steps": 1,
        "save_total_limit": None,
    }
    config = write_config(tmp_path, tiny_setup, cycles=1, **{"eval.baseline": False, "train.options": options})
    cycle_dir = tmp_path / "run" / "cycle_1"
    model_dir = cycle_dir / "model"
    run_until(config, lambda: (model_dir / "checkpoint-2" / "trainer_state.json").exists())
    assert not (cycle_dir / "done" / "train.json").exists(), "the kill came too late to test a resume inside training"
    kept = last_trainer_checkpoint(model_dir)
    assert kept is not None and int(kept.name.split("-")[1]) < 8
    first = model_dir / "checkpoint-1" / "trainer_state.json"
    first_written = first.stat().st_mtime_ns
    assert main(["--config", str(config)]) == 0
    train_config = json.loads((model_dir / "llava_star_train_config.json").read_text())  # what the train stage ran
    assert train_config["resume_from_checkpoint"] == str(kept)
    assert first.stat().st_mtime_ns == first_written  # resumed: the early checkpoints were not written again
    state = json.loads((model_dir / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    assert (cycle_dir / "done" / "train.json").exists() and (cycle_dir / "eval.json").exists()


@pytest.mark.slow
def test_lmms_eval_tasks_run_after_each_cycle(tmp_path, tiny_setup):
    pytest.importorskip("lmms_eval", reason="the eval extra is not installed")
    config = write_config(
        tmp_path, tiny_setup, cycles=1, **{"eval.baseline": False, "eval.lmms_tasks": ["llava_star_qa"]}
    )
    assert main(["--config", str(config)]) == 0
    evaluated = json.loads((tmp_path / "run" / "cycle_1" / "eval.json").read_text())
    metrics = json.loads((Path(evaluated["lmms_eval_dir"]) / "metrics.json").read_text())
    assert (
        metrics["model"] == evaluated["model"] == str(tmp_path / "run" / "cycle_1" / "model")
    )  # the cycle's new model
    assert metrics["num_docs"] == {"llava_star_qa": evaluated["samples"]}  # every held-out sample
    accuracy = metrics["tasks"]["llava_star_qa"]["accuracy"]
    assert 0.0 <= accuracy <= 1.0


def break_videos(root, names, good):
    """Missing, corrupt, empty and truncated copies of real videos, as real datasets have them."""
    good_bytes = (root / good).read_bytes()
    (root / names["corrupt"]).write_bytes(bytes(range(256)) * 40)
    (root / names["empty"]).write_bytes(b"")
    (root / names["truncated"]).write_bytes(good_bytes[: len(good_bytes) // 3])


@pytest.mark.slow
def test_a_cycle_over_broken_videos_and_images_finishes_and_reports_them(tmp_path, tiny_setup):
    # on 50b0a39 one missing video stopped the cycle at its first export
    import shutil

    from PIL import Image

    data = tmp_path / "data"
    shutil.copytree(tiny_setup["root"] / "data", data)
    train = [json.loads(line) for line in (tiny_setup["root"] / "train.jsonl").read_text().splitlines()]
    held_out = [json.loads(line) for line in (tiny_setup["root"] / "test.jsonl").read_text().splitlines()]
    names = {kind: f"videos/broken_{kind}.mp4" for kind in ("missing", "corrupt", "empty", "truncated")}
    break_videos(data, names, train[0]["video"])
    broken = [{**train[0], "id": f"broken-{kind}", "video": name} for kind, name in names.items()]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(s) + "\n" for s in train + broken))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(s) + "\n" for s in held_out + broken[:1]))
    Image.new("RGB", (32, 32), "red").save(data / "good.png")
    (data / "broken.png").write_bytes(b"not a png")
    mix = json.loads(tiny_setup["mix"].read_text()) + [
        {
            "id": f"image-{name}",
            "image": name,
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colour is it?"},
                {"from": "gpt", "value": "Red."},
            ],
        }
        for name in ("good.png", "broken.png")
    ]
    (tmp_path / "mix.json").write_text(json.dumps(mix))
    config = write_config(
        tmp_path,
        tiny_setup,
        cycles=1,
        samples=str(tmp_path / "train.jsonl"),
        video_root=str(data),
        **{
            "eval.samples": str(tmp_path / "test.jsonl"),
            "train.mix": [str(tmp_path / "mix.json")],
            "train.options.image_root": str(data),
        },
    )
    assert main(["--config", str(config)]) == 0
    run = tmp_path / "run"
    generations = run / "cycle_1" / "generations"
    failed = sorted(line["id"] for line in read_all_lines(generations, "failures"))
    assert failed == sorted(sample["id"] for sample in broken)
    assert sorted(ids_in(generations)) == sorted(sample["id"] for sample in train)
    summary = json.loads((run / "run.json").read_text())
    assert summary["cycles"][0]["generate"]["unreadable_videos"] == 4
    assert summary["cycles"][0]["eval"]["unreadable_videos"] == 1
    assert summary["cycles"][0]["train"]["unusable_records"] == 1  # broken.png
    stats = json.loads((run / "report" / "stats.json").read_text())
    cycle_1 = next(entry for entry in stats["cycles"] if entry["cycle"] == 1)
    assert cycle_1["training"]["unreadable_videos"] == 4 and cycle_1["unusable_training_records"] == 1


def read_all_lines(directory, stem):
    return [line for shard in sorted(Path(directory).glob(f"{stem}.*.jsonl")) for line in read_jsonl(shard)]
