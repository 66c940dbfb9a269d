"""Two exports into one folder (issue 27): both dataset_info.json entries survive, and the
unfinished clips a killed export left are cleaned on the rerun."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from test_export_formats import export, gen_dir, video_root  # noqa: F401  (fixtures)

from llava_star.media.clips import remove_stale_parts
from llava_star.stages import export as export_stage


def test_two_exports_into_one_folder_keep_both_dataset_info_entries(tmp_path, monkeypatch):
    entry = export_stage.dataset_info_entry

    def slow_entry(file_name, records):
        time.sleep(0.3)  # widen the read-modify-write window the lock must close
        return entry(file_name, records)

    monkeypatch.setattr(export_stage, "dataset_info_entry", slow_entry)
    folder = tmp_path / "lf"
    folder.mkdir()
    (folder / "dataset_info.json").write_text(json.dumps({"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}}))
    writers = [
        threading.Thread(target=export_stage.write_dataset_info, args=(folder / f"{name}.json", []))
        for name in ("first", "second", "third")
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    info = json.loads((folder / "dataset_info.json").read_text())
    assert sorted(info) == ["alpaca_en_demo", "first", "second", "third"]


def test_a_killed_exports_part_files_are_removed_on_the_rerun(gen_dir, tmp_path):  # noqa: F811
    out = tmp_path / "lf" / "video_star.json"
    export(gen_dir, out, "llama-factory")
    clips = sorted((tmp_path / "lf").rglob("*.mp4"))
    assert clips
    stale = clips[0].with_name(f".{clips[0].name}.{2**22 + 7}.part")  # above pid_max: no such process
    stale.write_bytes(b"half a clip")
    live = clips[0].with_name(f".other.mp4.{os.getpid()}.part")  # a live export's: kept
    live.write_bytes(b"being written")
    export(gen_dir, out, "llama-factory")
    assert not stale.exists() and live.exists()


@pytest.mark.parametrize("name", [".x.mp4.part", ".x.mp4.abc.part"])
def test_part_files_without_a_pid_are_left_alone(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    assert remove_stale_parts([tmp_path]) == 0 and (tmp_path / name).exists()
