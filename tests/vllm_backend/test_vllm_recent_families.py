"""vLLM answers Qwen3-VL (dense, MoE) and Qwen3.5 videos as HF does (issue 26): the same greedy
tokens for the same checkpoint, prompts and frames, frames of a clip of a longer file included
(their times, written into the prompt, are the file's on both sides)."""

from __future__ import annotations

import gc

import pytest
from tiny_model_helpers import noise_frames, one_torch_thread  # noqa: F401 (an autouse fixture)

from llava_star.generation.answerer import ModelAnswerer
from llava_star.generation.vllm_answerer import VllmAnswerer
from llava_star.models.loading import load_model, model_family
from llava_star.models.tiny import build_tiny_model

PROMPTS = ("What colour is the moving shape in the video?", "Which direction does it move?")


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen3_vl", "qwen3_vl_moe", "qwen3_5"])
def test_greedy_answers_are_the_hf_backends(name, tmp_path, make_video):
    from llava_star.media.video import read_frames

    path = str(build_tiny_model(name, tmp_path / name))
    clip = read_frames(make_video("long.mp4", num_frames=900, fps=30.0, size=32), 8, start=10.0, end=18.5)
    videos = [noise_frames(0, count=8), clip]
    hf = ModelAnswerer(load_model(path, device="cpu"), max_new_tokens=16).answer(PROMPTS, videos)
    engine = VllmAnswerer(path, family=model_family(path), max_new_tokens=16)
    batched = engine.answer(PROMPTS, videos)
    del engine
    gc.collect()
    assert batched == hf
    assert all(answer for answer in hf), "empty answers compare nothing"
