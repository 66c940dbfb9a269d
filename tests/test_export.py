"""Export: generation shards -> LLaVA conversation JSON (passed only, deduplicated, mixed)."""

import json
import logging

import pytest

from llava_star import cli
from llava_star.errors import RecordError
from llava_star.llava_json import validate_record
from llava_star.records import Generation, JsonlAppender
from llava_star.stages.export import main
from llava_star.training_formats import read_training_json


def generation(sample_id, *, passed=True, rationalized=False, source="synthetic", task="colour", labels=None, **extra):
    data = {
        "id": sample_id,
        "video": f"videos/{sample_id}.mp4",
        "question": f"What colour is the object in video {sample_id}?",
        "labels": labels or [{"type": "class", "value": "red"}],
        "source": source,
        "task": task,
        "answer": "  The object is red. It stays red throughout.  ",
        "rationalized": rationalized,
        "passed": passed,
        "checks": [{"type": "class", "passed": passed, "reason": ""}],
        "cycle": 1,
        "model": "tiny",
        **extra,
    }
    return Generation.from_dict(data)


def write_shards(gen_dir, shards):
    """Write generation shards named as the generate stage names them."""
    for rank, generations in enumerate(shards):
        with JsonlAppender(gen_dir / f"generations.rank{rank:05d}-of-{len(shards):05d}.jsonl") as out:
            out.write_many(generations)
    return gen_dir


@pytest.fixture
def gen_dir(tmp_path):
    return write_shards(
        tmp_path / "gen",
        [
            [generation("a"), generation("b", passed=False), generation("c", rationalized=True)],
            [
                generation("d", start=2.0, end=5.5),
                generation(
                    "e",
                    source="finediving",
                    task="score",
                    labels=[{"type": "number", "value": 71.4, "name": "score"}, {"type": "class", "value": "forward"}],
                ),
            ],
        ],
    )


def test_export_merges_shards_and_keeps_passed(gen_dir, tmp_path):
    out = tmp_path / "train.json"
    assert main([str(gen_dir), "-o", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [r["id"] for r in records] == ["a", "c", "d", "e"]
    first = records[0]
    assert first["video"] == "videos/a.mp4"
    assert first["conversations"] == [
        {"from": "human", "value": "<video>\nWhat colour is the object in video a?"},
        {"from": "gpt", "value": "The object is red. It stays red throughout."},
    ]
    assert first["source"] == "synthetic" and first["task"] == "colour"
    assert first["label_types"] == ["class"] and first["rationalized"] is False and first["cycle"] == 1
    assert records[1]["rationalized"] is True
    assert (records[2]["start"], records[2]["end"]) == (2.0, 5.5)
    assert records[3]["label_types"] == ["class", "number"]
    assert read_training_json(str(out))[0] == records  # the training reader accepts what export writes
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_rationalized_sample_trains_on_the_question_not_the_hint(tmp_path):
    gen = write_shards(tmp_path / "gen", [[generation("r", rationalized=True)]])
    out = tmp_path / "train.json"
    main([str(gen), "-o", str(out)])
    (record,) = json.loads(out.read_text())
    human = record["conversations"][0]["value"]
    assert human == "<video>\nWhat colour is the object in video r?"
    assert "Answer:" not in human


def test_direct_only_drops_rationalized(gen_dir, tmp_path):
    out = tmp_path / "train.json"
    main([str(gen_dir), "-o", str(out), "--direct-only"])
    assert [r["id"] for r in json.loads(out.read_text())] == ["a", "d", "e"]
    stats = json.loads((tmp_path / "train.stats.json").read_text())
    assert stats["rationalized_dropped"] == 1


def test_ids_are_deduplicated_first_directory_wins(gen_dir, tmp_path):
    other = write_shards(tmp_path / "gen2", [[generation("a", rationalized=True), generation("z")]])
    out = tmp_path / "train.json"
    main([str(gen_dir), str(other), "-o", str(out)])
    records = json.loads(out.read_text())
    assert [r["id"] for r in records] == ["a", "c", "d", "e", "z"]
    assert records[0]["rationalized"] is False
    assert json.loads((tmp_path / "train.stats.json").read_text())["duplicate_ids_dropped"] == 1


def test_stats_line_per_source_and_label_type(gen_dir, tmp_path, caplog):
    out = tmp_path / "train.json"
    with caplog.at_level(logging.INFO, logger="llava_star.stages.export"):
        main([str(gen_dir), "-o", str(out)])
    lines = [r.getMessage() for r in caplog.records if "label_type=" in r.getMessage()]
    assert "export: source=synthetic label_type=class generated=4 passed=3 exported=3 (rationalized 1)" in lines
    assert "export: source=finediving label_type=number generated=1 passed=1 exported=1 (rationalized 0)" in lines
    assert len(lines) == 3
    rows = json.loads((tmp_path / "train.stats.json").read_text())["by_source_and_label_type"]
    assert {(r["source"], r["label_type"]) for r in rows} == {
        ("synthetic", "class"),
        ("finediving", "class"),
        ("finediving", "number"),
    }


def test_mix_appends_existing_llava_data_verbatim(gen_dir, tmp_path):
    mixed = [
        {
            "id": "v_1",
            "video": "v_1.mp4",
            "conversations": [
                {"from": "human", "value": "<video>\nDescribe the video."},
                {"from": "gpt", "value": "A dog runs."},
                {"from": "human", "value": "Is it day?"},
                {"from": "gpt", "value": "Yes."},
            ],
        },
        {
            "id": "coco1",
            "image": "coco/1.jpg",
            "conversations": [{"from": "human", "value": "What is this?\n<image>"}, {"from": "gpt", "value": "A cat."}],
        },
        {"id": "text1", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
    ]
    mix_a, mix_b = tmp_path / "videoinstruct.json", tmp_path / "llava665k.json"
    mix_a.write_text(json.dumps(mixed[:1]))
    mix_b.write_text(json.dumps(mixed[1:]))
    out = tmp_path / "train.json"
    main([str(gen_dir), "-o", str(out), "--mix", str(mix_a), "--mix", str(mix_b)])
    records = json.loads(out.read_text())
    assert records[-3:] == mixed
    assert len(records) == 7


@pytest.mark.parametrize(
    "record, message",
    [
        ({"id": "x", "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]}, r"\[0\].from"),
        ({"id": "x", "conversations": [{"from": "human", "value": "q"}]}, "conversations"),
        (
            {
                "id": "x",
                "video": "v.mp4",
                "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
            },
            "0 <video> placeholder",
        ),
        (
            {"id": "x", "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]},
            "1 <image> placeholder",
        ),
        ({"id": "x", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": 3}]}, r"\[1\].value"),
        (
            {
                "id": "x",
                "conversations": [
                    {"from": "human", "value": "q"},
                    {"from": "gpt", "value": "a"},
                    {"from": "human", "value": "more?"},
                ],
            },
            "last turn",
        ),
        (
            {
                "id": "x",
                "video": ["a.mp4", 3],
                "conversations": [{"from": "human", "value": "<video><video>"}, {"from": "gpt", "value": "a"}],
            },
            "video: expected",
        ),
    ],
)
def test_bad_mix_records_name_file_index_and_key(gen_dir, tmp_path, record, message):
    mix = tmp_path / "bad.json"
    mix.write_text(
        json.dumps(
            [{"id": "ok", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, record]
        )
    )
    with pytest.raises(RecordError, match=message) as error:
        main([str(gen_dir), "-o", str(tmp_path / "train.json"), "--mix", str(mix)])
    assert "bad.json[1] (id 'x')" in str(error.value)
    assert not (tmp_path / "train.json").exists()


def test_mix_must_be_a_json_list(gen_dir, tmp_path):
    mix = tmp_path / "bad.json"
    mix.write_text(json.dumps({"conversations": []}))
    with pytest.raises(RecordError, match="expected a JSON list"):
        main([str(gen_dir), "-o", str(tmp_path / "train.json"), "--mix", str(mix)])


def test_errors_for_empty_inputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RecordError, match=r"no generation shards"):
        main([str(empty), "-o", str(tmp_path / "t.json")])
    failed = write_shards(tmp_path / "failed", [[generation("a", passed=False), generation("b", rationalized=True)]])
    with pytest.raises(RecordError, match=r"none of the generations .* passed as a direct answer"):
        main([str(failed), "-o", str(tmp_path / "t.json"), "--direct-only"])


def test_bad_shard_line_is_reported_through_the_cli(tmp_path, capsys):
    gen = write_shards(tmp_path / "gen", [[generation("a")]])
    with (gen / "generations.rank00000-of-00001.jsonl").open("a") as handle:
        handle.write('{"id": "broken", "answer": "x"}\n')
    assert cli.main(["export", str(gen), "-o", str(tmp_path / "t.json")]) == 2
    assert "generations.rank00000-of-00001.jsonl:2: id 'broken'" in capsys.readouterr().err


def test_validate_record_accepts_multi_image_lists():
    validate_record(
        {
            "image": ["a.jpg", "b.jpg"],
            "conversations": [
                {"from": "human", "value": "<image>\n<image>\nCompare."},
                {"from": "gpt", "value": "Same."},
            ],
        }
    )
