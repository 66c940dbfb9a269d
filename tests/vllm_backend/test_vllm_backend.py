"""The vLLM backend on tiny models of the four families it serves: HF's greedy answers, the
generate stage's resume and sharding, and a cycle.

Few and small on purpose: ``import vllm`` costs 8-13 s per process and an engine starts in
a few seconds (the first of each architecture 15-20 s more, until vLLM caches it).
"""

from __future__ import annotations

import gc
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_model_helpers import noise_frames, one_torch_thread  # noqa: F401 (an autouse fixture)

from llava_star.generation.answerer import ModelAnswerer
from llava_star.generation.backends import choose_backend
from llava_star.generation.vllm_answerer import VllmAnswerer
from llava_star.models.loading import load_model, model_family
from llava_star.models.tiny import build_tiny_model
from llava_star.records import read_jsonl

REPO = Path(__file__).resolve().parents[2]
VLLM_FAMILIES = ("llava_next_video", "llava_onevision", "qwen2_vl", "qwen2_5_vl")
PROMPTS = (
    "What colour is the moving shape in the video?",
    "Which direction does it move?",
    "How many objects are there? Explain step by step.",
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {family: build_tiny_model(family, root / family) for family in VLLM_FAMILIES + ("video_llava",)}


@pytest.fixture(scope="module")
def samples(synthetic_dataset, tmp_path_factory):
    """The first 16 synthetic samples (real mp4 files), as their own samples file."""
    lines = synthetic_dataset.samples.read_text().splitlines()[:16]
    path = tmp_path_factory.mktemp("samples") / "samples.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)


def test_auto_chooses_vllm_where_it_serves_the_family(models):
    assert choose_backend("auto", model_family(str(models["qwen2_5_vl"]))) == "vllm"
    assert choose_backend("auto", model_family(str(models["video_llava"]))) == "hf"  # vLLM: text only


@pytest.mark.slow
def test_greedy_answers_are_the_hf_backends_for_every_family(models):
    """Same checkpoint, prompts and frames: the same tokens (float32 on both sides), batched
    or one at a time; and answers to long prompts are not cut to the engine's defaults."""
    videos = [noise_frames(seed, count=8) for seed in range(len(PROMPTS))]
    for family in VLLM_FAMILIES:
        path = str(models[family])
        hf = ModelAnswerer(load_model(path, device="cpu"), max_new_tokens=16).answer(PROMPTS, videos)
        engine = VllmAnswerer(path, family=model_family(path), max_new_tokens=16)
        batched = engine.answer(PROMPTS, videos)
        alone = engine.answer(PROMPTS[:1], videos[:1])
        del engine
        gc.collect()
        assert batched == hf, family
        assert alone == hf[:1], family
        assert all(answer for answer in hf), f"{family}: empty answers compare nothing"


@pytest.mark.slow
def test_the_video_token_budget_bounds_the_prompt_as_in_hf(models, tmp_path):
    """Qwen-VL's per-video budget (``video_token_budget``, pixels shared out per frame) gives
    the engine the prompt HF gets: the same number of tokens, fewer than without it."""
    import shutil

    from llava_star.models.inputs import build_inputs, video_conversation
    from llava_star.models.loading import load_processor

    # the tiny processor fixes 32x32 frames; let frames keep up to 96x96 pixels, as hub ones do
    path = str(shutil.copytree(models["qwen2_vl"], tmp_path / "qwen2_vl"))
    processor_file = Path(path) / "processor_config.json"
    processor_config = json.loads(processor_file.read_text())
    processor_config["video_processor"]["size"] = {"shortest_edge": 256, "longest_edge": 96 * 96}
    processor_file.write_text(json.dumps(processor_config))
    videos = [noise_frames(0, count=8, size=96)]

    def hf_length(budget):
        inputs = build_inputs(
            load_processor(path, "qwen2_vl", budget),
            [video_conversation(PROMPTS[0])],
            videos,
            add_generation_prompt=True,
        )
        return inputs.batch["input_ids"].shape[1]

    engine = VllmAnswerer(path, family="qwen2_vl", max_new_tokens=1, video_token_budget=16)
    output = engine.engine.generate(engine.requests(PROMPTS[:1], videos), use_tqdm=False)[0]
    del engine
    gc.collect()
    assert len(output.prompt_token_ids) == hf_length(16) < hf_length(None) - 100  # 36 tokens a grid -> 4


@pytest.mark.slow
def test_the_processor_cache_is_keyed_by_the_videos_file_and_frames(models, tmp_path):
    """A second prompt about frames of the same file and indices (the rationalization pass)
    reuses the processed video: shown here by giving other pixels the same key, which the
    engine then never looks at; frames from no file are hashed by their pixels instead."""
    import dataclasses

    file = tmp_path / "clip.mp4"
    file.write_bytes(b"")  # only its path keys the cache
    first, other = noise_frames(0, count=8), noise_frames(1, count=8)
    engine = VllmAnswerer(str(models["qwen2_vl"]), family="qwen2_vl", max_new_tokens=12)
    keyed = [dataclasses.replace(frames, path=str(file)) for frames in (first, other)]
    from_file = [engine.answer(PROMPTS[:1], [frames])[0] for frames in keyed]
    in_memory = [engine.answer(PROMPTS[:1], [frames])[0] for frames in (first, other)]
    del engine
    gc.collect()
    assert in_memory[0] != in_memory[1]  # the two videos do get different answers
    assert from_file == [in_memory[0], in_memory[0]]  # the cached video, under its key


@pytest.mark.slow
def test_sampling_is_seeded_per_prompt_and_video(models):
    path = str(models["qwen2_vl"])
    videos = [noise_frames(seed, count=8) for seed in range(2)]
    engine = VllmAnswerer(path, family="qwen2_vl", max_new_tokens=12, temperature=1.0, seed=3)
    first = engine.answer(PROMPTS[:2], videos)
    again = engine.answer(PROMPTS[:2], videos)
    swapped = engine.answer(PROMPTS[1::-1], videos[::-1])
    engine.seed = 4
    other_seed = engine.answer(PROMPTS[:2], videos)
    del engine
    gc.collect()
    assert first == again and swapped == first[::-1]  # the same request, wherever in the batch
    assert other_seed != first


def test_several_answers_are_sampled_apart_seeded_and_grouped_by_prompt(models):
    """generate --num-answers K through vLLM: ``SamplingParams(n=K)``, K answers per prompt."""
    path = str(models["qwen2_vl"])
    videos = [noise_frames(seed, count=8) for seed in range(2)]
    engine = VllmAnswerer(path, family="qwen2_vl", max_new_tokens=12, temperature=1.0, seed=3)
    first = engine.several_replies(PROMPTS[:2], videos, 3)
    again = engine.several_replies(PROMPTS[:2], videos, 3)
    swapped = engine.several_replies(PROMPTS[1::-1], videos[::-1], 3)
    del engine
    gc.collect()
    assert [len(replies) for replies in first] == [3, 3]
    assert first == again and swapped == first[::-1]  # seeded per request, grouped by prompt
    assert len({reply.text for reply in first[0]}) > 1  # the K sequences are seeded apart


def _generate_command(model, samples, video_root, output_dir, *extra):
    return [
        sys.executable,
        "-m",
        "llava_star",
        "generate",
        "--backend",
        "vllm",
        "--model",
        str(model),
        "--samples",
        str(samples),
        "--video-root",
        str(video_root),
        "-o",
        str(output_dir),
        "--num-frames",
        "4",
        "--max-new-tokens",
        "24",
        *extra,
    ]


def _ids(directory):
    return [line["id"] for shard in sorted(Path(directory).glob("generations.*.jsonl")) for line in read_jsonl(shard)]


def _sample_ids(samples):
    return [json.loads(line)["id"] for line in Path(samples).read_text().splitlines()]


@pytest.mark.slow
def test_killed_and_resumed_vllm_generation_loses_and_duplicates_nothing(models, samples, synthetic_dataset, tmp_path):
    out = tmp_path / "out"
    command = _generate_command(
        models["qwen2_vl"], samples, synthetic_dataset.root, out, "--batch-size", "1", "--num-workers", "0"
    )
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while process.poll() is None and len(_ids(out) if out.is_dir() else []) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    _, errors = process.communicate()
    written = _ids(out)
    assert process.returncode == -signal.SIGKILL and 3 <= len(written) < 16, (process.returncode, errors[-3000:])
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(_ids(out)) == sorted(_sample_ids(samples))  # every sample exactly once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "vllm" and summary["this_run"]["finished"] == 16 - len(written)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_torchrun_ranks_with_an_engine_each_cover_every_sample_once(models, samples, synthetic_dataset, tmp_path):
    out = tmp_path / "out"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    command = (
        torchrun
        + _generate_command(
            models["llava_onevision"], samples, synthetic_dataset.root, out, "--batch-size", "4", "--num-workers", "1"
        )[1:]
    )
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    shards = sorted(out.glob("generations.rank*-of-00002.jsonl"))
    assert len(shards) == 2 and all(read_jsonl(shard) for shard in shards)
    assert sorted(_ids(out)) == sorted(_sample_ids(samples))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["processes"] == 2 and summary["backend"] == "vllm"


def test_training_here_is_refused_naming_the_training_environment():
    from llava_star.errors import MissingDependencyError
    from llava_star.stages.train import check_transformers_for_training

    with pytest.raises(MissingDependencyError, match="train needs transformers >= 5.23, this environment has 5.19"):
        check_transformers_for_training()


@pytest.mark.slow
def test_one_cycle_generates_and_evaluates_through_vllm(models, synthetic_dataset, tmp_path):
    """Generation and evaluation through vLLM here; training, which needs transformers 5.23,
    in the main environment (.venv, which `make test` builds first), as on a cluster."""
    from llava_star.stages.cycle import main as cycle_main

    training_python = REPO / ".venv" / "bin" / "python"
    if not training_python.exists():
        pytest.skip("the main environment (.venv, `make install`) trains the cycle's model")

    lines = synthetic_dataset.samples.read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:8]) + "\n")
    (tmp_path / "test.jsonl").write_text("\n".join(lines[8:12]) + "\n")
    first = json.loads(lines[0])
    mix = [
        {
            "id": "mix-0",
            "video": first["video"],
            "conversations": [
                {"from": "human", "value": "<video>\n" + first["question"]},
                {"from": "gpt", "value": "The answer is it."},
            ],
        }
    ]
    (tmp_path / "mix.json").write_text(json.dumps(mix))
    config = {
        "model": str(models["qwen2_vl"]),
        "samples": str(tmp_path / "train.jsonl"),
        "video_root": str(synthetic_dataset.root),
        "output_dir": str(tmp_path / "run"),
        "cycles": 1,
        "min_kept_gain": None,
        "generate": {"backend": "vllm", "batch_size": 8, "num_frames": 4, "max_new_tokens": 12, "num_workers": 1},
        "train": {
            "mix": [str(tmp_path / "mix.json")],
            "options": {"max_steps": 1, "per_device_train_batch_size": 2, "dataloader_num_workers": 0},
        },
        "eval": {"samples": str(tmp_path / "test.jsonl"), "baseline": False},
        "launch": {"train": [str(training_python), "-m", "llava_star"]},
    }
    (tmp_path / "cycle.yaml").write_text(yaml.safe_dump(config))
    assert cycle_main(["--config", str(tmp_path / "cycle.yaml")]) == 0
    cycle = tmp_path / "run" / "cycle_1"
    assert sorted(_ids(cycle / "generations")) == sorted(_sample_ids(tmp_path / "train.jsonl"))
    for generations in (cycle / "generations", cycle / "eval" / "generations"):
        assert json.loads((generations / "summary.json").read_text())["backend"] == "vllm"
    assert json.loads((cycle / "eval.json").read_text())["samples"] == 4


def test_a_family_vllm_does_not_serve_is_refused_with_the_way_out(models):
    from llava_star.errors import ConfigError

    with pytest.raises(ConfigError, match="backend: vllm does not answer videos of video_llava models; use hf or auto"):
        choose_backend("vllm", model_family(str(models["video_llava"])))
