"""The on-disk contract of a run (llava_star.runs): layout, and one writer per output."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llava_star import cli
from llava_star.records import write_jsonl_atomic
from llava_star.runs import (
    CycleRunDir,
    GenerationDir,
    OutputInUseError,
    exclusive_directory,
    exclusive_file,
    shard_name,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def generation_line(sample_id, passed=True, rationalized=False):
    return {
        "id": sample_id,
        "video": f"{sample_id}.mp4",
        "question": "What colour is it?",
        "source": "test",
        "task": "colour",
        "labels": [{"type": "class", "value": "red"}],
        "answer": "It is red.",
        "rationalized": rationalized,
        "passed": passed,
        "checks": [],
        "cycle": 1,
        "model": "m",
    }


@pytest.fixture
def generation_dir(tmp_path):
    """A generation directory as `llava-star generate` leaves it after one video failed."""
    directory = GenerationDir(tmp_path / "generations")
    write_jsonl_atomic(
        directory.generations_shard(0, 2), [generation_line("a"), generation_line("b", rationalized=True)]
    )
    write_jsonl_atomic(directory.generations_shard(1, 2), [generation_line("c", passed=False)])
    write_jsonl_atomic(directory.failures_shard(0, 2), [{"id": "d", "video": "d.mp4", "reason": "no such file"}])
    directory.config.write_text("{}")
    directory.summary.write_text("{}")
    return directory


def test_generation_dir_tells_shards_from_failures_and_stats(generation_dir):
    assert [g.id for g in generation_dir.generations()] == ["a", "b", "c"]
    assert [line["id"] for line in generation_dir.video_failures()] == ["d"]
    assert generation_dir.generations_shard(3, 8).name == shard_name("generations", 3, 8)


def test_export_of_a_generation_dir_with_a_failed_video_exports_the_kept_answers(generation_dir, tmp_path):
    # on 50b0a39 export read every *.jsonl and stopped at the failures shard (exit 2)
    out = tmp_path / "train.json"
    assert cli.main(["export", str(generation_dir.path), "-o", str(out)]) == 0
    assert [record["id"] for record in json.loads(out.read_text())] == ["a", "b"]


def test_cycle_run_dir_orders_cycles_numerically(tmp_path):
    for number in (1, 2, 10):
        (tmp_path / f"cycle_{number}").mkdir()
    (tmp_path / "cycle_x").mkdir()
    run = CycleRunDir(tmp_path)
    assert run.cycle_numbers() == [1, 2, 10]
    assert run.cycle(2).marker("train") == tmp_path / "cycle_2" / "done" / "train.json"


def test_a_second_writer_stops_at_once_naming_the_holder(tmp_path):
    refused = pytest.raises(
        OutputInUseError, match=rf"already being written by llava-star generate, pid {os.getpid()} on "
    )
    with exclusive_directory(tmp_path / "out", "generate"), refused, exclusive_directory(tmp_path / "out", "generate"):
        pass
    with exclusive_directory(tmp_path / "out", "generate"):  # released on leaving the block
        pass


def test_a_file_output_is_locked_by_a_sibling_file(tmp_path):
    target = tmp_path / "train.json"
    with exclusive_file(target, "export"):
        assert (tmp_path / "train.json.lock").exists() and not target.exists()
        with (
            pytest.raises(OutputInUseError, match="train.json: already being written by llava-star export"),
            exclusive_file(target, "export"),
        ):
            pass


HOLD_THE_LOCK = textwrap.dedent(
    """
    import sys, time
    from llava_star.runs import exclusive_directory
    with exclusive_directory(sys.argv[1], "generate"):
        print("holding", flush=True)
        time.sleep(120)
    """
)


def test_kill_9_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(tmp_path / "out")], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with (
            pytest.raises(OutputInUseError, match=f"pid {holder.pid} "),
            exclusive_directory(tmp_path / "out", "generate"),
        ):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with exclusive_directory(tmp_path / "out", "generate"):  # nothing to clean by hand
        pass


HOLD_THE_LOCK_WITH_A_WORKER = textwrap.dedent(
    """
    import os, sys, time
    from llava_star.runs import exclusive_directory
    with exclusive_directory(sys.argv[1], "generate"):
        started, ready = os.pipe()
        if os.fork() == 0:  # a forked worker (as a DataLoader's) that outlives its parent
            os.write(ready, b"x")  # its fork hooks have run: say so, or a loaded machine races the test
            time.sleep(120)
            os._exit(0)
        os.read(started, 1)
        print("holding", flush=True)
        time.sleep(120)
    """
)


def test_a_forked_worker_does_not_keep_its_dead_parents_lock(tmp_path):
    """kill -9 of the job alone: its orphaned worker must not keep the output locked."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK_WITH_A_WORKER, str(tmp_path / "out")],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        with exclusive_directory(tmp_path / "out", "generate"):  # the worker still runs, the lock is free
            pass
    finally:
        os.killpg(holder.pid, signal.SIGKILL)


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "{gen}", "-o", "{out}/train.json"],
        ["verify", "{gen}/generations.rank00000-of-00002.jsonl", "-o", "{out}/verdicts.jsonl"],
    ],
)
def test_commands_refuse_a_second_copy_and_write_nothing(generation_dir, tmp_path, argv):
    out = tmp_path / "out"
    argv = [item.format(gen=generation_dir.path, out=out) for item in argv]
    target = Path(argv[-1])
    with exclusive_file(target, argv[0]):
        assert cli.main(argv) == 2
    assert not target.exists()
