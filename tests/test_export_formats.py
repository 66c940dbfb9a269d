"""Export --format: each target's loader finds the clip a sample is about, under the keys and
placeholders it reads; --mix takes records of every format.

The checks read the records the way each target's own train.py does (Video-LLaVA
``videollava/train/train.py``, LLaVA-NeXT ``llava/train/train.py``, LLaMA-Factory's
``data/README.md`` and its converter): ``os.path.join(video_folder, video)``, the
placeholder that loader counts, and the roles it accepts. Clip files are real mp4s decoded
with PyAV; their frames say which frame of the source they are (``frame_numbers``).
"""

from __future__ import annotations

import json
import logging
import os

import pytest
from frame_numbers import decoded_frame_numbers, numbered_frames
from PIL import Image
from test_export import generation, write_shards

from llava_star.errors import ConfigError, RecordError
from llava_star.media.video import read_frames
from llava_star.stages.export import main
from llava_star.training_formats import detect_format, read_training_json

WHOLE_FILE_FORMATS = ["video-llava", "llava-next", "llama-factory"]
# the placeholder each target's loader counts for a video, and the key that holds it
VIDEO_TOKEN = {"llava_star": "<video>", "video-llava": "<video>", "llava-next": "<image>", "llama-factory": "<video>"}
VIDEO_KEY = {"llava_star": "video", "video-llava": "video", "llava-next": "video", "llama-factory": "videos"}

# long.mp4: 36 frames at 4 fps (9 s); the clip [2.6, 6.1] s is frames 10-24 (clip_bounds)
CLIP_START, CLIP_END, CLIP_FRAMES = 2.6, 6.1, list(range(10, 25))
FOLDER_FRAMES = 12  # frames/dive1: 12 jpgs, read at 12 fps (Video-STaR's FineDiving rate)


@pytest.fixture
def video_root(tmp_path, make_video):
    root = tmp_path / "videos"
    root.mkdir()
    os.replace(make_video("long.mp4", num_frames=36, fps=4.0), root / "long.mp4")
    os.replace(make_video("whole.mp4", num_frames=16, fps=8.0), root / "whole.mp4")
    folder = root / "frames" / "dive1"
    folder.mkdir(parents=True)
    for index, frame in enumerate(numbered_frames(FOLDER_FRAMES, 32)):
        Image.fromarray(frame).save(folder / f"{index:05d}.jpg", quality=95)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    return root


@pytest.fixture
def gen_dir(tmp_path, video_root):
    """Kept answers about a clip, a whole video, a frame folder and a clip of it; a broken and a missing video."""
    gen = write_shards(
        tmp_path / "gen",
        [
            [
                generation("clip", video="long.mp4", start=CLIP_START, end=CLIP_END),
                generation("whole", video="whole.mp4"),
                generation("dive", video="frames/dive1", source="finediving", task="score"),
            ],
            [
                generation("dive_clip", video="frames/dive1", start=0.25, end=0.75, source="finediving"),
                generation("broken", video="broken.mp4", start=1.0, end=2.0),
                generation("missing", video="missing.mp4"),
                generation("failed", video="long.mp4", passed=False),
            ],
        ],
    )
    (gen / "config.json").write_text(json.dumps({"video_root": str(video_root), "model": "tiny"}))
    return gen


def export(gen_dir, out, fmt, *extra):
    main([str(gen_dir), "-o", str(out), "--format", fmt, *extra])
    return json.loads(out.read_text()), json.loads(out.with_name(out.stem + ".stats.json").read_text())


def human_text(record):
    turns = record["conversations"]
    return "".join(turn["value"] for turn in turns[0::2])


def target_video_files(record, fmt, folder):
    """The files the target's loader opens for ``record`` (its own path joining)."""
    if fmt == "llama-factory":
        return [os.path.join(folder, path) for path in record.get("videos", [])]
    video = record.get("video")
    if video is None:
        return []
    if fmt == "llava-next":
        assert isinstance(video, str), "LLaVA-NeXT joins one path string"
        return [os.path.join(folder, video)]
    return [os.path.join(folder, path) for path in ([video] if isinstance(video, str) else video)]


def check_target_record(record, fmt):
    """Keys, roles and placeholder counts as the target's loader reads them."""
    turns = record["conversations"]
    assert [turn["from"] for turn in turns] == ["human", "gpt"] * (len(turns) // 2)
    text = human_text(record)
    if fmt == "llama-factory":
        assert isinstance(record.get("videos", []), list) and isinstance(record.get("images", []), list)
        assert "video" not in record and "image" not in record
        assert text.count("<video>") == len(record.get("videos", []))
        assert text.count("<image>") == len(record.get("images", []))
    elif fmt == "llava-next" and "video" in record:
        assert "image" not in record, "LLaVA-NeXT would read it as an image record"
        assert text.count("<image>") == 1 and "<video>" not in text
    else:
        videos = [record["video"]] if isinstance(record.get("video"), str) else record.get("video", [])
        images = [record["image"]] if isinstance(record.get("image"), str) else record.get("image", [])
        assert text.count("<video>") == len(videos) and text.count("<image>") == len(images)
    assert all("<video>" not in t["value"] and "<image>" not in t["value"] for t in turns[1::2])
    if fmt != "llava_star":
        assert "start" not in record and "end" not in record, "a whole-file target would ignore them"


@pytest.mark.parametrize("fmt", WHOLE_FILE_FORMATS)
def test_each_format_is_what_its_target_loader_reads(gen_dir, video_root, tmp_path, fmt):
    out = tmp_path / "out" / "train.json"
    records, stats = export(gen_dir, out, fmt)
    by_id = {record["id"]: record for record in records}
    assert list(by_id) == ["clip", "whole", "dive", "dive_clip"]
    folder = out.parent if fmt == "llama-factory" else video_root  # dataset_dir / --video_folder
    assert stats["video_folder"] == str(folder)
    for record in records:
        check_target_record(record, fmt)
        (file,) = target_video_files(record, fmt, folder)
        assert os.path.isfile(file), file
    assert os.path.samefile(target_video_files(by_id["whole"], fmt, folder)[0], video_root / "whole.mp4")
    media = out.parent / "train_media"
    for sample_id in ("clip", "dive", "dive_clip"):
        file = target_video_files(by_id[sample_id], fmt, folder)[0]
        assert os.path.realpath(file).startswith(str(media.resolve()))
    assert by_id["clip"]["original_video"] == "long.mp4"
    assert (by_id["clip"]["original_start"], by_id["clip"]["original_end"]) == (CLIP_START, CLIP_END)
    assert by_id["dive"]["source"] == "finediving" and by_id["whole"]["rationalized"] is False
    assert stats["media"] == {"cut": 3, "reused": 0, "as_is": 1}


def test_llava_next_video_records_carry_image_placeholder(gen_dir, tmp_path):
    records, _ = export(gen_dir, tmp_path / "train.json", "llava-next")
    assert records[0]["conversations"][0]["value"] == "<image>\nWhat colour is the object in video clip?"
    assert isinstance(records[0]["video"], str)


def test_llama_factory_writes_sharegpt_with_its_dataset_info_entry(gen_dir, tmp_path):
    out = tmp_path / "lf" / "video_star.json"
    (out.parent).mkdir()
    (out.parent / "dataset_info.json").write_text(json.dumps({"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}}))
    records, _ = export(gen_dir, out, "llama-factory")
    assert records[1]["conversations"][0] == {
        "from": "human",
        "value": "<video>\nWhat colour is the object in video whole?",
    }
    assert records[1]["videos"] == [os.path.relpath(gen_dir.parent / "videos" / "whole.mp4", out.parent)]
    info = json.loads((out.parent / "dataset_info.json").read_text())
    assert info["alpaca_en_demo"] == {"file_name": "alpaca_en_demo.json"}  # the user's entries stay
    assert info["video_star"] == {
        "file_name": "video_star.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "videos": "videos"},
        "tags": {
            "role_tag": "from",
            "content_tag": "value",
            "user_tag": "human",
            "assistant_tag": "gpt",
            "system_tag": "system",
        },
    }
    # one JSON type per key across records: LLaMA-Factory loads the file as an Arrow table
    types = {}
    for record in records:
        for key, value in record.items():
            types.setdefault(key, set()).add(type(value).__name__)
    assert all(len(names) == 1 for names in types.values()), types


def test_llava_star_format_is_unchanged(gen_dir, tmp_path):
    out = tmp_path / "train.json"
    records, stats = export(gen_dir, out, "llava_star")
    assert [r["id"] for r in records] == ["clip", "whole", "dive", "dive_clip", "broken", "missing"]
    assert records[0]["video"] == "long.mp4" and (records[0]["start"], records[0]["end"]) == (CLIP_START, CLIP_END)
    assert records[2]["video"] == "frames/dive1"  # this project's trainer reads frame folders
    assert not (tmp_path / "train_media").exists() and stats["media"] == {"cut": 0, "reused": 0, "as_is": 0}
    assert read_training_json(str(out))[0] == records


def test_clip_files_hold_the_clip_range_not_the_whole_video(gen_dir, tmp_path):
    import av

    out = tmp_path / "train.json"
    records, _ = export(gen_dir, out, "video-llava")
    by_id = {record["id"]: record for record in records}
    expected = {
        "clip": (CLIP_FRAMES, 4.0),
        "dive": (list(range(FOLDER_FRAMES)), 12.0),
        "dive_clip": (list(range(3, 9)), 12.0),  # [0.25, 0.75] s at 12 fps
    }
    for sample_id, (numbers, fps) in expected.items():
        path = gen_dir.parent / "videos" / by_id[sample_id]["video"]
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            decoded = list(container.decode(stream))
            assert float(stream.average_rate) == fps
        assert len(decoded) == len(numbers)
        assert decoded[-1].time - decoded[0].time == pytest.approx((len(numbers) - 1) / fps)
        frames = read_frames(path, len(numbers), backend="pyav")
        assert frames.duration == pytest.approx(len(numbers) / fps)
        assert decoded_frame_numbers(frames.array) == numbers


def test_rerun_reuses_the_cut_clips(gen_dir, tmp_path):
    out = tmp_path / "train.json"
    first, _ = export(gen_dir, out, "llava-next")
    media = sorted((tmp_path / "train_media").rglob("*.mp4"))
    assert len(media) == 3
    before = {path: path.stat().st_mtime_ns for path in media}
    again, stats = export(gen_dir, out, "llava-next")
    assert again == first
    assert stats["media"] == {"cut": 0, "reused": 3, "as_is": 1}
    assert {path: path.stat().st_mtime_ns for path in media} == before
    assert not [p for p in (tmp_path / "train_media").rglob("*") if p.name.startswith(".")]  # no temp files


def test_broken_and_missing_videos_are_counted_and_named(gen_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="llava_star.stages.export"):
        records, stats = export(gen_dir, tmp_path / "train.json", "video-llava")
    assert "broken" not in {r["id"] for r in records} and "missing" not in {r["id"] for r in records}
    skipped = {entry["id"]: entry for entry in stats["media_skipped"]}
    assert set(skipped) == {"broken", "missing"}
    assert "broken.mp4: cannot decode" in skipped["broken"]["reason"]
    assert "missing.mp4: video not found" in skipped["missing"]["reason"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "left out 2 record(s)" in warning and "broken.mp4" in warning and "missing.mp4" in warning


def test_video_folder_sets_what_paths_are_relative_to(gen_dir, tmp_path):
    out = tmp_path / "train.json"
    folder = tmp_path
    records, stats = export(gen_dir, out, "video-llava", "--video-folder", str(folder))
    assert stats["video_folder"] == str(folder)
    assert records[1]["video"] == "videos/whole.mp4"
    assert records[0]["video"] == "train_media/long.mp4_clip2.6-6.1.mp4"
    for record in records:
        assert os.path.isfile(os.path.join(folder, record["video"]))


def test_video_root_comes_from_the_flag_when_the_generations_record_none(gen_dir, video_root, tmp_path):
    (gen_dir / "config.json").unlink()
    with pytest.raises(ConfigError, match="--video-root"):
        main([str(gen_dir), "-o", str(tmp_path / "t.json"), "--format", "video-llava"])
    main([str(gen_dir), "-o", str(tmp_path / "t.json"), "--format", "video-llava", "--video-root", str(video_root)])
    assert len(json.loads((tmp_path / "t.json").read_text())) == 4


# --------------------------------------------------------------------------- --mix of every format

MIX_FILES = {
    "video-llava": [
        {
            "id": "v_1",
            "video": "vi100k/v_1.mp4",
            "conversations": [
                {"from": "human", "value": "<video>\nDescribe the video."},
                {"from": "gpt", "value": "A dog runs."},
            ],
        },
        {
            "id": "coco1",
            "image": "coco/1.jpg",
            "conversations": [{"from": "human", "value": "What is this?\n<image>"}, {"from": "gpt", "value": "A cat."}],
        },
        {"id": "text1", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
    ],
    "llava-next": [
        {
            "id": "lv_1",
            "video": "llava_video/v_1.mp4",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat happens?"},
                {"from": "gpt", "value": "A dog runs."},
                {"from": "human", "value": "Is it day?"},
                {"from": "gpt", "value": "Yes."},
            ],
        },
        {
            "id": "coco2",
            "image": "coco/2.jpg",
            "conversations": [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A dog."}],
        },
    ],
    "llama-factory": [
        {
            "messages": [
                {"role": "user", "content": "<video>Why is this video funny?"},
                {"role": "assistant", "content": "Because a baby is reading."},
            ],
            "videos": ["mllm_demo_data/1.mp4"],
        },
        {
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": "<image>Who?"},
                {"from": "gpt", "value": "A man."},
            ],
            "images": ["mllm_demo_data/1.jpg"],
        },
    ],
}


@pytest.fixture
def mix_files(tmp_path):
    paths = {}
    for fmt, records in MIX_FILES.items():
        paths[fmt] = tmp_path / f"mix_{fmt}.json"
        paths[fmt].write_text(json.dumps(records))
    return paths


@pytest.mark.parametrize("fmt", list(MIX_FILES))
def test_formats_are_detected(mix_files, fmt):
    assert detect_format(json.loads(mix_files[fmt].read_text()), str(mix_files[fmt])) == fmt
    assert read_training_json(str(mix_files[fmt]))[1] == fmt


@pytest.mark.parametrize("target", ["llava_star", *WHOLE_FILE_FORMATS])
def test_mix_takes_records_of_every_format(gen_dir, mix_files, tmp_path, target):
    out = tmp_path / "train.json"
    records, stats = export(gen_dir, out, target, "--mix", *map(str, mix_files.values()))
    mixed = records[-7:]
    assert len(records) == (6 if target == "llava_star" else 4) + 7
    for record in mixed:
        check_target_record(record, target)
    assert stats["mixed_formats"] == {str(path): fmt for fmt, path in mix_files.items()}
    video_key, token = VIDEO_KEY[target], VIDEO_TOKEN[target]
    multi_turn = mixed[3]
    assert multi_turn[video_key] == (["llava_video/v_1.mp4"] if target == "llama-factory" else "llava_video/v_1.mp4")
    assert multi_turn["conversations"][0]["value"] == f"{token}\nWhat happens?"
    assert multi_turn["conversations"][2:] == [
        {"from": "human", "value": "Is it day?"},
        {"from": "gpt", "value": "Yes."},
    ]
    funny = mixed[5]
    assert funny["conversations"] == [
        {"from": "human", "value": f"{token}Why is this video funny?"},
        {"from": "gpt", "value": "Because a baby is reading."},
    ]
    assert mixed[6]["system"] == "Be brief."
    if target == "llava_star":  # LLaVA data mixed into LLaVA data is appended verbatim
        assert mixed[:3] == MIX_FILES["video-llava"]
    if target == "llama-factory":
        columns = json.loads((tmp_path / "dataset_info.json").read_text())["train"]["columns"]
        assert columns == {"messages": "conversations", "system": "system", "videos": "videos", "images": "images"}


@pytest.mark.parametrize(
    "target, record, message",
    [
        (
            "llava_star",
            {
                "id": "x",
                "video": "a.mp4",
                "conversations": [{"from": "human", "value": "<image>\n<image>\nQ"}, {"from": "gpt", "value": "A"}],
            },
            r"one <image> in its human turns .* found 2 <image> \(read as llava-next\)",
        ),
        (
            "llava_star",
            {
                "id": "x",
                "video": ["a.mp4"],
                "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}],
            },
            "video: LLaVA-NeXT reads one video path",
        ),
        (
            "llava_star",
            {
                "id": "x",
                "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
                "videos": ["a.mp4"],
            },
            r"0 <video> placeholder\(s\) in the human turns but 1 path\(s\) under 'videos'",
        ),
        (
            "llava_star",
            {
                "id": "x",
                "messages": [{"role": "user", "content": "<video>Q"}, {"role": "gpt", "content": "A"}],
                "videos": ["a.mp4"],
            },
            r"messages\[1\].role: expected 'assistant'",
        ),
        (
            "video-llava",
            {
                "id": "x",
                "video": "a.mp4",
                "start": 1.0,
                "end": 2.0,
                "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": "A"}],
            },
            "start/end: Video-LLaVA ignores clip ranges",
        ),
        (
            "llava-next",
            {
                "id": "x",
                "video": ["a.mp4", "b.mp4"],
                "conversations": [{"from": "human", "value": "<video><video>\nQ"}, {"from": "gpt", "value": "A"}],
            },
            "video: LLaVA-NeXT / LLaVA-Video / OneVision trains on one video per record, this one has 2",
        ),
        (
            "llava-next",
            {
                "id": "x",
                "video": "a.mp4",
                "image": "b.jpg",
                "conversations": [{"from": "human", "value": "<video><image>\nQ"}, {"from": "gpt", "value": "A"}],
            },
            "image: LLaVA-NeXT .* ignores its video",
        ),
    ],
)
def test_bad_mix_records_name_file_index_and_key(gen_dir, tmp_path, target, record, message):
    mix = tmp_path / "bad.json"
    ok = {"id": "ok", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    mix.write_text(json.dumps([ok, record]))
    with pytest.raises(RecordError, match=message) as error:
        main([str(gen_dir), "-o", str(tmp_path / "train.json"), "--format", target, "--mix", str(mix)])
    assert "bad.json[1] (id 'x')" in str(error.value)
    assert not (tmp_path / "train.json").exists()


def test_a_file_mixing_formats_names_two_records_that_disagree(gen_dir, tmp_path):
    mix = tmp_path / "both.json"
    mix.write_text(json.dumps([MIX_FILES["video-llava"][0], MIX_FILES["llava-next"][0]]))
    with pytest.raises(
        RecordError, match=r"both.json\[1\] \(id 'lv_1'\): written for llava-next, but .*both.json\[0\]"
    ):
        main([str(gen_dir), "-o", str(tmp_path / "train.json"), "--mix", str(mix)])
    # a declared format reads the file as that format: here the llava-next record is refused
    with pytest.raises(RecordError, match=r"both.json\[1\] .*0 <video> placeholder"):
        main([str(gen_dir), "-o", str(tmp_path / "train.json"), "--mix", str(mix), "--mix-format", "video-llava"])


def test_llama_factory_output_loads_as_the_arrow_table_it_reads(gen_dir, mix_files, tmp_path):
    """LLaMA-Factory reads a local file with ``datasets.load_dataset("json", ...)``: every record must fit one schema."""
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "lf" / "train.json"
    records, _ = export(gen_dir, out, "llama-factory", "--mix", *map(str, mix_files.values()))
    table = datasets.load_dataset("json", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf_cache"))
    assert table.num_rows == len(records) == 11
    assert {"conversations", "videos", "images", "system"} <= set(table.column_names)
    assert table[0]["videos"] == records[0]["videos"] and table[0]["images"] is None


# --------------------------------------------------------------------------- clip files alone


@pytest.mark.parametrize(
    "start, end, numbers",
    [
        (CLIP_START, CLIP_END, CLIP_FRAMES),
        (None, 1.0, [0, 1, 2, 3]),  # from the start
        (7.9, None, [31, 32, 33, 34, 35]),  # to the end
        (8.0, 20.0, [32, 33, 34, 35]),  # an end past the video is clamped, as read_frames does
        (0.3, 0.31, [1]),  # shorter than a frame: still one frame
    ],
)
def test_write_clip_cuts_exactly_the_frames_read_frames_samples_from(make_video, tmp_path, start, end, numbers):
    from llava_star.media.clips import write_clip

    source = make_video("long.mp4", num_frames=36, fps=4.0)
    clip = write_clip(source, tmp_path / "clip.mp4", start=start, end=end)
    assert clip.cut and clip.frames == len(numbers)
    frames = read_frames(clip.path, len(numbers), backend="pyav")
    assert (frames.total_num_frames, frames.fps) == (len(numbers), 4.0)
    assert decoded_frame_numbers(frames.array) == numbers
    whole = read_frames(source, len(numbers), start=start, end=end, backend="pyav")
    assert whole.clip_num_frames == len(numbers)  # the project's own decoder samples from the same frames


def test_write_clip_refuses_a_clip_after_the_end_and_leaves_nothing(make_video, tmp_path):
    from llava_star.errors import VideoError
    from llava_star.media.clips import write_clip

    source = make_video("long.mp4", num_frames=36, fps=4.0)
    with pytest.raises(VideoError, match=r"long.mp4: clip start 12s is after the end of the video \(9s\)"):
        write_clip(source, tmp_path / "out" / "clip.mp4", start=12.0, end=14.0)
    assert list((tmp_path / "out").iterdir()) == []


def test_frame_folders_of_odd_size_and_mixed_sizes(tmp_path):
    from llava_star.errors import VideoError
    from llava_star.media.clips import write_clip

    folder = tmp_path / "dive"
    folder.mkdir()
    for index, frame in enumerate(numbered_frames(6, 36)):
        Image.fromarray(frame[:35, :33]).save(folder / f"{index}.png")
    clip = write_clip(folder, tmp_path / "dive.mp4", start=None, end=None)
    frames = read_frames(clip.path, 6, backend="pyav")
    assert frames.array.shape == (6, 34, 32, 3)  # yuv420p needs even sides
    assert decoded_frame_numbers(frames.array) == list(range(6))
    Image.fromarray(numbered_frames(1, 40)[0]).save(folder / "6.png")
    with pytest.raises(VideoError, match=r"dive: frames differ in size \(6.png"):
        write_clip(folder, tmp_path / "dive2.mp4", start=None, end=None)
    assert not (tmp_path / "dive2.mp4").exists() and not list(tmp_path.glob(".dive2.mp4.*"))


def test_jobs_cut_in_processes_to_the_same_result(gen_dir, tmp_path):
    serial, serial_stats = export(gen_dir, tmp_path / "a" / "train.json", "llava-next", "--video-folder", str(tmp_path))
    parallel, parallel_stats = export(
        gen_dir, tmp_path / "b" / "train.json", "llava-next", "--video-folder", str(tmp_path), "--jobs", "2"
    )
    assert [r["video"].replace("b/", "a/", 1) for r in parallel] == [r["video"] for r in serial]
    assert parallel_stats["media"] == serial_stats["media"] == {"cut": 3, "reused": 0, "as_is": 1}
    assert [f["id"] for f in parallel_stats["media_skipped"]] == [f["id"] for f in serial_stats["media_skipped"]]
    for record in parallel:
        path = tmp_path / record["video"]
        if "original_video" in record:
            assert read_frames(path, 2, backend="pyav").total_num_frames > 0


def test_two_samples_about_the_same_clip_share_one_file(video_root, tmp_path, caplog):
    gen = write_shards(
        tmp_path / "gen2",
        [
            [
                generation("q1", video="long.mp4", start=1.0, end=3.0),
                generation("q2", video="long.mp4", start=1.0, end=3.0),
            ]
        ],
    )
    with caplog.at_level(logging.INFO, logger="llava_star.stages.export"):
        records, stats = export(gen, tmp_path / "train.json", "video-llava", "--video-root", str(video_root))
    assert records[0]["video"] == records[1]["video"]
    assert stats["media"] == {"cut": 1, "reused": 1, "as_is": 0}
    # a first run: the shared clip was not "reused from an earlier run" (what the log said before)
    [line] = [r.getMessage() for r in caplog.records if "clip(s) cut" in r.getMessage()]
    assert "1 clip(s) cut, 1 reused (an earlier run's, or shared by samples about one clip)" in line


@pytest.mark.parametrize("fmt", ["llava_star", *WHOLE_FILE_FORMATS])
def test_train_reads_its_own_export_with_the_default_media_folder(gen_dir, video_root, tmp_path, fmt):
    """``llava-star train --data OUT --video-root FOLDER`` finds every record's frames: before,
    a clip of a video-llava / llava-next export (``../out/train_media/...``) was skipped as
    leaving the video root, and a run of such records trained on nothing."""
    from llava_star.training.data_lists import load_records
    from llava_star.training.record_media import record_video_path

    out = tmp_path / "out" / "train.json"
    _, stats = export(gen_dir, out, fmt)
    folder = stats["video_folder"] if fmt != "llava_star" else str(video_root)
    by_id = {record["id"]: record for record in load_records([str(out)])}
    frames = {}
    for sample_id in ("clip", "whole", "dive", "dive_clip"):  # llava_star keeps the broken ones too
        record = by_id[sample_id]
        path = record_video_path(folder, record)
        clip = read_frames(path, 64, start=record.get("start"), end=record.get("end"))
        frames[sample_id] = decoded_frame_numbers(clip.array)
    assert sorted(set(frames["clip"])) == CLIP_FRAMES
    assert sorted(set(frames["dive"])) == list(range(FOLDER_FRAMES))
    assert sorted(set(frames["dive_clip"])) == [3, 4, 5, 6, 7, 8]
    assert sorted(set(frames["whole"])) == list(range(16))


def test_a_record_without_export_metadata_still_may_not_leave_the_root(video_root):
    from llava_star.errors import VideoError
    from llava_star.training.record_media import record_video_path

    with pytest.raises(VideoError, match="would leave the video root"):
        record_video_path(str(video_root), {"id": "x", "video": "../secret.mp4"})
