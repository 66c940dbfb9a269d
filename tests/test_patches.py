"""The runtime patches of ``patches/``: version-gated, applied only on request, each fixing its bug.

Each test of a patch first shows the upstream bug on the installed versions (so the test
fails, and says the patch can go, once a release fixes it), then the patched behaviour.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import patches
from llava_star.eval_tasks import tasks_dir
from patches import PATCH_MODULES, Patch, applies, apply_patches

lmms_eval = pytest.importorskip("lmms_eval", reason="the eval extra is not installed")

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTED = {"lmms_eval": "0.7.3", "transformers": "5.23.0"}


def test_the_patches_and_what_they_touch():
    touched = {patch.name: dict(patch.tested) for patch in patches.load_patches()}
    both = {"lmms_eval": ("0.7.3",), "transformers": ("5.23.0",)}
    assert touched == {
        "lmms_eval_exit_status": {"lmms_eval": ("0.7.3",)},
        "llava_hf_device_map": both,
        "llava_hf_chat_inputs": both,
        "video_llava_read_video": both,
        "huggingface_model_class": both,
        "huggingface_chat_inputs": both,
    }


@pytest.mark.parametrize("module", PATCH_MODULES)
def test_each_patch_names_its_bug_and_when_to_delete_it(module):
    doc = importlib.import_module(module).__doc__
    assert "bug" in doc.lower() and "Delete when" in doc, module


def test_a_patch_is_skipped_on_other_versions():
    calls = []
    patch = Patch("x", {"lmms_eval": ("0.7.3",), "transformers": ("5.23.0",)}, lambda: calls.append(1))
    assert applies(patch, TESTED.get)
    assert not applies(patch, {**TESTED, "transformers": "5.24.0"}.get)
    assert not applies(patch, {"transformers": "5.23.0"}.get)  # lmms-eval not installed
    assert apply_patches({"lmms_eval": "0.8.0", "transformers": "5.23.0"}.get) == [] and calls == []


def test_nothing_is_patched_on_import():
    """Importing llava_star, its tasks and its adapter leaves lmms-eval as shipped."""
    code = (
        "import llava_star, llava_star.eval_tasks.hooks, llava_star.eval_tasks.lmms_adapter, patches\n"
        "import lmms_eval.__main__ as cli\n"
        "from lmms_eval.models.simple import video_llava\n"
        "print(hasattr(cli.cli_evaluate, '_llava_star_exit_status'), "
        "hasattr(video_llava.read_video, '_llava_star_positional_num_frm'))\n"
        "patches.apply_patches()\n"
        "print(hasattr(cli.cli_evaluate, '_llava_star_exit_status'), "
        "hasattr(video_llava.read_video, '_llava_star_positional_num_frm'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=True
    ).stdout.split("\n")
    assert [line for line in out if line.startswith(("True", "False"))] == ["False False", "True True"]


@pytest.mark.slow
@pytest.mark.parametrize(("launcher", "status"), [(["-m", "lmms_eval"], 0), (["-m", "patches.lmms_eval"], 1)])
def test_a_crashed_evaluation_exits_1_with_the_patch(tmp_path, launcher, status):
    """lmms_eval_exit_status: lmms-eval 0.7.3 exits 0 after "Error during evaluation"."""
    command = [sys.executable, *launcher, "--model", "qwen2_vl", "--model_args", "pretrained=x,not_an_argument=1"]
    command += ["--tasks", "star_qa", "--include_path", str(tasks_dir()), "--output_path", str(tmp_path / "out")]
    env = dict(os.environ, HF_HUB_OFFLINE="1", LMMS_EVAL_DATASETS_CACHE=str(tmp_path / "cache"))
    completed = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert "Error during evaluation" in completed.stdout + completed.stderr
    assert completed.returncode == status, completed.stderr[-2000:]


@pytest.fixture(scope="module")
def stamped_video(tmp_path_factory):
    from frame_numbers import stamped_frames

    from llava_star.media.encode import write_video

    return write_video(tmp_path_factory.mktemp("stamped") / "v.mp4", stamped_frames(range(40), 64), fps=10)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from llava_star.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny_model(family, root / family) for family in ("llava_onevision", "qwen2_5_vl")}


def test_video_llava_read_video(stamped_video):
    from frame_numbers import read_stamps
    from lmms_eval.models.model_utils import load_video
    from lmms_eval.models.simple import video_llava

    with pytest.raises(TypeError, match="positional argument"):
        load_video.read_video(str(stamped_video), 8)  # how the wrapper calls it
    apply_patches()
    frames = video_llava.read_video(str(stamped_video), 8)
    assert np.array_equal(frames, load_video.read_video(str(stamped_video), num_frm=8))
    assert read_stamps(frames) == [0, 5, 11, 16, 22, 27, 33, 39]


def test_llava_hf_loads_with_the_default_device_map(tiny_models):
    from lmms_eval.models.simple.llava_hf import LlavaHf
    from transformers import LlavaOnevisionForConditionalGeneration

    with pytest.raises(ValueError, match="device_map"):
        LlavaOnevisionForConditionalGeneration.from_pretrained(tiny_models["llava_onevision"], device_map="")
    apply_patches()
    wrapper = LlavaHf(pretrained=str(tiny_models["llava_onevision"]), device="cpu")
    assert wrapper.model.device.type == "cpu" and wrapper.device_map == "cpu"


def _video_prompt(processor) -> str:
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
def test_chat_wrappers_processor_inputs(tiny_models, stamped_video, family):
    """llava_hf_chat_inputs, huggingface_chat_inputs: what the chat wrappers pass the processor."""
    from lmms_eval.models.model_utils.load_video import read_video
    from transformers import AutoProcessor

    from patches._processor import FixedInputsProcessor

    processor = AutoProcessor.from_pretrained(tiny_models[family])
    text = _video_prompt(processor)
    as_the_wrapper_calls = {"images": [], "videos": [str(stamped_video)], "audios": []}
    with pytest.raises((IndexError, ValueError, ImportError)):  # images=[] / audios= / a path without torchcodec
        processor(text=[text], return_tensors="pt", **as_the_wrapper_calls)
    decode = lambda path: read_video(path, num_frm=8)
    patched = FixedInputsProcessor(processor, decode)(text=[text], return_tensors="pt", **as_the_wrapper_calls)
    expected = processor(text=[text], videos=[decode(str(stamped_video))], return_tensors="pt")
    assert set(patched) == set(expected)
    for key in expected:
        assert np.array_equal(patched[key].numpy(), expected[key].numpy()), key


def test_huggingface_wrapper_loads_the_generative_class(tiny_models):
    from lmms_eval.models.chat import huggingface
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(tiny_models["qwen2_5_vl"])
    # the wrapper's test: a model type string among config classes, never found
    assert config.model_type not in list(AutoModelForImageTextToText._model_mapping.keys())
    apply_patches()
    model = huggingface.AutoModel.from_pretrained(tiny_models["qwen2_5_vl"])
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
