"""Generation stage: batching, verification, rationalization, shards, resume, bad videos."""

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_model_helpers import in_memory_frames, one_torch_thread  # noqa: F401 (an autouse fixture)

from llava_star.errors import ConfigError, RecordError
from llava_star.media.encode import write_video
from llava_star.models.loading import load_model
from llava_star.models.tiny import FAMILIES, VARIANTS, build_tiny_model
from llava_star.records import read_jsonl, write_jsonl_atomic
from llava_star.stages.generate import GenerateConfig, ModelAnswerer, Reply, run, summarize
from llava_star.stages.generate import main as generate_main

torch = pytest.importorskip("torch")


REPO_ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def colour_frames(rgb, count=8, size=32, seed=0):
    rng = np.random.default_rng(seed)
    frames = np.empty((count, size, size, 3), dtype=np.uint8)
    frames[:] = rgb
    noise = rng.integers(-10, 10, frames.shape)
    return np.clip(frames.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def sample_line(index, colour, video):
    return {
        "id": f"s{index:03d}",
        "video": video,
        "question": f"What colour is the square in clip {index}?",
        "labels": [{"type": "class", "value": colour, "vocabulary": sorted(COLOURS)}],
        "source": "test",
        "task": "colour",
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Eight videos (two per colour), 24 samples (three questions per video)."""
    root = tmp_path_factory.mktemp("data")
    lines = []
    for video_index in range(8):
        colour = sorted(COLOURS)[video_index % 4]
        name = f"videos/{colour}_{video_index}.mp4"
        write_video(root / name, colour_frames(COLOURS[colour], seed=video_index), fps=8.0)
        for question in range(3):
            lines.append(sample_line(video_index * 3 + question, colour, name))
    write_jsonl_atomic(root / "samples.jsonl", lines)
    return root


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)


class HintFollower:
    """A stand-in model: names blue when asked directly; repeats the hint when given one.

    So red/green/yellow samples fail the direct prompt and pass after rationalization,
    and the test can see exactly which prompts were asked.
    """

    def __init__(self):
        self.prompts = []

    def replies(self, prompts, videos):
        assert len(prompts) == len(videos)
        self.prompts.extend(prompts)
        answers = []
        for prompt in prompts:
            hint = re.search(r"\nAnswer: (.+)\.\n", prompt)
            colour = hint.group(1) if hint else "blue"
            answers.append(
                Reply(f"The square fills every frame and its colour is {colour}. So the square is {colour}.")
            )
        return answers


def read_all(directory, stem="generations"):
    return [line for path in sorted(Path(directory).glob(f"{stem}.*.jsonl")) for line in read_jsonl(path)]


def config_for(dataset, out, model="stand-in", **overrides):
    settings = {
        "model": str(model),
        "samples": str(dataset / "samples.jsonl"),
        "video_root": str(dataset),
        "output_dir": str(out),
        "batch_size": 4,
        "num_frames": 4,
        "max_new_tokens": 8,
        "num_workers": 0,
    }
    settings.update(overrides)
    return GenerateConfig(**settings)


def test_failed_samples_are_rationalized_and_the_hint_is_not_stored(dataset, tmp_path):
    answerer = HintFollower()
    summary = run(config_for(dataset, tmp_path), answerer=answerer)
    lines = read_all(tmp_path)
    assert sorted(line["id"] for line in lines) == [f"s{i:03d}" for i in range(24)]
    by_colour = {line["id"]: line["labels"][0]["value"] for line in lines}
    for line in lines:
        assert line["passed"], line
        assert line["rationalized"] == (by_colour[line["id"]] != "blue")
        assert line["question"].startswith("What colour is the square")
        assert "Answer:" not in json.dumps({k: v for k, v in line.items() if k != "answer"})
        assert line["model"] == "stand-in" and line["cycle"] == 0
        assert [check["type"] for check in line["checks"]] == ["answer", "class"]
    hint_prompts = [prompt for prompt in answerer.prompts if "\nAnswer: " in prompt]
    assert len(hint_prompts) == 18 and len(answerer.prompts) == 24 + 18
    assert summary["samples"] == 24 and summary["kept"] == 24
    assert summary["kept_direct"] == 6 and summary["kept_rationalized"] == 18
    assert summary["this_run"]["finished"] == 24
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert json.loads((tmp_path / "config.json").read_text())["batch_size"] == 4


def test_no_rationalize_keeps_the_direct_verdicts(dataset, tmp_path):
    answerer = HintFollower()
    summary = run(config_for(dataset, tmp_path, rationalize=False), answerer=answerer)
    assert not any("\nAnswer: " in prompt for prompt in answerer.prompts)
    assert summary["samples"] == 24 and summary["kept"] == 6 and summary["rationalized"] == 0


def test_bad_videos_are_recorded_and_the_run_goes_on(dataset, tmp_path):
    root = tmp_path / "data"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "good.mp4").write_bytes((dataset / "videos" / "blue_0.mp4").read_bytes())
    (root / "videos" / "corrupt.mp4").write_bytes(os.urandom(3000))
    (root / "videos" / "empty.mp4").write_bytes(b"")
    videos = ["videos/good.mp4", "videos/missing.mp4", "videos/corrupt.mp4", "videos/empty.mp4", "../escape.mp4"]
    write_jsonl_atomic(root / "samples.jsonl", [sample_line(i, "blue", video) for i, video in enumerate(videos)])
    summary = run(config_for(root, tmp_path / "out", num_workers=1), answerer=HintFollower())
    assert [line["id"] for line in read_all(tmp_path / "out")] == ["s000"]
    failures = {line["id"]: line for line in read_all(tmp_path / "out", "failures")}
    assert sorted(failures) == ["s001", "s002", "s003", "s004"]
    assert "missing.mp4" in failures["s001"]["reason"] and failures["s001"]["video"] == "videos/missing.mp4"
    assert "empty" in failures["s003"]["reason"]
    assert "video root" in failures["s004"]["reason"]
    assert summary["video_failures"] == 4 and summary["samples"] == 1


def test_rerun_skips_ids_written_by_any_rank_layout(dataset, tmp_path):
    first = HintFollower()
    run(config_for(dataset, tmp_path, limit=10), answerer=first)
    # as if an earlier 2-process run had also finished s015
    earlier = read_all(tmp_path)[0] | {"id": "s015"}
    write_jsonl_atomic(tmp_path / "generations.rank00001-of-00002.jsonl", [earlier])
    second = HintFollower()
    summary = run(config_for(dataset, tmp_path), answerer=second)
    ids = [line["id"] for line in read_all(tmp_path)]
    assert sorted(ids) == [f"s{i:03d}" for i in range(24)]
    assert summary["this_run"]["finished"] == 13
    assert not any("clip 15?" in prompt for prompt in second.prompts)


def test_a_wrong_video_root_stops_before_marking_every_sample_failed(dataset, tmp_path):
    with pytest.raises(ConfigError, match="video_root"):
        run(config_for(dataset, tmp_path, video_root=str(dataset / "no-such-folder")), answerer=HintFollower())
    assert not list(tmp_path.glob("failures.*"))


def test_summary_counts_every_shard(dataset, tmp_path):
    run(config_for(dataset, tmp_path), answerer=HintFollower())
    assert summarize(tmp_path)["samples"] == 24


@pytest.mark.parametrize(
    "override, key",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"temperature": -1.0}, "temperature"),
        ({"num_frames": 0}, "num_frames"),
        ({"backend": "vlm"}, "backend"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"max_model_len": 0}, "max_model_len"),
    ],
)
def test_bad_config_names_the_key(dataset, tmp_path, override, key):
    with pytest.raises(ConfigError, match=key):
        config_for(dataset, tmp_path, **override)


def test_backend_auto_without_vllm_is_hf_and_vllm_names_the_extra(dataset, tiny_model, tmp_path):
    """Here vllm is not installed (tests/vllm_backend run where it is): auto generates with
    HF and says so in the summary; asking for vllm fails before any model loads."""
    from llava_star.errors import MissingDependencyError
    from llava_star.optional import is_available

    if is_available("vllm"):
        pytest.skip("vllm is installed here")
    summary = run(config_for(dataset, tmp_path, model=str(tiny_model), backend="auto", limit=2, max_new_tokens=4))
    assert summary["backend"] == "hf" and summary["samples"] == 2
    qwen = build_tiny_model("qwen2_vl", tmp_path / "qwen2_vl")
    with pytest.raises(MissingDependencyError, match=r"pip install 'llava-star\[vllm\]'"):
        run(config_for(dataset, tmp_path / "vllm", model=str(qwen), backend="vllm"))


@pytest.mark.parametrize("family", FAMILIES + VARIANTS)
def test_batched_greedy_answers_equal_one_at_a_time(tmp_path, family):
    loaded = load_model(build_tiny_model(family, tmp_path / family))
    answerer = ModelAnswerer(loaded, max_new_tokens=12)
    prompts = ["What colour?", "What colour is the large square in the middle of the video?", "Which way?"]
    videos = [in_memory_frames(colour_frames(rgb, count=4, seed=i)) for i, rgb in enumerate(COLOURS.values())][:3]
    batched = answerer.answer(prompts, videos)
    alone = [answerer.answer([prompt], [video])[0] for prompt, video in zip(prompts, videos)]
    assert batched == alone
    assert any(batched)


class WordLimitedModel:
    """A stand-in model with a token limit: its full answer names the colour early and then
    goes on; cut at ``max_words`` words it still names the colour (the verifier alone would
    keep it) but never ends. ``answer`` is the old text-only interface."""

    full = "The square is {colour} in every frame, and it stays in the middle of the picture the whole time."

    def __init__(self, max_words):
        self.max_words = max_words

    def replies(self, prompts, videos):
        replies = []
        for prompt in prompts:
            hint = re.search(r"\nAnswer: (.+)\.\n", prompt)
            words = self.full.format(colour=hint.group(1) if hint else "blue").split()
            replies.append(Reply(" ".join(words[: self.max_words]), truncated=len(words) > self.max_words))
        return replies

    def answer(self, prompts, videos):
        return [reply.text for reply in self.replies(prompts, videos)]


def test_answers_cut_off_at_the_token_limit_are_not_kept_or_exported(dataset, tmp_path):
    """An answer that hit max_new_tokens was kept and trained with a stop token after it."""
    from llava_star.stages.export import ExportConfig
    from llava_star.stages.export import run as export_run

    run(config_for(dataset, tmp_path / "cut", rationalize=False), answerer=WordLimitedModel(max_words=6))
    run(config_for(dataset, tmp_path / "whole", rationalize=False), answerer=WordLimitedModel(max_words=100))
    cut, whole = read_all(tmp_path / "cut"), read_all(tmp_path / "whole")
    blue = [line for line in cut if line["labels"][0]["value"] == "blue"]
    assert blue and all(line["answer"] == "The square is blue in every" for line in blue)
    for line in blue:
        assert line["truncated"] and not line["passed"]
        assert line["checks"] == [
            {"type": "answer", "passed": False, "reason": "cut off at max_new_tokens: the answer never ended"}
        ]
    assert not any(line["truncated"] for line in whole) and sum(line["passed"] for line in whole) == 6
    export_run(ExportConfig(gen_dirs=(tmp_path / "whole", tmp_path / "cut"), output=tmp_path / "train.json"))
    exported = json.loads((tmp_path / "train.json").read_text())
    assert (
        sorted(record["conversations"][1]["value"] for record in exported)
        == [WordLimitedModel.full.format(colour="blue")] * 6
    )


def test_a_cut_off_answer_is_rationalized_again(dataset, tmp_path):
    summary = run(config_for(dataset, tmp_path, rationalize=True), answerer=WordLimitedModel(max_words=6))
    assert summary["kept"] == 0 and summary["rationalized"] == 24  # the hint answer is cut off too


def test_old_shards_without_truncated_read_as_whole_answers(tmp_path):
    from llava_star.records import Generation

    line = {
        **sample_line(0, "blue", "v.mp4"),
        "answer": "Blue.",
        "rationalized": False,
        "passed": True,
        "checks": [],
        "cycle": 1,
        "model": "m",
    }
    generation = Generation.from_dict(line)
    assert generation.truncated is False and "truncated" not in generation.sample.to_dict()
    assert Generation.from_dict(generation.to_dict()) == generation


def test_hf_answerer_reports_answers_cut_off_at_max_new_tokens(tmp_path):
    """Rows that end in an end token are whole; rows that ran to max_new_tokens are cut off."""
    loaded = load_model(build_tiny_model("video_llava", tmp_path / "video_llava"))
    prompts = ["What colour?", "Which way does the square move in the video?"]
    videos = [in_memory_frames(colour_frames(rgb, count=4, seed=i)) for i, rgb in enumerate(list(COLOURS.values())[:2])]
    replies = ModelAnswerer(loaded, max_new_tokens=6).replies(prompts, videos)
    assert [reply.truncated for reply in replies] == [True, True]  # a random tiny model never stops by itself
    # make the first answer's third token an end token: that answer now stops there, the other does not
    tokenizer = loaded.processor.tokenizer
    first_ids = tokenizer(replies[0].text, add_special_tokens=False).input_ids
    loaded.model.generation_config.eos_token_id = first_ids[2]
    stopped = ModelAnswerer(loaded, max_new_tokens=6).replies(prompts, videos)
    assert stopped[0].truncated is False and len(tokenizer(stopped[0].text, add_special_tokens=False).input_ids) < 6
    assert ModelAnswerer(loaded, max_new_tokens=100).replies(prompts[:1], videos[:1])[0].truncated is False


def test_sampling_is_seeded_and_leaves_the_global_generator_alone(tmp_path):
    loaded = load_model(build_tiny_model("qwen2_vl", tmp_path / "qwen"))
    video = [in_memory_frames(colour_frames(COLOURS["red"], count=4))]
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    first = ModelAnswerer(loaded, max_new_tokens=12, temperature=1.0, seed=1).answer(["Colour?"], video)
    assert torch.equal(torch.rand(1), expected_next)
    again = ModelAnswerer(loaded, max_new_tokens=12, temperature=1.0, seed=1).answer(["Colour?"], video)
    assert first == again


@pytest.mark.slow
def test_cli_with_a_tiny_model_writes_every_sample_once(dataset, tiny_model, tmp_path):
    argv = ["--model", str(tiny_model), "--samples", str(dataset / "samples.jsonl"), "--video-root", str(dataset)]
    argv += ["-o", str(tmp_path), "--batch-size", "5", "--num-frames", "4", "--max-new-tokens", "6"]
    assert generate_main(argv + ["--num-workers", "1", "--cycle", "2"]) == 0
    lines = read_all(tmp_path)
    assert sorted(line["id"] for line in lines) == [f"s{i:03d}" for i in range(24)]
    assert {line["cycle"] for line in lines} == {2}
    # a random model's answers fail, so every sample was asked again with the hint
    assert all(line["rationalized"] and not line["passed"] for line in lines)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["samples"] == 24 and summary["rationalized"] == 24 and summary["kept_fraction"] == 0.0


def _generate_command(dataset, model, out, *extra):
    return [
        sys.executable,
        "-m",
        "llava_star",
        "generate",
        "--model",
        str(model),
        "--samples",
        str(dataset / "samples.jsonl"),
        "--video-root",
        str(dataset),
        "-o",
        str(out),
        "--batch-size",
        "3",
        "--num-frames",
        "4",
        "--max-new-tokens",
        "6",
        "--num-workers",
        "0",
        *extra,
    ]


def _environment():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


def _count_lines(directory):
    return sum(path.read_bytes().count(b"\n") for path in Path(directory).glob("generations.*.jsonl"))


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_loses_and_duplicates_nothing(dataset, tiny_model, tmp_path):
    rng = np.random.default_rng(2024)
    command = _generate_command(dataset, tiny_model, tmp_path)
    killed_mid_run = 0
    # The tiny model writes all 24 lines within a few tenths of a second after seconds of
    # imports, so a fixed delay after the first line can miss the run; instead each run
    # is killed a random instant after the shards reach a random line count short of 24.
    for target in sorted(rng.choice(np.arange(3, 19), size=3, replace=False)):
        goal = max(int(target), _count_lines(tmp_path) + 1)  # this run writes at least one line
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=_environment(), stderr=subprocess.DEVNULL)
        while process.poll() is None and _count_lines(tmp_path) < goal:
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.0, 0.03)))
        killed_mid_run += process.poll() is None and _count_lines(tmp_path) < 24
        process.kill()
        process.wait()
    assert killed_mid_run >= 2
    subprocess.run(command, cwd=REPO_ROOT, env=_environment(), check=True, stderr=subprocess.DEVNULL)
    ids = [line["id"] for line in read_all(tmp_path)]
    assert sorted(ids) == [f"s{i:03d}" for i in range(24)]


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_two_processes_equal_one_process(dataset, tiny_model, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    command = torchrun + _generate_command(dataset, tiny_model, tmp_path / "two")[1:]
    subprocess.run(command, cwd=REPO_ROOT, env=_environment(), check=True, capture_output=True)
    assert sorted(p.name for p in (tmp_path / "two").glob("generations.*")) == [
        "generations.rank00000-of-00002.jsonl",
        "generations.rank00001-of-00002.jsonl",
    ]
    generate_main(_generate_command(dataset, tiny_model, tmp_path / "one")[4:])
    two = sorted(line["id"] for line in read_all(tmp_path / "two"))
    one = sorted(line["id"] for line in read_all(tmp_path / "one"))
    assert two == one == [f"s{i:03d}" for i in range(24)]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["samples"] == 24 and summary["this_run"]["processes"] == 2


LATE_RANK_DRIVER = """
import datetime, json, os, sys, time
from pathlib import Path

import numpy as np
import torch.distributed as dist

from llava_star.generation.answerer import Reply
from llava_star.media.video import Frames
from llava_star.stages.generate import GenerateConfig, run

out, samples, video_root, delay, timeout = sys.argv[1:6]
rank = os.environ["RANK"]
given = {}
init_process_group = dist.init_process_group


def recording_init_process_group(*args, **kwargs):
    given["timeout"] = kwargs["timeout"].total_seconds() if "timeout" in kwargs else None
    return init_process_group(*args, **kwargs)


dist.init_process_group = recording_init_process_group


class LateOnRankOne:
    def replies(self, prompts, videos):
        if rank == "1":
            time.sleep(float(delay))
        return [Reply("The square is blue.") for _ in prompts]


frames = Frames(array=np.zeros((4, 32, 32, 3), dtype=np.uint8), timestamps=np.arange(4) / 8.0,
                indices=np.arange(4), fps=8.0, duration=0.5, path="<memory>", total_num_frames=4, backend="frames")
config = GenerateConfig(model="stand-in", samples=samples, video_root=video_root, output_dir=out, device="cpu",
                        num_workers=0, batch_size=100, rationalize=False, ddp_timeout=int(timeout))
run(config, answerer=LateOnRankOne(), read_video=lambda sample: frames)
Path(out, f"init_process_group.{rank}.json").write_text(json.dumps(given))
"""


@pytest.mark.slow
@pytest.mark.distributed
def test_a_rank_finishing_long_after_the_other_is_waited_for(dataset, tmp_path):
    """Ranks met at a collective barrier under the backend's default timeout (NCCL 10 min):
    a rank done much earlier than the slowest was killed there. Scaled down: a 3 s timeout,
    given to init_process_group, and one rank finishing 8 s after the other."""
    driver = tmp_path / "late_rank.py"
    driver.write_text(LATE_RANK_DRIVER)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    out = tmp_path / "out"
    command = [*torchrun, str(driver), str(out), str(dataset / "samples.jsonl"), str(dataset), "8", "3"]
    started = time.monotonic()
    finished = subprocess.run(
        command, cwd=REPO_ROOT, env=_environment(), capture_output=True, text=True, timeout=300, check=False
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert time.monotonic() - started > 8
    for rank in (0, 1):
        assert json.loads((out / f"init_process_group.{rank}.json").read_text()) == {"timeout": 3.0}
    assert sorted(line["id"] for line in read_all(out)) == [f"s{i:03d}" for i in range(24)]
    assert json.loads((out / "summary.json").read_text())["samples"] == 24


def test_the_generate_timeout_defaults_to_hours_and_is_checked():
    assert GenerateConfig(model="m", samples="s", video_root="v", output_dir="o").ddp_timeout >= 3 * 3600
    with pytest.raises(ConfigError, match="ddp_timeout"):
        GenerateConfig(model="m", samples="s", video_root="v", output_dir="o", ddp_timeout=0)


def test_distributed_helpers(monkeypatch):
    import doctest

    import llava_star.distributed
    from llava_star.distributed import process_context, shard

    assert doctest.testmod(llava_star.distributed).failed == 0
    assert process_context().world_size == 1
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    context = process_context()
    assert (context.rank, context.world_size, context.local_rank, context.is_main) == (3, 4, 1, False)
    items = list(range(10))
    assert sorted(x for rank in range(4) for x in shard(items, rank, 4)) == items
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4"):
        process_context()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_bad_line_stops_the_run_naming_file_and_line(dataset, tmp_path, num_workers):
    lines = (dataset / "samples.jsonl").read_text().splitlines(keepends=True)
    lines[13] = lines[13].replace('"type":"class"', '"type":"colour"')
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(lines))
    config = config_for(dataset, tmp_path / "out", samples=str(samples), num_workers=num_workers)
    with pytest.raises(RecordError) as raised:
        run(config, answerer=HintFollower())
    # the worker's error as it is: one line naming the file and line, not a worker's traceback
    assert str(raised.value).startswith(f"{samples}:14: id 's013': labels[0].type: unknown label type 'colour'")
    assert "\n" not in str(raised.value)
    # what was finished before it stays written; once the line is fixed, a rerun does the rest
    samples.write_text((dataset / "samples.jsonl").read_text())
    summary = run(config, answerer=HintFollower())
    assert sorted(line["id"] for line in read_all(tmp_path / "out")) == [f"s{i:03d}" for i in range(24)]
    assert 0 < summary["this_run"]["finished"] < 24


def test_with_workers_two_runs_write_the_same_lines_in_the_same_order(dataset, tmp_path):
    """Chunks depend on the samples only, so batches (and the seeds of sampling) repeat."""
    first, second = HintFollower(), HintFollower()
    run(config_for(dataset, tmp_path / "a", num_workers=2, batch_size=2), answerer=first)
    run(config_for(dataset, tmp_path / "b", num_workers=2, batch_size=2), answerer=second)
    assert first.prompts == second.prompts and len(first.prompts) == 24 + 18
    assert [line["id"] for line in read_all(tmp_path / "a")] == [line["id"] for line in read_all(tmp_path / "b")]


def test_a_second_copy_on_the_same_output_stops_before_writing(dataset, tmp_path):
    # on 50b0a39 two copies both wrote every sample (36 samples gave 72 lines)
    from llava_star.runs import OutputInUseError, exclusive_directory

    refused = pytest.raises(OutputInUseError, match="already being written by llava-star generate")
    with exclusive_directory(tmp_path, "generate"), refused:
        run(config_for(dataset, tmp_path), answerer=HintFollower())
    assert read_all(tmp_path) == [] and not (tmp_path / "config.json").exists()


def test_summary_keeps_kept_direct_and_after_the_hint_apart(dataset, tmp_path, caplog):
    # on 50b0a39 the log said "0% kept, 100% rationalized" when every answer was kept after the hint
    caplog.set_level("INFO", logger="llava_star.stages.generate")
    summary = run(config_for(dataset, tmp_path), answerer=HintFollower())
    assert (summary["kept_fraction"], summary["kept_direct_fraction"], summary["kept_rationalized_fraction"]) == (
        1.0,
        0.25,
        0.75,
    )
    assert "24 samples: 100% kept (25% directly, 75% after the hint)" in caplog.text


def test_duplicate_ids_stop_the_run_before_anything_is_answered(dataset, tmp_path):
    lines = (dataset / "samples.jsonl").read_text().splitlines(keepends=True)
    lines[20] = lines[20].replace('"id":"s020"', '"id":"s003"')
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(lines))
    config = config_for(dataset, tmp_path / "out", samples=str(samples))
    with pytest.raises(RecordError, match=rf"^{re.escape(str(samples))}:21: id 's003' is already the id of line 4$"):
        run(config, answerer=HintFollower())
    assert not (tmp_path / "out").exists() or read_all(tmp_path / "out") == []


SLOW_DRIVER = """
import sys, time

import numpy as np

from llava_star.generation.answerer import Reply
from llava_star.media.video import Frames
from llava_star.stages.generate import GenerateConfig, run

out, samples, video_root = sys.argv[1:4]


class Slow:
    def replies(self, prompts, videos):
        time.sleep(60)
        return [Reply("The square is blue.") for _ in prompts]


frames = Frames(array=np.zeros((4, 32, 32, 3), dtype=np.uint8), timestamps=np.arange(4) / 8.0,
                indices=np.arange(4), fps=8.0, duration=0.5, path="<memory>", total_num_frames=4, backend="frames")
config = GenerateConfig(model="stand-in", samples=samples, video_root=video_root, output_dir=out, device="cpu",
                        num_workers=2, batch_size=1, rationalize=False)
run(config, answerer=Slow(), read_video=lambda sample: frames)
"""


@pytest.mark.slow
def test_kill_9_of_the_main_process_takes_its_decoding_workers_with_it(dataset, tmp_path):
    """kill -9 of generate's main process left its DataLoader workers running, blocked."""
    import psutil

    driver = tmp_path / "slow.py"
    driver.write_text(SLOW_DRIVER)
    command = [sys.executable, str(driver), str(tmp_path / "out"), str(dataset / "samples.jsonl"), str(dataset)]
    main = subprocess.Popen(command, cwd=REPO_ROOT, env=_environment())
    workers = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = psutil.Process(main.pid).children()
        assert len(workers) == 2, "the workers did not start"
        time.sleep(1)  # the workers fill their queues and block
        main.kill()
        main.wait()
        _, alive = psutil.wait_procs(workers, timeout=5)
        assert not alive, f"workers {[p.pid for p in alive]} outlived the killed main process"
    finally:
        main.kill()
        for worker in workers:  # only the ones this test started, by pid
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
