"""Issue 32: the stages stream their records and give the outputs of the in-memory way, byte for byte.

Each test computes the expected output the simple way (every record in a list, a Python
set of id strings, ``json.dumps`` of the whole list, ``statistics`` over every length) or
reads a golden file written by the code before streaming, and compares.
"""

import json
import random
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from test_export import write_shards

from llava_star import idset
from llava_star.distributed import ProcessContext
from llava_star.errors import AnnotationError, RecordError
from llava_star.generation.shards import finished_ids, may_hold_share
from llava_star.idset import IdHashes
from llava_star.io import JsonArrayWriter, dumps_line, write_jsonl_atomic, written_ids
from llava_star.label_types import label_type_names
from llava_star.records import Generation, JsonlAppender, check_unique_ids, grounding_counts, kept_counts
from llava_star.runs import GenerationDir
from llava_star.stages import report
from llava_star.stages.export import main as export_main
from llava_star.stages.export import to_llava_record
from llava_star.tally import SetTally, failure_reason

GOLDEN = Path(__file__).parent / "data" / "streaming"
TASKS = ("colour", "count", "score")
CLASSES = ("red", "green", "blue")


def random_generation(rng: random.Random, number: int) -> Generation:
    """A generation with a random verdict, grounding, task, label types and answer length."""
    passed = rng.random() < 0.6
    labels = [{"type": "class", "value": rng.choice(CLASSES), "name": "colour"}]
    if rng.random() < 0.3:
        labels.append({"type": "number", "value": rng.randint(1, 9), "name": "count", "tolerance": 0.5})
    reason = rng.choice(["wrong class", "hedged between classes", "number outside tolerance", ""])
    data = {
        "id": f"s{number:04d}é",
        "video": f"videos/v{number % 7}.mp4",
        "question": f"What colour is object {number}? «{number}»",
        "labels": labels,
        "source": rng.choice(["synthetic", "kinetics700"]),
        "task": rng.choice(TASKS),
        "answer": " ".join(["word"] * rng.randint(1, 30)),
        "rationalized": rng.random() < 0.3,
        "passed": passed,
        "checks": [{"type": "class", "passed": passed, "reason": "" if passed else reason}],
        "cycle": 1,
        "model": "tiny",
        "grounded": rng.choice([None, True, False]) if passed else None,
    }
    if rng.random() < 0.2:
        data.update(start=1.0, end=3.5)
    return Generation.from_dict(data)


@pytest.fixture
def run_shards(tmp_path):
    """Two shards of 400 generations with ids repeated within and across them (a rerun's repeats)."""
    rng = random.Random(7)
    generations = [random_generation(rng, rng.randrange(500)) for _ in range(800)]
    return write_shards(tmp_path / "gen", [generations[:400], generations[400:]]), generations


# ---------------------------------------------------------------- ids as hashes


def test_id_hashes_answer_as_a_set_of_the_ids(monkeypatch):
    monkeypatch.setattr(idset, "_RECENT", 16)  # many sealed and merged blocks
    rng = random.Random(3)
    hashes, reference = IdHashes(), set()
    for _ in range(3000):
        sample_id = f"id{rng.randrange(2000)}"
        assert hashes.add_new(sample_id) == (sample_id not in reference)
        reference.add(sample_id)
    assert len(hashes) == len(reference)
    assert [f"id{n}" in hashes for n in range(2500)] == [f"id{n}" in reference for n in range(2500)]
    assert hashes.nbytes <= 8 * len(reference)


def test_a_repeated_id_is_named_with_both_lines_even_when_every_id_shares_a_hash(tmp_path, monkeypatch):
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps({"id": f"x{n}", "video": "v.mp4"}) + "\n" for n in (1, 2, 3, 2)))
    monkeypatch.setattr(idset, "id_hash", lambda sample_id: 7)  # every id collides: hits are confirmed
    check_unique_ids(path, limit=3)  # distinct ids: a shared hash is not a repeat
    with pytest.raises(RecordError, match=r"samples.jsonl:4: id 'x2' is already the id of line 2"):
        check_unique_ids(path)


# ---------------------------------------------------------------- writers


def test_json_array_writer_writes_the_bytes_of_the_whole_list(tmp_path):
    records = [{"id": "é", "x": [1, 2.5, {"a": []}], "y": {}}, {"z": None, "t": "a\nb"}, {}]
    for count in (0, 1, 3):
        with JsonArrayWriter(tmp_path / "out.json") as out:
            out.write_many(records[:count])
        expected = json.dumps(records[:count], ensure_ascii=False, indent=2) + "\n"
        assert (tmp_path / "out.json").read_text(encoding="utf-8") == expected


def test_json_array_writer_keeps_the_old_file_when_the_stream_fails(tmp_path):
    (tmp_path / "out.json").write_text("old")

    def failing():
        yield {"id": "1"}
        raise RecordError("a bad line")

    with pytest.raises(RecordError), JsonArrayWriter(tmp_path / "out.json") as out:
        out.write_many(failing())
    assert (tmp_path / "out.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_write_jsonl_atomic_from_a_generator(tmp_path):
    records = [{"id": str(n), "v": "é"} for n in range(5)]
    assert write_jsonl_atomic(tmp_path / "a.jsonl", (r for r in records)) == 5
    assert (tmp_path / "a.jsonl").read_bytes() == b"".join(dumps_line(r) for r in records)


# ---------------------------------------------------------------- export


def _reference_records(generations, *, direct_only=False, drop_ungrounded=False):
    """Export's selection the in-memory way: every record in a list, a set of id strings."""
    records, seen = [], set()
    for generation in generations:
        if not generation.passed or generation.id in seen:
            continue
        if (direct_only and generation.rationalized) or (drop_ungrounded and generation.grounded is False):
            continue
        seen.add(generation.id)
        records.append(to_llava_record(generation))
    return records


@pytest.mark.parametrize("flags", [[], ["--direct-only"], ["--drop-ungrounded"]])
def test_export_streams_the_bytes_of_the_in_memory_export(run_shards, tmp_path, flags):
    gen_dir, generations = run_shards
    assert export_main([str(gen_dir), "-o", str(tmp_path / "train.json"), *flags]) == 0
    expected = _reference_records(
        generations, direct_only="--direct-only" in flags, drop_ungrounded="--drop-ungrounded" in flags
    )
    assert (tmp_path / "train.json").read_text(encoding="utf-8") == json.dumps(
        expected, ensure_ascii=False, indent=2
    ) + "\n"
    stats = json.loads((tmp_path / "train.stats.json").read_text())
    assert stats["total_records"] == len(expected)
    passed = sum(1 for g in generations if g.passed)
    assert stats["duplicate_ids_dropped"] + stats["rationalized_dropped"] + stats["ungrounded_dropped"] == passed - len(
        expected
    )


def test_export_for_a_whole_file_trainer_in_batches_matches_one_batch(run_shards, tmp_path, monkeypatch):
    """Clips planned a batch at a time give the records and counts of one plan over all of them."""
    from llava_star.media import clips

    gen_dir, _ = run_shards
    videos = tmp_path / "videos"
    videos.mkdir()
    for number in range(6):  # v6.mp4 is missing: its records are left out and named
        (videos / f"v{number}.mp4").write_bytes(b"")
    common = [str(gen_dir), "--format", "llama-factory", "--video-root", str(tmp_path), "--direct-only"]
    assert export_main([*common, "-o", str(tmp_path / "one" / "train.json")]) == 0
    original = clips.playable_stream
    monkeypatch.setattr("llava_star.stages.export.playable_stream", lambda *a, **k: original(*a, **{**k, "batch": 7}))
    assert export_main([*common, "-o", str(tmp_path / "many" / "train.json")]) == 0
    for name in ("train.json", "dataset_info.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes()
    one, many = (json.loads((tmp_path / d / "train.stats.json").read_text()) for d in ("one", "many"))
    assert one["media_skipped"] and one["media"]["as_is"]
    assert {k: v for k, v in one.items() if k != "video_folder"} == {
        k: v for k, v in many.items() if k != "video_folder"
    }


# ---------------------------------------------------------------- report and summaries


def _reference_summary(generations):
    """The report's per-group counts the in-memory way (as before streaming)."""
    lengths = [len(g.answer.split()) for g in generations]
    failures = Counter(failure_reason(g) for g in generations if not g.passed)
    grounding = grounding_counts(generations)
    return {
        **kept_counts(generations),
        **{key: grounding[key] for key in ("grounding_checked", "ungrounded", "grounded_fraction")},
        "failures_by_reason": dict(failures.most_common()),
        "answer_words_mean": statistics.fmean(lengths) if lengths else 0.0,
        "answer_words_median": statistics.median(lengths) if lengths else 0.0,
    }


def _reference_set_statistics(generations, unreadable, *, held_out):
    def grouped(keys_of):
        groups = defaultdict(list)
        for generation in generations:
            for key in keys_of(generation):
                groups[key].append(generation)
        return {key: _reference_summary(groups[key]) for key in sorted(groups)}

    stats = {
        "unreadable_videos": unreadable,
        "overall": _reference_summary(generations),
        "by_source": grouped(lambda g: [g.sample.source]),
        "by_label_type": grouped(lambda g: label_type_names(g.sample.labels)),
        "by_task": grouped(lambda g: [g.sample.task]),
    }
    if held_out:
        for group in [
            stats["overall"],
            *(g for k in ("by_source", "by_label_type", "by_task") for g in stats[k].values()),
        ]:
            group["accuracy"] = group["kept_direct_fraction"]
    return stats


@pytest.mark.parametrize("size", [0, 1, 2, 5, 300])
@pytest.mark.parametrize("held_out", [False, True])
def test_set_tally_gives_the_in_memory_statistics(size, held_out):
    rng = random.Random(size)
    generations = [random_generation(rng, n) for n in range(size)]
    tally = SetTally()
    for generation in generations:
        tally.add(generation)
    expected = _reference_set_statistics(generations, 3, held_out=held_out)
    assert json.dumps(tally.statistics(3, held_out=held_out)) == json.dumps(expected)
    assert tally.overall.grounding_counts() == grounding_counts(generations)


def test_report_stats_file_is_the_in_memory_one(run_shards, tmp_path):
    gen_dir, _ = run_shards
    (gen_dir / "failures.rank00000-of-00001.jsonl").write_text('{"id":"f1","video":"v","reason":"x"}\n' * 2)
    page = report.write_report(gen_dir, out_dir=tmp_path / "report", gallery_per_set=5)
    directory = GenerationDir(gen_dir)
    expected = _reference_set_statistics(directory.generations(), 2, held_out=False)
    stats = json.loads((page.parent / "stats.json").read_text())
    assert stats["cycles"][0]["training"] == json.loads(json.dumps(expected))


def test_report_gallery_is_a_balanced_sample_the_same_for_a_seed(run_shards, tmp_path):
    gen_dir, _ = run_shards

    def gallery(seed):
        page = report.write_report(gen_dir, out_dir=tmp_path / f"r{seed}", gallery_per_set=8, seed=seed)
        return [part.split('data-status="')[1].split('"')[0] for part in page.read_text().split("<article")[1:]], page

    (first, page), (again, _), (other, _) = gallery(0), gallery(0), gallery(1)
    assert first == again and len(first) == 8
    assert Counter(first) == {"passed": 2, "rationalized": 2, "failed": 2, "ungrounded": 2}
    assert page.read_text() != (tmp_path / "r1" / "index.html").read_text()
    assert len(other) == 8


def test_generate_summary_counts_every_shard_as_the_in_memory_counts(run_shards):
    from llava_star.generation.shards import summarize

    gen_dir, _ = run_shards
    generations = GenerationDir(gen_dir).generations()
    assert summarize(gen_dir) == {**kept_counts(generations), "video_failures": 0, **grounding_counts(generations)}


# ---------------------------------------------------------------- resume by ids


def test_a_shard_may_hold_a_share_exactly_when_some_position_is_in_both():
    for world_size in range(1, 7):
        for old_world_size in range(1, 7):
            for rank in range(world_size):
                for old_rank in range(old_world_size):
                    both = any(
                        p % world_size == rank and p % old_world_size == old_rank
                        for p in range(world_size * old_world_size)
                    )
                    shard = Path(f"generations.rank{old_rank:05d}-of-{old_world_size:05d}.jsonl")
                    assert may_hold_share(shard, ProcessContext(rank, world_size, rank)) == both


def test_a_rank_finds_every_finished_id_of_its_share_from_an_earlier_layout(tmp_path):
    """Samples 0..59 finished by 3 ranks (2 of 3 shards), then resumed by 2 ranks."""
    ids = [f"clip{n:03d}" for n in range(60)]
    directory = GenerationDir(tmp_path / "gen")
    for old_rank in (0, 2):
        with JsonlAppender(directory.generations_shard(old_rank, 3)) as out:
            out.write_many({"id": sample_id, "answer": "x"} for sample_id in ids[old_rank::3])
    with JsonlAppender(directory.failures_shard(1, 3)) as out:
        out.write({"id": ids[1], "video": "v", "reason": "unreadable"})
    written = written_ids(directory.generation_shards() + directory.failure_shards())
    assert written == set(ids[0::3] + ids[2::3] + ids[1:2])
    for rank in range(2):  # gcd(2, 3) = 1: any old shard may hold a sample of either share
        done = finished_ids(directory, ProcessContext(rank, 2, rank))
        assert {sample_id for sample_id in ids if sample_id in done} == written
    same_layout = finished_ids(directory, ProcessContext(2, 3, 2))
    assert {sample_id for sample_id in ids if sample_id in same_layout} == set(ids[2::3])


# ---------------------------------------------------------------- prepare


def _kinetics_dataset(folder: Path) -> tuple[Path, Path]:
    """A Kinetics-700-style CSV: repeated clips, rows without a label, missing videos."""
    rng = random.Random(5)
    classes = ["abseiling", "air drumming", "applauding", "archery"]
    video_root = folder / "videos"
    lines = ["label,youtube_id,time_start,time_end,split"]
    for number in range(40):
        label, youtube_id, start = rng.choice(classes), f"yt{number % 33:05d}", 10 * (number % 33)
        lines.append(f'"{label if number % 9 else ""}",{youtube_id},{start},{start + 10},validate')
        if number % 5:
            clip = video_root / label.replace(" ", "_") / f"{youtube_id}_{start:06d}_{start + 10:06d}.mp4"
            clip.parent.mkdir(parents=True, exist_ok=True)
            clip.touch()
    (folder / "validate.csv").write_text("\n".join(lines) + "\n")
    return folder / "validate.csv", video_root


def test_prepare_streams_the_samples_of_the_code_before_streaming(tmp_path):
    """The golden files were written by ``llava-star prepare`` of main before issue 32 (855e7b2)."""
    from llava_star.stages.prepare import main as prepare_main

    annotations, video_root = _kinetics_dataset(tmp_path)
    output = tmp_path / "k700.jsonl"
    argv = ["kinetics700", "--annotations", str(annotations), "--video-root", str(video_root), "-o", str(output)]
    assert prepare_main([*argv, "--seed", "3"]) == 0
    assert output.read_bytes() == (GOLDEN / "kinetics_prepare.jsonl").read_bytes()
    summary = (tmp_path / "k700.summary.json").read_text().replace(str(tmp_path), "TMP")
    assert summary == (GOLDEN / "kinetics_prepare.summary.json").read_text()


class CollidingIds(IdHashes):
    """Ids whose hash is their length: distinct ids of one length look seen (forced collisions)."""

    def add_new(self, sample_id):
        if self.has_hash(len(sample_id)):
            return False
        self.add_hash(len(sample_id))
        return True


def test_prepare_confirms_a_shared_hash_and_names_both_rows_of_a_repeated_id(tmp_path, monkeypatch):
    """A hash seen before is confirmed by running the adapter again: a true repeat names its first row."""
    from llava_star.datasets.adapter import Found, PrepareRequest
    from llava_star.datasets.kinetics import adapt
    from llava_star.stages.prepare import PrepareSummary, stream_samples

    annotations, video_root = _kinetics_dataset(tmp_path)
    request = PrepareRequest("kinetics700", annotations, video_root)
    expected = list(stream_samples(request, adapt(request), PrepareSummary("kinetics700")))
    request = PrepareRequest("kinetics700", annotations, video_root)  # the questions drawn again
    proposals = list(adapt(request))
    monkeypatch.setattr("llava_star.stages.prepare.IdHashes", CollidingIds)  # every id shares one hash
    summary = PrepareSummary("kinetics700")
    assert list(stream_samples(request, proposals, summary, rescan=lambda: adapt(request))) == expected
    first = next(p for p in proposals if isinstance(p, Found))
    proposals.append(Found(first.sample, f"{annotations}:99"))
    with pytest.raises(
        AnnotationError, match=rf"validate.csv:99: sample id {first.sample.id!r} repeats {first.where}$"
    ):
        list(stream_samples(request, proposals, PrepareSummary("kinetics700"), rescan=lambda: adapt(request)))


def test_kinetics_yields_each_id_once_so_prepare_holds_no_second_id_set(tmp_path):
    """prepare trusts the Kinetics adapter's clip dedup for the ids (IDS_UNIQUE_BY_ADAPTER):
    the ids it yields are the file's labeled clip stems, first row of each, in order."""
    import csv

    from llava_star.datasets import get_adapter
    from llava_star.datasets.adapter import Found, PrepareRequest
    from llava_star.datasets.kinetics import adapt
    from llava_star.stages.prepare import IDS_UNIQUE_BY_ADAPTER, PrepareSummary, stream_samples

    assert all(get_adapter(name) is adapt for name in IDS_UNIQUE_BY_ADAPTER)
    annotations, video_root = _kinetics_dataset(tmp_path)
    with annotations.open(newline="") as handle:
        stems = [
            f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}"
            for row in csv.DictReader(handle)
            if row["label"]
        ]
    request = PrepareRequest("kinetics700", annotations, video_root)
    found = [proposal.sample.id for proposal in adapt(request) if isinstance(proposal, Found)]
    assert len(stems) > len(set(stems))  # the file repeats clips
    assert found == list(dict.fromkeys(stems))
    summaries, outputs = [], []
    for check_ids in (True, False):  # a fresh request each: the same questions drawn
        request = PrepareRequest("kinetics700", annotations, video_root)
        summaries.append(PrepareSummary("kinetics700"))
        outputs.append(list(stream_samples(request, adapt(request), summaries[-1], check_ids=check_ids)))
    assert outputs[0] == outputs[1] and summaries[0] == summaries[1]


# ---------------------------------------------------------------- the cycle's bookkeeping


@pytest.mark.parametrize("size", [0, 3, 17, 40, 100])
def test_the_held_out_subset_of_a_file_is_random_subset_of_its_lines(tmp_path, size):
    from llava_star.generation.protocol import random_subset, random_subset_of_lines

    path = tmp_path / "samples.jsonl"
    lines = [dumps_line({"id": f"s{n}"}) for n in range(40)]
    path.write_bytes(b"\n".join(lines))  # blank lines between: not counted, as jsonl_lines skips them
    for seed in (0, 5):
        assert random_subset_of_lines(path, size, seed) == random_subset(lines, size, seed)


def test_held_out_accuracy_of_the_stream_is_that_of_the_list(run_shards):
    from llava_star.generation.protocol import held_out_accuracy

    gen_dir, _ = run_shards
    directory = GenerationDir(gen_dir)
    assert held_out_accuracy(directory.iter_generations()) == held_out_accuracy(directory.generations())
    assert [g.id for g in directory.iter_generations()] == [g.id for g in directory.generations()]
