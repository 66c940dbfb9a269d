"""Qwen3-VL (dense and MoE), Qwen3.5 and Gemma 4 as their checkpoints are prompted (issue 26):
the frame times the processor writes are the source file's for a clip of a longer video, the
supervised tokens are exactly the answer and the end-of-turn token, 720p / 1080p stay within
the video token budget, and each family generates, trains and evaluates."""

import re
from pathlib import Path

import numpy as np
import pytest
from real_geometry import build_real_geometry_model
from tiny_model_helpers import in_memory_frames, one_torch_thread  # noqa: F401 (an autouse fixture)

from llava_star.models.inputs import build_inputs, video_conversation
from llava_star.models.loading import load_model
from llava_star.models.tiny import build_tiny_model

torch = pytest.importorskip("torch")
REPO = Path(__file__).resolve().parents[1]


REAL_QWEN3 = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5")  # the fixtures of tests/real_checkpoints


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The real-geometry model of a fixture, built once per module."""
    root = tmp_path_factory.mktemp("real")
    built = {}

    def get(name):
        if name not in built:
            built[name] = load_model(build_real_geometry_model(name, root / name), device="cpu")
        return built[name]

    return get


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {name: build_tiny_model(name, root / name) for name in ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "gemma4")}


def video_tokens(loaded, height, width, frames=8):
    """How many video tokens the prompt of one noise video of that size holds."""
    pixels = np.random.default_rng(0).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    _, inputs = rendered_prompt(loaded, in_memory_frames(pixels))
    return int((inputs.batch["input_ids"] == loaded.processor.video_token_id).sum())


def rendered_prompt(loaded, frames):
    inputs = build_inputs(loaded.processor, [video_conversation("What happens?")], [frames], add_generation_prompt=True)
    return loaded.processor.tokenizer.decode(inputs.batch["input_ids"][0]), inputs


@pytest.mark.parametrize("name", REAL_QWEN3)
def test_a_clips_frame_times_are_its_times_in_the_source_file(real, name, make_video):
    """8 frames of the 10.0-18.5 s clip of a 30 s, 30 fps video: Qwen3-VL writes one time per
    pair of frames (the pair's mean), from the file's clock, as qwen-vl-utils gives them."""
    from llava_star.media.video import read_frames

    frames = read_frames(make_video("long.mp4", num_frames=900, fps=30.0, size=32), 8, start=10.0, end=18.5)
    prompt, inputs = rendered_prompt(real(name), frames)
    times = [float(t) for t in re.findall(r"<(\d+\.\d) seconds>", prompt)]
    # the frames' file indices, by pairs: frames 315 and 347 (10.50 s, 11.57 s) are written 11.0 s
    assert frames.indices.tolist() == [315, 347, 379, 411, 443, 475, 507, 539]
    pairs = frames.indices.reshape(4, 2)
    assert times == [round(float(pair.mean()) / 30.0, 1) for pair in pairs]
    # the clip's own clock (0 s at 10.0 s) would have written 1.0, 3.2, 5.3 and 7.4
    assert times == [11.0, 13.2, 15.3, 17.4]
    # one timestamped block of video tokens per pair of frames, as the grid has
    assert inputs.batch["video_grid_thw"].tolist() == [[4, 2, 2]]
    assert prompt.count("<|video_pad|>") == 4 * 1


@pytest.mark.parametrize("name", REAL_QWEN3)
def test_a_whole_video_starts_at_zero(real, name, make_video):
    from llava_star.media.video import read_frames

    frames = read_frames(make_video("short.mp4", num_frames=64, fps=8.0, size=32), 8)
    prompt, _ = rendered_prompt(real(name), frames)
    assert re.findall(r"<(\d+\.\d) seconds>", prompt) == ["1.0", "3.0", "5.0", "7.0"]


@pytest.mark.parametrize(
    "name, stop, start",
    [
        ("qwen3_vl", "<|im_end|>", "<|im_start|>user\n<|vision_start|><"),
        ("qwen3_vl_moe", "<|im_end|>", "<|im_start|>user\n<|vision_start|><"),
        ("qwen3_5", "<|im_end|>", "<|im_start|>user\n<|vision_start|><"),
        ("gemma4", "<turn|>", "<bos><|turn>user\n00:00 <|image>"),
    ],
)
def test_the_loss_is_exactly_the_answer_and_the_end_of_turn_token(tiny_dirs, name, stop, start):
    loaded = load_model(tiny_dirs[name], device="cpu")
    rng = np.random.default_rng(0)
    inputs = build_inputs(
        loaded.processor,
        [video_conversation("What colour is it?", "It is red.")],
        [in_memory_frames(rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))],
        add_generation_prompt=False,
        assistant_spans=True,
        padding_side="right",
    )
    labels = inputs.labels()[0]
    tokenizer = loaded.processor.tokenizer
    assert tokenizer.decode(labels[labels != -100]) == f"It is red.{stop}"
    # the templates imply no system prompt: the conversation starts with the user turn
    assert tokenizer.decode(inputs.batch["input_ids"][0]).startswith(start)


@pytest.mark.parametrize("name", REAL_QWEN3)
def test_under_the_hub_files_the_loss_is_the_answer_and_im_end(real, name):
    """The real-geometry checkpoints carry the hub's chat template and processor files (Qwen3.5's
    renders an empty think block before a trained answer: it is context, not supervised)."""
    loaded = real(name)
    rng = np.random.default_rng(0)
    inputs = build_inputs(
        loaded.processor,
        [video_conversation("What colour is it?", "It is red.")],
        [in_memory_frames(rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))],
        add_generation_prompt=False,
        assistant_spans=True,
        padding_side="right",
    )
    labels = inputs.labels()[0]
    assert loaded.processor.tokenizer.decode(labels[labels != -100]) == "It is red.<|im_end|>"


def answer_prompt_and_trained_ids(loaded):
    """The generation prompt's ids, and the ids of the same conversation with its answer, as training
    builds them, up to the first supervised token."""
    rng = np.random.default_rng(0)
    frames = [in_memory_frames(rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))]
    asked = build_inputs(
        loaded.processor, [video_conversation("What colour is it?")], frames, add_generation_prompt=True
    )
    trained = build_inputs(
        loaded.processor,
        [video_conversation("What colour is it?", "It is red.")],
        frames,
        add_generation_prompt=False,
        assistant_spans=True,
        padding_side="right",
    )
    labels = trained.labels()[0]
    first = int((labels != -100).nonzero()[0])
    return asked.batch["input_ids"][0].tolist(), trained.batch["input_ids"][0][:first].tolist()


@pytest.mark.parametrize("name", REAL_QWEN3)
def test_generation_starts_the_answer_where_training_supervised_it(real, name):
    """The prompt a model answers after is, token for token, the context its trained answers
    followed. Qwen3.5's hub template opens a generated answer inside "<think>\n" by default
    but renders a trained one after "<think>\n\n</think>\n\n": the prompts are rendered
    without thinking, so both are the closed empty block."""
    asked, trained = answer_prompt_and_trained_ids(real(name))
    assert asked == trained


def test_qwen3_5_answers_after_an_empty_think_block(real):
    loaded = real("qwen3_5")
    tokenizer = loaded.processor.tokenizer
    asked, _ = answer_prompt_and_trained_ids(loaded)
    assert tokenizer.decode(asked).endswith("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_only_templates_that_read_enable_thinking_are_given_it(real, tiny_model):
    """transformers hands a keyword the template does not read to the processor's call, with a
    warning at every render: a demo printed 56k of them before the keyword was kept to
    the templates that read it."""
    from llava_star.models.inputs import template_kwargs

    assert template_kwargs(real("qwen3_5").processor) == {"enable_thinking": False}
    assert template_kwargs(load_model(tiny_model, device="cpu").processor) == {}


def test_vllm_normalizes_on_the_device_only_where_images_and_videos_are_normalized_alike(real, tiny_dirs):
    """vLLM 0.32 normalizes Qwen3-VL's video pixels with the image processor's mean and std: the
    tiny model's differ (CLIP's for images, 0.5 for videos), the hub's do not."""
    from llava_star.generation.vllm_answerer import _device_normalization

    tiny = load_model(tiny_dirs["qwen3_vl"], device="cpu").processor
    assert tiny.image_processor.image_mean != tiny.video_processor.image_mean
    assert _device_normalization(tiny) == {"mm_device_do_normalize": False}
    assert _device_normalization(real("qwen3_vl").processor) == {}


def test_gemma4_writes_each_frames_source_time_as_mm_ss(tiny_dirs, make_video):
    """Gemma 4 (frames through the image path): one mm:ss per frame, from the file's clock for
    a clip (the clip's own would read 00:00 to 00:07)."""
    from llava_star.media.video import read_frames

    loaded = load_model(tiny_dirs["gemma4"], device="cpu")
    frames = read_frames(make_video("long.mp4", num_frames=900, fps=30.0, size=32), 8, start=10.0, end=18.5)
    prompt, _ = rendered_prompt(loaded, frames)
    assert re.findall(r"(\d\d:\d\d) <\|image>", prompt) == [f"00:{second}" for second in range(10, 18)]


def test_gemma4_video_tokens_with_the_hubs_video_processor(tiny_dirs):
    """Gemma 4's video processor settings (tests/real_checkpoints/gemma4.json: patch 16, 3 x 3
    pooling, at most 70 soft tokens a frame): 66 a frame at 720p and 1080p, 8 frames 528, the 32
    frames it takes 2,112 (fixed by the geometry; no budget needed)."""
    from real_geometry import fixture
    from transformers import Gemma4VideoProcessor

    settings = {
        key: value
        for key, value in fixture("gemma4")["video_preprocessor_config"].items()
        if key != "video_processor_type"
    }
    loaded = load_model(tiny_dirs["gemma4"], device="cpu")
    loaded.processor.video_processor = Gemma4VideoProcessor(**settings)

    sizes = [(720, 1280, 8), (1080, 1920, 8), (720, 1280, 32)]
    assert [video_tokens(loaded, *size) for size in sizes] == [528, 528, 2112]


def test_qwen3_5_trains_every_answer_of_a_multi_turn_conversation(real):
    """Qwen3.5's template writes the empty think block only before the answer after the last
    question, so rendering the first turns is not a prefix of rendering them all (LLaVA-665K's
    multi-turn image records were refused): each answer and its end-of-turn token is supervised."""
    loaded = real("qwen3_5")
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        {"role": "user", "content": [{"type": "text", "text": "What colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Black."}]},
    ]
    inputs = build_inputs(
        loaded.processor,
        [conversation],
        [None],
        images=[np.zeros((64, 64, 3), dtype=np.uint8)],
        add_generation_prompt=False,
        assistant_spans=True,
        padding_side="right",
    )
    labels = inputs.labels()[0]
    tokenizer = loaded.processor.tokenizer
    assert tokenizer.decode(labels[labels != -100]) == "A cat.<|im_end|>Black.<|im_end|>"
    text = tokenizer.decode(inputs.batch["input_ids"][0])
    assert text.endswith(
        "<|im_start|>assistant\nA cat.<|im_end|>\n<|im_start|>user\nWhat colour?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nBlack.<|im_end|>\n"
    )


def test_gemma4_large_templates_train_the_answer_after_the_empty_thought_channel(tiny_dirs, tmp_path):
    """The 26B / 31B templates end the generation prompt with "<|channel>thought\\n<channel|>" (thinking
    off) but render a model turn without it: the answer is trained after the generation prompt,
    so the prompt a model answers after is the context of its trained answers (training refused
    these templates before: the answer was looked for after the longer prompt)."""
    import shutil

    from real_geometry import fixture

    path = tmp_path / "gemma4"
    shutil.copytree(tiny_dirs["gemma4"], path)
    (path / "chat_template.jinja").write_text(fixture("gemma4")["chat_template_26b_a4b"], encoding="utf-8")
    loaded = load_model(path, device="cpu")
    asked, trained = answer_prompt_and_trained_ids(loaded)
    assert asked == trained
    assert loaded.processor.tokenizer.decode(asked).endswith("<|turn>model\n<|channel>thought\n<channel|>")
    inputs = build_inputs(
        loaded.processor,
        [video_conversation("What colour is it?", "It is red.")],
        [in_memory_frames(np.zeros((4, 32, 32, 3), dtype=np.uint8))],
        add_generation_prompt=False,
        assistant_spans=True,
    )
    labels = inputs.labels()[0]
    assert loaded.processor.tokenizer.decode(labels[labels != -100]) == "It is red.<turn|>"


def test_gemma4_takes_at_most_32_frames(tiny_dirs):
    from llava_star.errors import ConfigError

    loaded = load_model(tiny_dirs["gemma4"], device="cpu")
    frames = in_memory_frames(np.zeros((33, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ConfigError, match="at most 32 frames a video, got 33"):
        rendered_prompt(loaded, frames)


@pytest.mark.parametrize("name", REAL_QWEN3)
def test_video_tokens_at_720p_and_1080p(real, name):
    """8 frames: 3,520 (720p) and 8,160 (1080p) tokens with the hub's files; 1,920 both within
    the 2,048 budget (16 frames: 2,016). Qwen3.5 and the MoE share Qwen3-VL's video processor."""
    loaded = real(name)

    sizes = [(720, 1280, 8), (1080, 1920, 8), (720, 1280, 16)]
    assert [video_tokens(loaded, *size) for size in sizes] == [1920, 1920, 2016]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_vl_moe", "qwen3_5", "gemma4"])
def test_generate_train_two_steps_generate_again_and_evaluate(family, synthetic_dataset, train_json, tmp_path):
    """The stages a user runs on a new family, on its tiny model: generate, train 2 steps,
    generate with the trained checkpoint, and evaluate it through the lmms-eval adapter."""
    import json
    import os
    import subprocess
    import sys

    from llava_star.generation.shards import read_all_generations
    from llava_star.stages.generate import GenerateConfig
    from llava_star.stages.generate import run as generate
    from llava_star.stages.train import TrainConfig
    from llava_star.stages.train import run as train
    from llava_star.training.parts import parameter_group

    base = build_tiny_model(family, tmp_path / "base")

    def generate_with(model, out):
        settings = {"samples": str(synthetic_dataset.train), "video_root": str(synthetic_dataset.root), "limit": 3}
        settings.update(num_frames=4, max_new_tokens=6, batch_size=2, num_workers=0, backend="hf")
        summary = generate(GenerateConfig(model=str(model), output_dir=str(out), **settings))
        assert summary["backend"] == "hf" and summary["samples"] == 3, summary
        return list(read_all_generations([out]))

    assert [line.model for line in generate_with(base, tmp_path / "gen0")] == [str(base)] * 3
    trained = tmp_path / "trained"
    summary = train(
        TrainConfig(
            model=str(base),
            data=(str(train_json),),
            video_root=str(synthetic_dataset.root),
            output_dir=str(trained),
            max_steps=2,
            learning_rate=1e-3,
            per_device_train_batch_size=2,
            num_frames=4,
            seed=0,
        )
    )
    assert summary["global_step"] == 2 and len(summary["losses"]) == 2
    before, after = load_model(base, device="cpu").model, load_model(trained, device="cpu")
    assert after.family == {"qwen3_vl_moe": "qwen3_vl"}.get(family, family)  # the MoE is a variant
    changed = {"vision": False, "projector": False, "language": False}
    for (name, old), new in zip(before.named_parameters(), after.model.parameters()):
        changed[parameter_group(name)] |= not torch.equal(old, new)
    # the paper's recipe: the vision tower stays frozen; the mergers and the language model learn
    assert changed == {"vision": False, "projector": True, "language": True}
    assert [line.model for line in generate_with(trained, tmp_path / "gen1")] == [str(trained)] * 3

    out = tmp_path / "eval"
    command = [sys.executable, "-m", "llava_star", "eval", "--model", str(trained), "--tasks", "llava_star_qa"]
    command += ["--samples", str(synthetic_dataset.test), "--video-root", str(synthetic_dataset.root)]
    command += ["-o", str(out), "--limit", "2", "--num-frames", "4", "--model-args", "max_new_tokens=6"]
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", LLAVA_STAR_VIDEO_DIR=str(synthetic_dataset.root))
    env["LMMS_EVAL_DATASETS_CACHE"] = str(tmp_path / "datasets_cache")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    test_samples = len(synthetic_dataset.test.read_text().splitlines())
    assert report["num_docs"] == {"llava_star_qa": test_samples} and set(report["tasks"]) == {"llava_star_qa"}
    assert 0.0 <= report["tasks"]["llava_star_qa"]["accuracy"] <= 1.0


@pytest.mark.slow
def test_the_demo_runs_with_a_recent_family(tmp_path):
    """``llava-star demo family=qwen3_vl`` (miniature): the warm-up and both cycles train and
    evaluate a Qwen3-VL model."""
    import json

    from llava_star.stages.demo import main

    out = tmp_path / "demo"
    settings = ["num_videos=24", "warmup_videos=4", "warmup_steps=2", "cycles=2", "cycle_train_steps=2"]
    settings += ["batch_size=4", "max_new_tokens=8", "min_kept_gain=null", "family=qwen3_vl"]
    assert main(["-o", str(out), *settings]) == 0
    result = json.loads((out / "demo.json").read_text())
    assert len(result["accuracy_by_cycle"]) == 2
    assert json.loads((out / "warmup" / "model" / "config.json").read_text())["model_type"] == "qwen3_vl"
