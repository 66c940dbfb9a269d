"""The cycle's train.objective: sft | dpo | sft_then_dpo, the pairs and DPO figures it records,
and the report's table of them."""

import json

import pytest
import yaml
from test_generate import dataset, single_process  # noqa: F401
from test_num_answers import AlternatingSampler
from tiny_model_helpers import one_torch_thread  # noqa: F401 (an autouse fixture)

from llava_star.config import load_config
from llava_star.cycle_config import CycleConfig
from llava_star.errors import ConfigError


def cycle_yaml(tmp_path, dataset, model, objective, **train):  # noqa: F811
    data = {
        "model": str(model),
        "samples": str(dataset / "samples.jsonl"),
        "video_root": str(dataset),
        "output_dir": str(tmp_path / "run"),
        "cycles": 1,
        "min_kept_gain": None,
        "generate": {"batch_size": 4, "num_frames": 4, "max_new_tokens": 8, "num_answers": 2, "temperature": 0.7},
        "train": {
            "objective": objective,
            "options": {
                "max_steps": 2,
                "per_device_train_batch_size": 4,
                "learning_rate": 1e-3,
                "dataloader_num_workers": 0,
            },
            "dpo_options": {"max_steps": 3, "learning_rate": 1e-4, "dpo_beta": 0.2},
            **train,
        },
        "eval": {"samples": str(dataset / "samples.jsonl"), "limit": 4, "baseline": False},
    }
    path = tmp_path / "cycle.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_cycle_objective_and_dpo_options_are_checked_when_the_config_loads(tmp_path, dataset):  # noqa: F811
    with pytest.raises(ConfigError, match="train.objective: expected one of sft, dpo, sft_then_dpo, got 'ppo'"):
        load_config(CycleConfig, cycle_yaml(tmp_path, dataset, tmp_path, "ppo"))
    with pytest.raises(ConfigError, match=r"train.dpo_options.objective: is set by train.objective"):
        load_config(CycleConfig, cycle_yaml(tmp_path, dataset, tmp_path, "dpo", dpo_options={"objective": "sft"}))
    with pytest.raises(ConfigError, match=r"train.dpo_options.dpo_beta"):
        load_config(CycleConfig, cycle_yaml(tmp_path, dataset, tmp_path, "dpo", dpo_options={"dpo_beta": -1}))


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["dpo", "sft_then_dpo"])
def test_a_cycle_trains_dpo_on_its_pairs_and_the_report_shows_them(tmp_path, dataset, objective, monkeypatch, capsys):  # noqa: F811
    """Generation by the stand-in sampler (every question gets a passing and a failing answer,
    tests/test_num_answers.py); export, DPO training and evaluation are the real stages."""
    from llava_star.models.tiny import build_tiny_model
    from llava_star.stages import cycle as cycle_stage
    from llava_star.stages.generate import run as generate_run

    monkeypatch.setattr(cycle_stage.generate, "run", lambda config: generate_run(config, answerer=AlternatingSampler()))
    model = build_tiny_model("video_llava", tmp_path / "model").resolve()
    assert cycle_stage.main(["--config", str(cycle_yaml(tmp_path, dataset, model, objective))]) == 0
    printed = capsys.readouterr().out
    stage = tmp_path / "run" / "cycle_1"
    pairs = json.loads((stage / "pairs.json").read_text())
    exported = json.loads((stage / "done" / "export_pairs.json").read_text())
    assert len(pairs) == exported["pairs"] == exported["samples"] == 24  # one pair per question
    assert exported["pairs_chosen_rationalized"] == 12  # the red and yellow questions
    trained = json.loads((stage / "done" / "train.json").read_text())
    assert trained["objective"] == "dpo" and trained["model"] == str(stage / "model")
    assert len(trained["dpo_margins"]) == 3 and trained["dpo_margins"][0] == pytest.approx(0.0, abs=1e-5)
    assert trained["dpo_margin"] == trained["dpo_margins"][-1]
    train_config = json.loads((stage / "model" / "llava_star_train_config.json").read_text())
    assert (train_config["objective"], train_config["max_steps"], train_config["dpo_beta"]) == ("dpo", 3, 0.2)
    if objective == "sft_then_dpo":  # DPO starts from the SFT model, its reference
        sft = json.loads((stage / "done" / "train_sft.json").read_text())
        assert sft["model"] == str(stage / "sft_model") and sft["from"] == str(model)
        assert trained["from"] == str(stage / "sft_model")
    else:
        assert trained["from"] == str(model) and not (stage / "sft_model").exists()
    stats = json.loads((tmp_path / "run" / "report" / "stats.json").read_text())
    (entry,) = [entry for entry in stats["cycles"] if entry["cycle"] == 1 and "preference_pairs" in entry]
    assert entry["preference_pairs"]["pairs"] == 24 and entry["dpo"]["margin"] == trained["dpo_margin"]
    page = (tmp_path / "run" / "report" / "index.html").read_text()
    assert "Preference pairs and DPO" in page and f"{trained['dpo_margin']:.3f}" in page
    assert f"preference pairs: cycle 1: 24 (DPO reward margin {trained['dpo_margin']:.3f})" in printed
