"""The GPU path's decisions, checked on CPU: attention kernel, weight dtype, gradient
anchor. Where a test needs CUDA or flash-attn to be present it simulates only their
availability, for the selection logic (issue 18); the kernels themselves run in
scripts/gpu_check.py."""

import pytest
from tiny_model_helpers import one_torch_thread  # noqa: F401 (an autouse fixture)

from llava_star.errors import ConfigError
from llava_star.models import loading
from llava_star.models.tiny import build_tiny_model
from llava_star.training.config import TrainConfig, training_attention

torch = pytest.importorskip("torch")


def config(**overrides):
    return TrainConfig(model="m", data=("d.json",), output_dir="o", **overrides)


@pytest.fixture
def flash_attn_importable(monkeypatch):
    """flash-attn reported importable (it is not installed here): the selection logic only."""
    real = loading.is_available
    monkeypatch.setattr(loading, "is_available", lambda module: module == "flash_attn" or real(module))


def test_training_on_cuda_with_flash_attn_selects_it_for_half_precision(flash_attn_importable):
    assert training_attention(config(bf16=True), cuda=True) == "flash_attention_2"
    assert training_attention(config(fp16=True), cuda=True) == "flash_attention_2"
    # fp32 weights without autocast: flash-attn would refuse the inputs
    assert training_attention(config(), cuda=True) == "sdpa"
    assert training_attention(config(bf16=True), cuda=False) == "sdpa"
    with pytest.raises(ConfigError, match="attn_implementation: flash_attention_2 needs bf16 or fp16"):
        training_attention(config(attn_implementation="flash_attention_2"), cuda=True)


def test_a_cpu_load_for_a_cuda_run_hands_flash_attention_to_transformers(flash_attn_importable, tiny_model):
    """train loads on the CPU for a CUDA run: the kernel is checked against the GPU, not
    refused for the CPU (the bug: 'flash_attention_2 needs a CUDA device, not cpu')."""
    from transformers.utils import is_flash_attn_2_available

    if is_flash_attn_2_available():
        pytest.skip("flash-attn is installed: scripts/gpu_check.py loads it for real")
    with pytest.raises(ImportError, match="(?i)flash"):  # transformers' own check: the package is absent
        loading.load_model(
            tiny_model, dtype="bfloat16", device="cpu", compute_device="cuda", attn_implementation="flash_attention_2"
        )
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        loading.load_model(tiny_model, device="cpu", attn_implementation="flash_attention_2")


def test_the_gradient_anchor_leaves_the_language_models_gradients_ready_during_backward(tiny_model):
    """DDP and ZeRO-2 communicate a gradient once it is ready; an anchor over every
    parameter made all of them ready only when the backward pass ended (0 of 25)."""
    import numpy as np
    from tiny_model_helpers import in_memory_frames

    from llava_star.models.inputs import build_inputs, video_conversation
    from llava_star.training.parts import parameter_anchor, parameter_group

    loaded = loading.load_model(tiny_model, device="cpu")
    model = loaded.model
    model.train()
    order = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(parameter_group(name) != "vision")
        if parameter.requires_grad:
            parameter.register_post_accumulate_grad_hook(lambda _, name=name: order.append(name))

    def mark_the_start(_module, _inputs, output):  # the input embeddings' gradient: backward's last step
        output.register_hook(lambda _: order.append("<start>"))

    model.get_input_embeddings().register_forward_hook(mark_the_start)
    frames = in_memory_frames(np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
    inputs = build_inputs(
        loaded.processor,
        [video_conversation("What colour is it?", "It is red.")],
        [frames],
        add_generation_prompt=False,
        assistant_spans=True,
    )
    anchor = parameter_anchor(model)
    (model(**inputs.batch, labels=inputs.labels()).loss + anchor).backward()
    language = [name for name, p in model.named_parameters() if p.requires_grad and parameter_group(name) == "language"]
    ready_early = set(order[: order.index("<start>")]) & set(language)
    assert len(ready_early) >= len(language) - 1  # all but the input embeddings
    assert set(order[order.index("<start>") :]) >= {n for n in order if parameter_group(n) == "projector"}


def test_image_newline_trains_with_the_projector():
    from llava_star.training.parts import parameter_group, trainable_groups

    assert parameter_group("model.image_newline") == "projector"
    assert "projector" in trainable_groups(config(freeze_language_model=True))


def test_bf16_training_loads_bf16_weights(tiny_model):
    from llava_star.training.config import model_dtype

    assert model_dtype(config(bf16=True)) == "bfloat16"  # with or without DeepSpeed (trained weights upcast without)
    assert model_dtype(config(bf16=True, deepspeed="scripts/zero2.json")) == "bfloat16"
    assert model_dtype(config(fp16=True)) == "float32"  # the fp16 loss scaler needs fp32 weights
    loaded = loading.load_model(tiny_model, dtype=model_dtype(config(bf16=True)), device="cpu")
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}


def test_the_7b_recipe_fits_an_80_gb_gpu():
    """Video-LLaVA-7B: ~7.3B parameters, ~6.76B trainable with the vision towers frozen."""
    from pathlib import Path

    import yaml

    from llava_star.training.precision import estimate_memory_per_gpu

    def total(weight_bytes, stage):
        figures = estimate_memory_per_gpu(
            7_300_000_000, 6_760_000_000, weight_bytes=weight_bytes, stage=stage, world_size=8
        )
        return figures["total"] * 1024**3 / 1e9

    # without DeepSpeed the trained weights need fp32 master copies (training/precision.py): no 80 GB GPU holds them
    assert total(2, 0) > 100
    assert total(2, 2) < 30 and total(2, 3) < 15
    options = yaml.safe_load((Path(__file__).parents[1] / "configs" / "cycle.yaml").read_text())["train"]["options"]
    assert options["bf16"] and options["gradient_checkpointing"] and options["deepspeed"] == "scripts/zero2.json"


def test_nccl_is_bound_to_this_processs_gpu():
    from llava_star.distributed import ProcessContext, process_group_options

    context = ProcessContext(rank=5, world_size=8, local_rank=5)
    assert process_group_options(context, "cuda:5") == {"backend": "nccl", "device_id": torch.device("cuda", 5)}
    assert process_group_options(context, "cuda")["device_id"] == torch.device("cuda", 5)
    assert process_group_options(context, "cpu") == {"backend": "gloo"}


def test_decord_decodes_with_one_thread_per_decoder(make_video, monkeypatch):
    decord = pytest.importorskip("decord")
    from llava_star.media.video import read_frames

    seen = []
    real = decord.VideoReader
    monkeypatch.setattr(decord, "VideoReader", lambda *args, **kwargs: seen.append(kwargs) or real(*args, **kwargs))
    read_frames(make_video(), 4, backend="decord")
    monkeypatch.setenv("LLAVA_STAR_DECODE_THREADS", "3")
    read_frames(make_video(), 4, backend="decord")
    assert [kwargs.get("num_threads") for kwargs in seen] == [1, 3]


def test_generate_keeps_second_per_grid_ts_in_fp32(tmp_path):
    """A bf16 model gets bf16 pixels; Qwen2.5-VL's time scale stays exact."""
    import numpy as np
    from tiny_model_helpers import in_memory_frames

    from llava_star.stages.generate import ModelAnswerer

    path = build_tiny_model("qwen2_5_vl", tmp_path / "qwen2_5_vl")
    loaded = loading.load_model(path, dtype="bfloat16", device="cpu")
    seen = {}
    generate = loaded.model.generate

    def record(**batch):
        seen.update({key: value.dtype for key, value in batch.items() if torch.is_tensor(value)})
        return generate(**batch)

    loaded.model.generate = record
    frames = in_memory_frames(np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), fps=3.0)
    ModelAnswerer(loaded, max_new_tokens=2).answer(["What colour?"], [frames])
    assert seen["pixel_values_videos"] == torch.bfloat16 and seen["second_per_grid_ts"] == torch.float32


def test_the_gpu_check_says_it_needs_a_gpu(monkeypatch):
    import importlib.util
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: run `make gpu-check` itself")
    spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).parents[1] / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([]) == 2


@pytest.mark.slow
def test_the_gpu_checks_resume_equivalence_runs_on_the_cpu_in_float32(tmp_path):
    """The GPU check's training equivalences are code no CI runs on a GPU: run one on the CPU
    (float32, where resumed and uninterrupted runs agree far inside its 5% bound)."""
    import importlib.util
    from pathlib import Path

    from llava_star.models.tiny import build_tiny_model

    spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).parents[1] / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = build_tiny_model("qwen2_vl", tmp_path / "qwen2_vl")
    detail = module.check_resume_matches(model, tmp_path / "work", None, bf16=False)
    difference = float(detail.split("max difference ")[1].split(" ")[0])
    assert difference <= 1e-5, detail
