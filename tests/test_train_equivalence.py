"""Training gives the right weights, not just a run that finished: results compared, not
runs counted (issue 24)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_model_helpers import one_torch_thread  # noqa: F401 (an autouse fixture)

from llava_star.models.tiny import build_tiny_model
from llava_star.stages.train import TrainConfig

torch = pytest.importorskip("torch")

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """``tiny_model(family)``: the directory of that family's tiny model, built once."""
    root, built = tmp_path_factory.mktemp("tiny"), {}

    def model(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_model(family, root / family)
        return built[family]

    return model


def max_difference(left: dict, right: dict, keys=None) -> float:
    assert sorted(left) == sorted(right)
    return max(float((left[key].float() - right[key].float()).abs().max()) for key in keys or left)



def test_lora_adapters_start_from_the_configs_seed_whatever_the_global_rng_holds(tiny_model):
    """peft draws lora_A at random; on 30d1d32 it drew from the global RNG as the model was
    wrapped, before the Trainer seeds it, so a ZeRO-3 run (whose partitioned loading draws
    from it first) started from other adapters than the same run without DeepSpeed."""
    pytest.importorskip("peft")
    from llava_star.models.loading import load_model
    from llava_star.stages.train import add_lora

    config = TrainConfig(model="m", data=("d.json",), output_dir="o", lora=True, lora_r=4, lora_alpha=8)
    starts = []
    for global_seed in (1, 2):
        base = load_model(tiny_model("video_llava"), device="cpu").model
        torch.manual_seed(global_seed)
        model = add_lora(base, config)
        assert torch.equal(torch.get_rng_state(), torch.manual_seed(global_seed).get_state())  # left as it was
        starts.append({name: value.clone() for name, value in model.named_parameters() if "lora_A" in name})
    assert starts[0] and max_difference(*starts) == 0.0
    other_seed = add_lora(load_model(tiny_model("video_llava"), device="cpu").model, TrainConfig(**{**config.to_dict(), "seed": 1}))
    assert max_difference(starts[0], {n: v for n, v in other_seed.named_parameters() if "lora_A" in n}) > 0.01
