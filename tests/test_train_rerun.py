"""Rerunning ``llava-star train`` on its output resumes from the last complete checkpoint,
counts each unusable sample once, and loads nothing of a checkpoint whose files are not the
ones the run wrote (issue 27).

On 30d1d32 a rerun started again at step 0 (the README said it resumed), appended its
failures to the earlier attempt's, and ``--deepspeed ... --resume-from-checkpoint DIR``
unpickled whatever ``DIR/global_step*/`` held (DeepSpeed's ``torch.load(weights_only=False)``).
An interruption is made by copying what a run killed after ``checkpoint-3`` leaves behind
(its checkpoint and failures file) into a fresh folder: the same files a kill leaves, with
no race against the clock.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_resume import TOLERANCE, final_weights, max_difference, options
from tiny_model_helpers import free_port, single_process_env

from llava_star.training.manifest import MANIFEST_FILE, UntrustedCheckpointError, verify_manifest, write_manifest
from llava_star.training.resume import (
    CheckpointError,
    checkpoint_to_resume,
    deduplicate_lines,
    last_trainer_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]


# --- the manifest -------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path):
    folder = tmp_path / "checkpoint-3"
    (folder / "global_step3").mkdir(parents=True)
    (folder / "trainer_state.json").write_text('{"global_step": 3}')
    (folder / "global_step3" / "mp_rank_00_model_states.pt").write_bytes(b"weights" * 100)
    (folder / "latest").write_text("global_step3")
    write_manifest(folder, {"learning_rate": 0.001})
    return folder


def test_a_checkpoint_matching_its_manifest_is_accepted(checkpoint):
    manifest = verify_manifest(checkpoint)
    assert sorted(manifest["files"]) == ["global_step3/mp_rank_00_model_states.pt", "latest", "trainer_state.json"]
    assert manifest["settings"] == {"learning_rate": 0.001}


def test_a_changed_file_is_refused_by_name(checkpoint):
    target = checkpoint / "global_step3" / "mp_rank_00_model_states.pt"
    target.write_bytes(b"WEIGHTS" * 100)  # same size, other bytes
    with pytest.raises(UntrustedCheckpointError, match=r"mp_rank_00_model_states\.pt: its SHA-256 differs"):
        verify_manifest(checkpoint)


@pytest.mark.parametrize("rank", [0, 1])
def test_ranks_split_the_hashing_and_each_checks_the_listing(checkpoint, rank):
    (checkpoint / "latest").write_text("global_step4")  # same size, other bytes; index 1 of 3 files
    if rank == 1:
        with pytest.raises(UntrustedCheckpointError, match=r"latest: its SHA-256 differs"):
            verify_manifest(checkpoint, share=(1, 2))
    else:
        verify_manifest(checkpoint, share=(0, 2))  # rank 0 hashes files 0 and 2 only
    (checkpoint / "global_step3" / "planted.pt").write_bytes(b"x")
    with pytest.raises(UntrustedCheckpointError, match=r"planted\.pt: not written by the run"):
        verify_manifest(checkpoint, share=(rank, 2))


def test_an_added_removed_or_linked_file_is_refused_by_name(checkpoint, tmp_path):
    planted = checkpoint / "global_step3" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    planted.write_bytes(b"pickle")
    with pytest.raises(UntrustedCheckpointError, match=r"zero_pp_rank_0_mp_rank_00_optim_states\.pt: not written"):
        verify_manifest(checkpoint)
    planted.unlink()
    (checkpoint / "latest").unlink()
    with pytest.raises(UntrustedCheckpointError, match=r"latest: listed in .* but missing"):
        verify_manifest(checkpoint)
    (tmp_path / "elsewhere").write_text("global_step3")
    (checkpoint / "latest").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UntrustedCheckpointError, match=r"latest: a link or special file"):
        verify_manifest(checkpoint)


def test_a_checkpoint_without_manifest_is_refused(checkpoint):
    (checkpoint / MANIFEST_FILE).unlink()
    with pytest.raises(
        UntrustedCheckpointError, match=r"llava_star_checkpoint_manifest\.json: missing.*--trust-checkpoint"
    ):
        verify_manifest(checkpoint)


# --- which checkpoint a rerun goes on from --------------------------------------------------


def test_a_rerun_picks_the_newest_checkpoint_with_a_manifest(checkpoint):
    run = checkpoint.parent
    newer = run / "checkpoint-6"  # killed while its manifest was being written
    newer.mkdir()
    (newer / "trainer_state.json").write_text("{}")
    assert last_trainer_checkpoint(run) == checkpoint
    assert checkpoint_to_resume(run, None) == checkpoint
    assert checkpoint_to_resume(run, "True") == checkpoint  # HF's --resume_from_checkpoint True
    assert checkpoint_to_resume(run, "none") is None
    assert checkpoint_to_resume(run, str(newer)) == newer  # given by hand: verified before it loads


def test_a_run_of_checkpoints_without_manifests_is_not_resumed_silently(tmp_path):
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    (folder / "trainer_state.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"checkpoint-3: a checkpoint without .*--resume-from-checkpoint none"):
        checkpoint_to_resume(tmp_path, None)
    with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
        checkpoint_to_resume(tmp_path / "empty", "last")


def test_failure_lines_are_kept_once_in_first_seen_order(tmp_path):
    path = tmp_path / "train_failures.jsonl"
    path.write_text('{"id": "b"}\n{"id": "a"}\n{"id": "b"}\n\n{"id": "a"}\n')
    assert deduplicate_lines(path) == 2
    assert path.read_text() == '{"id": "b"}\n{"id": "a"}\n'


# --- the train stage, rerun -------------------------------------------------------------------


def six_records_one_broken(train_json, synthetic_dataset, tmp_path):
    """Five usable records and one whose video is garbage: 3 steps of 2 per epoch."""
    records = json.loads(train_json.read_text())[:5]
    videos = tmp_path / "videos"
    (videos / "videos").mkdir(parents=True)
    for name in {record["video"] for record in records}:
        shutil.copyfile(synthetic_dataset.root / name, videos / name)
    (videos / "videos" / "broken.mp4").write_bytes(b"\x00garbage" * 64)
    records.insert(2, dict(records[0], id="broken-video", video="videos/broken.mp4"))
    data = tmp_path / "train.json"
    data.write_text(json.dumps(records))
    return data, videos


def interrupted_after(run: Path, step: int, into: Path) -> None:
    """What a run killed after saving ``checkpoint-<step>`` leaves: that checkpoint and its failures."""
    into.mkdir(parents=True)
    shutil.copytree(run / f"checkpoint-{step}", into / f"checkpoint-{step}")
    if (run / "train_failures.jsonl").is_file():
        shutil.copyfile(run / "train_failures.jsonl", into / "train_failures.jsonl")


def train_in_process(values):
    from llava_star.stages.train import make_config, run

    return run(make_config(values))


@pytest.mark.slow
def test_a_rerun_resumes_with_the_uninterrupted_weights_and_counts_failures_once(
    tiny_model, train_json, synthetic_dataset, tmp_path
):
    data, videos = six_records_one_broken(train_json, synthetic_dataset, tmp_path)

    def settings(output):
        values = options(tiny_model, data, videos, output, num_train_epochs=2.0, max_steps=-1)
        return values

    straight = train_in_process(settings(tmp_path / "straight"))
    assert straight["global_step"] == 6 and straight["resumed_from"] is None
    failures = (tmp_path / "straight" / "train_failures.jsonl").read_text().splitlines()
    # met in each of the two epochs, counted once
    assert [json.loads(line)["id"] for line in failures] == ["broken-video"] and straight["failures"] == 1

    rerun_dir = tmp_path / "rerun"
    interrupted_after(tmp_path / "straight", 3, rerun_dir)
    rerun = train_in_process(settings(rerun_dir))  # the same command again
    assert rerun["resumed_from"] == str(rerun_dir / "checkpoint-3")
    difference = max_difference(final_weights(tmp_path / "straight"), final_weights(rerun_dir))
    assert difference <= TOLERANCE, f"resumed weights differ by {difference:.3g}"
    assert rerun["losses"] == pytest.approx(straight["losses"], abs=1e-5)
    assert (rerun_dir / "train_failures.jsonl").read_text().splitlines() == failures
    assert rerun["failures"] == 1

    fresh = train_in_process({**settings(rerun_dir), "resume_from_checkpoint": "none"})
    assert fresh["resumed_from"] is None and fresh["global_step"] == 6
    assert (rerun_dir / "train_failures.jsonl").read_text().splitlines() == failures
    assert max_difference(final_weights(tmp_path / "straight"), final_weights(rerun_dir)) <= TOLERANCE


@pytest.mark.slow
def test_a_rerun_with_other_settings_is_refused_naming_them(tiny_model, train_json, synthetic_dataset, tmp_path):
    data, videos = six_records_one_broken(train_json, synthetic_dataset, tmp_path)
    train_in_process(options(tiny_model, data, videos, tmp_path / "run", max_steps=3))
    with pytest.raises(CheckpointError, match=r"checkpoint-3: written by a run with other settings \(learning_rate"):
        train_in_process(options(tiny_model, data, videos, tmp_path / "run", max_steps=3, learning_rate=5e-4))


class _CreatesAFile:
    """A pickle whose loading creates ``path``: proof that a payload ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def train_command(values, output: Path) -> subprocess.CompletedProcess:
    config = output.parent / f"{output.name}.yaml"
    config.write_text(json.dumps(values))  # JSON is YAML
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO), **single_process_env())
    return subprocess.run(
        [sys.executable, "-m", "llava_star", "train", "--config", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )


@pytest.mark.slow
def test_a_planted_deepspeed_pickle_is_refused_and_never_runs(tiny_model, train_json, synthetic_dataset, tmp_path):
    pytest.importorskip("deepspeed")
    deepspeed = str(REPO / "scripts" / "zero2.json")

    def settings(output):
        return options(
            tiny_model, train_json, synthetic_dataset.root, output, max_steps=4, save_steps=2, deepspeed=deepspeed
        )

    straight = train_command(settings(tmp_path / "straight"), tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-4000:]
    saved = tmp_path / "straight" / "checkpoint-2"
    assert (saved / MANIFEST_FILE).is_file() and (saved / "global_step2" / "mp_rank_00_model_states.pt").is_file()

    # the same checkpoint with a pickle planted where DeepSpeed reads its engine state
    planted_dir = tmp_path / "planted"
    interrupted_after(tmp_path / "straight", 2, planted_dir)
    marker = tmp_path / "payload-ran"
    target = planted_dir / "checkpoint-2" / "global_step2" / "mp_rank_00_model_states.pt"
    target.write_bytes(pickle.dumps(_CreatesAFile(marker)))
    refused = train_command(settings(planted_dir), planted_dir)
    assert refused.returncode != 0
    assert f"{target}: its size differs from the one the run wrote" in refused.stderr
    assert not marker.exists()
    assert not (planted_dir / "train_summary.json").exists()

    # the checkpoint as the run wrote it: the rerun resumes it and ends where the uninterrupted run did
    resumed_dir = tmp_path / "resumed"
    interrupted_after(tmp_path / "straight", 2, resumed_dir)
    resumed = train_command(settings(resumed_dir), resumed_dir)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    summary = json.loads((resumed_dir / "train_summary.json").read_text())
    assert summary["resumed_from"] == str(resumed_dir / "checkpoint-2")
    assert max_difference(final_weights(tmp_path / "straight"), final_weights(resumed_dir)) <= TOLERANCE


def torchrun_train(values, output: Path) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m llava_star train --config ...`` on gloo."""
    config = output.parent / f"{output.name}.yaml"
    config.write_text(json.dumps(values))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    command += [str(free_port()), "-m", "llava_star", "train", "--config", str(config)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200, check=False)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_write_one_manifest_and_split_its_check(tiny_model, train_json, synthetic_dataset, tmp_path):
    """Under torchrun every rank's files are in the manifest (written once all have saved);
    a rerun checks it across the ranks, resumes, and a planted file stops every rank."""
    pytest.importorskip("deepspeed")
    deepspeed = str(REPO / "scripts" / "zero2.json")

    def settings(output):
        return options(
            tiny_model, train_json, synthetic_dataset.root, output, max_steps=4, save_steps=2, deepspeed=deepspeed
        )

    straight = torchrun_train(settings(tmp_path / "straight"), tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-4000:]
    saved = tmp_path / "straight" / "checkpoint-2"
    listed = set(verify_manifest(saved)["files"])
    for rank in (0, 1):
        assert f"rng_state_{rank}.pth" in listed
        assert f"global_step2/zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" in listed

    planted_dir = tmp_path / "planted"
    interrupted_after(tmp_path / "straight", 2, planted_dir)
    target = planted_dir / "checkpoint-2" / "rng_state_1.pth"
    target.write_bytes(b"X" * target.stat().st_size)  # same size: only a hash tells
    refused = torchrun_train(settings(planted_dir), planted_dir)
    assert refused.returncode != 0
    assert f"{target}: its SHA-256 differs from the one the run wrote" in refused.stderr

    resumed_dir = tmp_path / "resumed"
    interrupted_after(tmp_path / "straight", 2, resumed_dir)
    resumed = torchrun_train(settings(resumed_dir), resumed_dir)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    summary = json.loads((resumed_dir / "train_summary.json").read_text())
    assert summary["resumed_from"] == str(resumed_dir / "checkpoint-2") and summary["world_size"] == 2
    assert max_difference(final_weights(tmp_path / "straight"), final_weights(resumed_dir)) <= TOLERANCE
