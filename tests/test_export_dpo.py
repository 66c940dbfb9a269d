"""export --format dpo: verifier-made preference pairs in TRL's and LLaMA-Factory's forms."""

import json

import pytest
from test_generate import config_for, dataset, single_process  # noqa: F401
from test_num_answers import AlternatingSampler

from llava_star.errors import ConfigError, RecordError
from llava_star.stages.export import main as export_main
from llava_star.stages.generate import run as generate_run

datasets = pytest.importorskip("datasets")


def said(colour):
    """The stand-in's answer naming ``colour``."""
    return f"The square is {colour} in every frame. So it is {colour}."


def expected_pairs(samples_file, max_pairs):
    """What the stand-in sampler's answers must give (tests/test_num_answers.py): blue and green
    samples pair their one passing direct answer with the other; red and yellow ones pair the
    rationalized answer (given twice: one distinct text) with the failed blue, then green, answer."""
    pairs = []
    for line in map(json.loads, samples_file.read_text().splitlines()):
        colour = line["labels"][0]["value"]
        if colour in ("blue", "green"):
            sides = [(colour, "green" if colour == "blue" else "blue", False)]
        else:
            sides = [(colour, "blue", True), (colour, "green", True)][:max_pairs]
        for index, (chosen, rejected, rationalized) in enumerate(sides):
            pairs.append(
                (line["id"], index, line["question"], line["video"], said(chosen), said(rejected), rationalized)
            )
    return sorted(pairs)


@pytest.fixture(scope="module")
def generations(dataset, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("gen")
    generate_run(config_for(dataset, out, num_answers=2, temperature=0.7), answerer=AlternatingSampler())
    return out


@pytest.mark.parametrize("max_pairs", [1, 2])
def test_pairs_load_with_datasets_and_are_the_expected_ones(dataset, generations, tmp_path, max_pairs):  # noqa: F811
    out = tmp_path / "pairs.json"
    export_main([str(generations), "-o", str(out), "--format", "dpo", "--max-pairs", str(max_pairs)])
    trl = datasets.load_dataset("json", data_files=str(out), split="train")
    got = sorted(
        (
            row["id"],
            row["pair"],
            row["prompt"][0]["content"][1]["text"],
            row["video"],
            row["chosen"][0]["content"][0]["text"],
            row["rejected"][0]["content"][0]["text"],
            row["chosen_rationalized"],
        )
        for row in trl
    )
    assert got == expected_pairs(dataset / "samples.jsonl", max_pairs)
    first = trl[0]
    assert [m["role"] for m in first["prompt"]] == ["user"] and first["prompt"][0]["content"][0]["type"] == "video"
    assert [m["role"] for m in first["chosen"]] == ["assistant"] == [m["role"] for m in first["rejected"]]

    # LLaMA-Factory: the same pairs, ShareGPT ranking records, registered with "ranking": true
    ranking_file = tmp_path / "pairs_ranking.json"
    ranking = datasets.load_dataset("json", data_files=str(ranking_file), split="train")
    assert sorted(
        (
            row["id"],
            row["pair"],
            row["conversations"][0]["value"],
            row["chosen"]["value"],
            row["rejected"]["value"],
            row["chosen_rationalized"],
        )
        for row in ranking
    ) == [
        (i, n, f"<video>\n{q}", c, r, rat)
        for i, n, q, _, c, r, rat in expected_pairs(dataset / "samples.jsonl", max_pairs)
    ]
    video_of = {row["id"]: row["video"] for row in trl}
    for row in ranking:
        assert [turn["from"] for turn in row["conversations"]] == ["human"]
        assert row["chosen"]["from"] == "gpt" == row["rejected"]["from"]
        assert (tmp_path / row["videos"][0]).resolve() == (dataset / video_of[row["id"]]).resolve()
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info == {
        "pairs_ranking": {
            "file_name": "pairs_ranking.json",
            "formatting": "sharegpt",
            "ranking": True,
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "videos": "videos"},
            "tags": {
                "role_tag": "from",
                "content_tag": "value",
                "user_tag": "human",
                "assistant_tag": "gpt",
                "system_tag": "system",
            },
        }
    }
    stats = json.loads((tmp_path / "pairs.stats.json").read_text())["pairs"]
    rationalized = 12 * max_pairs  # red and yellow: 6 videos x ... 12 samples
    assert stats["pairs"] == 12 + rationalized and stats["pairs_chosen_rationalized"] == rationalized
    assert stats["by_task"] == {"colour": {"pairs": 12 + rationalized, "chosen_rationalized": rationalized}}
    assert stats["lines"] == 24 and stats["lines_with_pairs"] == 24


def test_direct_only_pairs_only_direct_chosen_answers(generations, tmp_path):
    out = tmp_path / "pairs.json"
    export_main([str(generations), "-o", str(out), "--format", "dpo", "--direct-only"])
    rows = json.loads(out.read_text())
    assert len(rows) == 12 and not any(row["chosen_rationalized"] for row in rows)


def test_no_pairs_and_mixing_are_clear_errors(dataset, tmp_path):  # noqa: F811
    single = tmp_path / "single"
    generate_run(config_for(dataset, single, rationalize=False), answerer=AlternatingSampler())
    with pytest.raises(RecordError, match="no preference pairs: no question in .* has both a passing and a failing"):
        export_main([str(single), "-o", str(tmp_path / "p.json"), "--format", "dpo"])
    with pytest.raises(ConfigError, match="--format dpo takes no --mix"):
        export_main([str(single), "-o", str(tmp_path / "p.json"), "--format", "dpo", "--mix", str(tmp_path / "x.json")])


def test_a_clip_keeps_its_range_for_trl_and_is_cut_for_llama_factory(tmp_path, make_video):
    from frame_numbers import decoded_frame_numbers
    from test_export import generation, write_shards

    from llava_star.media.video import read_frames

    root = tmp_path / "videos"
    root.mkdir()
    make_video("videos/long.mp4", num_frames=36, fps=4.0)
    answers = [
        {"answer": "It is green.", "rationalized": False, "passed": False, "checks": [], "truncated": False},
        {"answer": "It is red and", "rationalized": False, "passed": False, "checks": [], "truncated": True},
        {"answer": "It is red.", "rationalized": True, "passed": True, "checks": [], "truncated": False},
    ]
    line = generation("clip", video="long.mp4", start=2.6, end=6.1, answers=answers, rationalized=True)
    gen = write_shards(tmp_path / "gen", [[line]])
    (gen / "config.json").write_text(json.dumps({"video_root": str(root)}))
    out = tmp_path / "out" / "pairs.json"
    export_main([str(gen), "-o", str(out), "--format", "dpo", "--max-pairs", "4"])
    (trl,) = json.loads(out.read_text())  # the cut-off answer is no negative: one pair
    assert (trl["video"], trl["start"], trl["end"]) == ("long.mp4", 2.6, 6.1)
    assert (trl["chosen"][0]["content"][0]["text"], trl["rejected"][0]["content"][0]["text"]) == (
        "It is red.",
        "It is green.",
    )
    (ranking,) = json.loads(out.with_name("pairs_ranking.json").read_text())
    assert (ranking["original_video"], ranking["original_start"], ranking["original_end"]) == ("long.mp4", 2.6, 6.1)
    clip = out.parent / ranking["videos"][0]
    assert decoded_frame_numbers(read_frames(clip, 15).array) == list(range(10, 25))
