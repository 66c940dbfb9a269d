"""The vLLM test environment is what requirements/lock-vllm.txt says, and its torchvision loads.

PyPI's torchvision 0.28 is a CUDA build; scripts/cuda_stubs.py gives its CUDA dependencies
stand-ins so that it loads beside the CPU torch. These tests fail if that stops working
(``operator torchvision::nms does not exist``) or the environment drifts from its lock.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def test_torchvision_runs_its_compiled_cpu_operators():
    import torch
    from torchvision.ops import nms, roi_align

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    assert nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]
    pooled = roi_align(torch.ones(1, 1, 8, 8), [torch.tensor([[0.0, 0.0, 4.0, 4.0]])], output_size=2)
    assert pooled.shape == (1, 1, 2, 2) and torch.allclose(pooled, torch.ones_like(pooled))


def test_transformers_video_processors_load_with_torchvision():
    from transformers import Qwen2VLVideoProcessor
    from transformers.utils import is_torchvision_available

    assert is_torchvision_available()
    Qwen2VLVideoProcessor()


def test_environment_is_the_vllm_lock():
    pins = {}
    for line in (REPO / "requirements" / "lock-vllm.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    # the two CUDA builds that cannot load beside the CPU torch are removed by `make vllm-env`
    removed = {"torchaudio", "torchcodec"}
    differs = [
        f"{name} {installed.get(name, 'missing')} (lock: {version})"
        for name, version in pins.items()
        if name not in removed and installed.get(name) != version
    ]
    assert not differs, "not the vLLM lock (`make vllm-env`): " + ", ".join(differs)
    assert not removed & installed.keys(), f"{removed & installed.keys()} would fail to load"
