"""Family tests on tiny models of the real checkpoints' geometry and files (issue 18),
alongside today's tiny models: the loss ends on the stop token under every shipped
template, video tokens stay within the per-video budget at 720p and 1080p, clip timing
is the clip's, sampling honours its settings."""

import numpy as np
import pytest
from real_geometry import CHECKPOINTS, build_real_geometry_model, fixture
from tiny_model_helpers import in_memory_frames, one_torch_thread  # noqa: F401 (an autouse fixture)

from llava_star.models.inputs import build_inputs, video_conversation
from llava_star.models.loading import load_model
from llava_star.models.tiny import FAMILIES, VARIANTS, build_tiny_model

torch = pytest.importorskip("torch")
TINY = tuple(f"tiny:{name}" for name in FAMILIES + VARIANTS)
REAL = tuple(f"real:{name}" for name in CHECKPOINTS)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    built = {}

    def get(key):
        if key not in built:
            kind, name = key.split(":")
            build = build_real_geometry_model if kind == "real" else build_tiny_model
            built[key] = build(name, root / kind / name)
        return built[key]

    return get


def frames_of(loaded, count=8, height=None, width=None):
    """Random frames at the model's native frame size, or ``height`` x ``width``."""
    size = getattr(loaded.model.config, "vision_config", None)
    side = getattr(size, "image_size", 32) if loaded.family != "qwen2_vl" else 56
    rng = np.random.default_rng(0)
    return in_memory_frames(rng.integers(0, 256, (count, height or side, width or side, 3), dtype=np.uint8))


@pytest.mark.parametrize("key", TINY + REAL)
def test_the_loss_ends_on_the_stop_token(model_dirs, key):
    loaded = load_model(model_dirs(key), device="cpu")
    tokenizer = loaded.processor.tokenizer
    inputs = build_inputs(
        loaded.processor,
        [video_conversation("What colour is it?", "It is red.")],
        [frames_of(loaded, 4)],
        add_generation_prompt=False,
        assistant_spans=True,
        padding_side="right",
    )
    labels = inputs.labels()[0]
    learned = labels[labels != -100].tolist()
    stops = loaded.model.generation_config.eos_token_id
    stops = {stops} if isinstance(stops, int) else set(stops)
    assert learned[-1] in stops, (key, tokenizer.decode(learned))
    assert tokenizer.eos_token_id in stops
    assert "It is red." in tokenizer.decode(learned)


def test_the_fixtures_cite_a_source_for_every_fact():
    for name in CHECKPOINTS:
        facts = fixture(name)
        for key in ("vision", "preprocessor_config", "chat_template", "generation_config", "special_tokens"):
            assert facts["sources"].get(key), (name, key)


@pytest.mark.parametrize("key", ["real:qwen2_vl", "real:qwen2_5_vl", "tiny:video_llava"])
def test_sampling_honours_temperature_whatever_the_generation_config(model_dirs, key):
    """Qwen's generation_config (top_k 1, top_p 0.001) made every seed give the greedy answer."""
    from llava_star.stages.generate import ModelAnswerer

    loaded = load_model(model_dirs(key), device="cpu")
    video = [frames_of(loaded, 2)]
    answers = {
        ModelAnswerer(loaded, max_new_tokens=6, temperature=1.0, seed=seed).answer(["What colour is it?"], video)[0]
        for seed in range(8)
    }
    assert len(answers) >= 4, answers
    greedy = ModelAnswerer(loaded, max_new_tokens=6).answer(["What colour is it?"], video)
    assert greedy == ModelAnswerer(loaded, max_new_tokens=6, seed=5).answer(["What colour is it?"], video)


def video_tokens(loaded, height, width, count=8):
    inputs = build_inputs(
        loaded.processor,
        [video_conversation("What happens?")],
        [frames_of(loaded, count, height, width)],
        add_generation_prompt=True,
    )
    video_id = loaded.processor.video_token_id
    return int((inputs.batch["input_ids"] == video_id).sum())


# video tokens per 8-frame video where the geometry fixes them (Video-LLaVA 8 x 257 with CLS;
# LLaVA-NeXT-Video 8 x 12 x 12 after 2x pooling; OneVision 8 x 14 x 14 + a newline); Qwen: the budget
EXPECTED_VIDEO_TOKENS = {
    "video_llava": 2056,
    "llava_next_video": 1152,
    "llava_onevision": 1569,
}  # 8 x 196 + one newline


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_video_tokens_stay_within_the_per_video_budget_at_720p_and_1080p(model_dirs, name):
    from llava_star.models.loading import VIDEO_TOKEN_BUDGET

    loaded = load_model(model_dirs(f"real:{name}"), device="cpu")
    counts = [video_tokens(loaded, 720, 1280), video_tokens(loaded, 1080, 1920)]
    if name in EXPECTED_VIDEO_TOKENS:
        assert counts == [EXPECTED_VIDEO_TOKENS[name]] * 2
    else:
        assert all(VIDEO_TOKEN_BUDGET * 0.8 <= count <= VIDEO_TOKEN_BUDGET for count in counts), counts
        assert video_tokens(loaded, 720, 1280, count=16) <= VIDEO_TOKEN_BUDGET


def test_the_budget_is_overridable_and_off_with_none(model_dirs):
    small = load_model(model_dirs("real:qwen2_vl"), device="cpu", video_token_budget=512)
    assert video_tokens(small, 720, 1280) <= 512
    unbounded = load_model(model_dirs("real:qwen2_vl"), device="cpu", video_token_budget=None)
    assert video_tokens(unbounded, 720, 1280) == 4784  # the image budget the hub files leave it with (issue 18)


def test_clip_timing_is_the_clips_not_the_files(model_dirs, make_video):
    """An 8.5 s clip of a 30 s video: Qwen2.5-VL's time scale is the clip's (2.125 s per
    grid of 2 frames), not the file's (7.5 s)."""
    from llava_star.media.video import read_frames

    path = make_video("long.mp4", num_frames=900, fps=30.0, size=32)
    frames = read_frames(path, 8, start=10.0, end=18.5)
    metadata = frames.metadata()
    assert metadata["total_num_frames"] == 255 and metadata["duration"] == pytest.approx(8.5)
    assert 0 <= min(metadata["frames_indices"]) and max(metadata["frames_indices"]) < 255
    assert frames.indices.min() >= 300  # the frames themselves are the clip's, numbered in the file
    loaded = load_model(model_dirs("real:qwen2_5_vl"), device="cpu")
    inputs = build_inputs(loaded.processor, [video_conversation("What happens?")], [frames], add_generation_prompt=True)
    assert inputs.batch["second_per_grid_ts"].tolist() == pytest.approx([2.125])


@pytest.mark.parametrize("name", ["llava_next_video", "qwen2_vl", "llava_onevision"])
def test_a_video_processor_that_samples_frames_is_given_the_frames_as_sampled(model_dirs, make_video, name):
    from llava_star.media.video import read_frames

    loaded = load_model(model_dirs(f"real:{name}"), device="cpu")
    loaded.processor.video_processor.do_sample_frames = True  # as a checkpoint's config may say
    loaded.processor.video_processor.num_frames = 8
    frames = read_frames(make_video("long.mp4", num_frames=300, fps=30.0, size=32), 8, start=2.0, end=6.0)
    inputs = build_inputs(loaded.processor, [video_conversation("What happens?")], [frames], add_generation_prompt=True)
    assert int((inputs.batch["input_ids"] == loaded.processor.video_token_id).sum()) > 0
