"""train --objective dpo: the loss equals TRL's, pairs go through the SFT encoding, DPO steps
raise the held-out margin, and every family trains end to end."""

import json
import math
import sys
from collections import defaultdict
from types import SimpleNamespace

import pytest
from test_generate import config_for, dataset, single_process  # noqa: F401
from test_num_answers import AlternatingSampler
from tiny_model_helpers import one_torch_thread  # noqa: F401 (an autouse fixture)

from llava_star.errors import ConfigError
from llava_star.stages.export import main as export_main
from llava_star.stages.generate import run as generate_run
from llava_star.stages.train import TrainConfig, run

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

FAMILIES = ["video_llava", "llava_next_video", "llava_onevision", "qwen2_vl"]


class PerTokenModel(torch.nn.Module):
    """What TRL's DPOTrainer reads of a forward pass with its fused LM head: given log-probs."""

    def __init__(self, log_probs):
        super().__init__()
        self.log_probs = log_probs

    def forward(self, **_):
        zeros = torch.zeros_like(self.log_probs)
        return SimpleNamespace(log_probs=self.log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def trl_dpo_loss(policy_tokens, reference_tokens, mask, *, beta, sft_weight):
    """TRL 1.16's ``DPOTrainer._compute_loss`` (sigmoid loss, plus its "sft" term) on the given
    per-token log-probabilities, with the reference's precomputed (its ``ref_*_logps`` inputs)."""
    from accelerate import Accelerator
    from trl import DPOTrainer

    trainer = DPOTrainer.__new__(DPOTrainer)
    model = PerTokenModel(policy_tokens)
    settings = {
        "model": model,
        "accelerator": Accelerator(cpu=True),
        "aux_loss_enabled": False,
        "precompute_ref_logps": True,
        "ld_alpha": None,
        "f_divergence_type": "reverse_kl",
        "loss_types": ["sigmoid", "sft"] if sft_weight else ["sigmoid"],
        "loss_weights": [1.0, sft_weight] if sft_weight else [1.0],
        "beta": beta,
        "use_weighting": False,
        "_metrics": {"train": defaultdict(list)},
        "_total_train_tokens": 0,
        "_tp_size": 1,
    }
    for key, value in settings.items():
        setattr(trainer, key, value)
    rows = policy_tokens.shape[0]
    completion = torch.cat([torch.zeros(rows, 1, dtype=torch.long), mask.long()], dim=1)
    reference = reference_tokens.sum(-1)
    inputs = {
        "input_ids": torch.zeros_like(completion),
        "attention_mask": torch.ones_like(completion),
        "completion_mask": completion,
        "ref_chosen_logps": reference[: rows // 2],
        "ref_rejected_logps": reference[rows // 2 :],
    }
    loss = trainer._compute_loss(model, inputs, return_outputs=False)
    return loss, {key: values[-1] for key, values in trainer._metrics["train"].items()}


@pytest.mark.parametrize("sft_weight", [0.0, 0.3])
@pytest.mark.parametrize("beta", [0.1, 2.0])
def test_the_loss_equals_trls_on_the_same_log_probabilities(beta, sft_weight):
    from trl.trainer.utils import selective_log_softmax

    from llava_star.training.dpo import preference_loss, token_log_probs

    generator = torch.Generator().manual_seed(0)
    pairs, length, vocabulary = 3, 9, 11
    labels = torch.randint(0, vocabulary, (2 * pairs, length), generator=generator)
    labels[:, :4] = -100  # the prompt
    labels[1, 7:] = labels[4, 6:] = -100  # padding of shorter answers
    policy_logits = torch.randn(2 * pairs, length, vocabulary, generator=generator) * 3
    reference_logits = torch.randn(2 * pairs, length, vocabulary, generator=generator) * 3
    policy, mask = token_log_probs(policy_logits, labels)
    reference, _ = token_log_probs(reference_logits, labels)
    # the per-token values are TRL's selective log-softmax of the next token
    expected = selective_log_softmax(policy_logits[:, :-1], labels[:, 1:].clamp(min=0)) * mask
    torch.testing.assert_close(policy, expected)

    ours, figures = preference_loss(policy, reference, mask, beta=beta, sft_weight=sft_weight)
    theirs, their_figures = trl_dpo_loss(policy, reference, mask, beta=beta, sft_weight=sft_weight)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen"):
        assert figures[key] == pytest.approx(their_figures[key], rel=1e-5, abs=1e-6), key
    assert ours.item() != pytest.approx(math.log(2), abs=1e-3)  # the pairs are not trivially tied


@pytest.fixture(scope="module")
def pairs(dataset, tmp_path_factory):  # noqa: F811
    """Pairs of the stand-in sampler (tests/test_export_dpo.py): 24 questions, one pair each;
    the first 16 to train on, the last 8 held out."""
    out = tmp_path_factory.mktemp("pairs")
    generate_run(config_for(dataset, out / "gen", num_answers=2, temperature=0.7), answerer=AlternatingSampler())
    export_main([str(out / "gen"), "-o", str(out / "pairs.json"), "--format", "dpo"])
    rows = sorted(json.loads((out / "pairs.json").read_text()), key=lambda row: row["id"])
    (out / "train.json").write_text(json.dumps(rows[:16]))
    (out / "held_out.json").write_text(json.dumps(rows[16:]))
    return out


def test_a_pair_is_encoded_as_the_sft_records_of_its_two_answers(tiny_model, pairs, dataset):  # noqa: F811
    from llava_star.llava_json import video_turns
    from llava_star.models.loading import load_model
    from llava_star.training.data import ConversationDataset, ExampleSettings
    from llava_star.training.dpo import PairDataset, load_pairs

    processor = load_model(str(tiny_model)).processor
    settings = ExampleSettings(video_root=str(dataset), num_frames=4, model_max_length=2048)
    (pair,) = load_pairs([str(pairs / "held_out.json")])[:1]
    question = pair["prompt"][0]["content"][1]["text"]
    sft = ConversationDataset(
        [
            {
                "id": "c",
                "video": pair["video"],
                "conversations": video_turns(question, pair["chosen"][0]["content"][0]["text"]),
            },
            {
                "id": "r",
                "video": pair["video"],
                "conversations": video_turns(question, pair["rejected"][0]["content"][0]["text"]),
            },
        ],
        processor,
        settings,
    )
    encoded = PairDataset([pair], processor, settings)[0]
    for side, index in (("chosen", 0), ("rejected", 1)):
        expected = sft[index]
        assert encoded[side].keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(encoded[side][key], value), (side, key)


def held_out_margins(model_dir, pairs_file, video_root):
    """Each held-out pair's log p(chosen) - log p(rejected) under a model."""
    from llava_star.models.loading import load_model
    from llava_star.training.data import ExampleSettings, PaddingCollator
    from llava_star.training.dpo import PairCollator, PairDataset, load_pairs, token_log_probs

    loaded = load_model(str(model_dir))
    settings = ExampleSettings(video_root=str(video_root), num_frames=4, model_max_length=2048)
    pair_data = PairDataset(load_pairs([str(pairs_file)]), loaded.processor, settings)
    batch = PairCollator(PaddingCollator(pad_token_id=loaded.processor.tokenizer.pad_token_id or 0))(
        [pair_data[i] for i in range(len(pair_data))]
    )
    with torch.no_grad():
        logits = loaded.model(**{key: value for key, value in batch.items() if key != "labels"}).logits
    tokens, _ = token_log_probs(logits, batch["labels"])
    chosen, rejected = tokens.sum(-1).chunk(2)
    return (chosen - rejected).tolist()


@pytest.mark.slow
def test_dpo_steps_raise_the_held_out_margin(tiny_model, pairs, dataset, tmp_path):  # noqa: F811
    config = TrainConfig(
        model=str(tiny_model),
        data=(str(pairs / "train.json"),),
        video_root=str(dataset),
        output_dir=str(tmp_path / "dpo"),
        objective="dpo",
        max_steps=6,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        per_device_train_batch_size=2,
        num_frames=4,
        dataloader_num_workers=0,
    )
    summary = run(config)
    before = held_out_margins(tiny_model, pairs / "held_out.json", dataset)
    after = held_out_margins(tmp_path / "dpo", pairs / "held_out.json", dataset)
    mean_before, mean_after = sum(before) / len(before), sum(after) / len(after)
    print(f"held-out margin before {mean_before:.3f}, after {mean_after:.3f}; train margins {summary['dpo_margins']}")
    assert mean_after > mean_before + 1.0
    assert sum(b < a for b, a in zip(before, after)) == len(before)
    assert summary["losses"][0] == pytest.approx(math.log(2), abs=1e-5)  # the policy starts as its reference


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_train_objective_dpo_runs_for_every_family(family, lora, pairs, dataset, tmp_path):  # noqa: F811
    from llava_star.models.loading import load_model
    from llava_star.models.tiny import build_tiny_model

    model = build_tiny_model(family, tmp_path / family)
    extra = {"lora": True, "freeze_projector": True, "lora_r": 8, "lora_alpha": 16} if lora else {}
    summary = run(
        TrainConfig(
            model=str(model),
            data=(str(pairs / "train.json"),),
            video_root=str(dataset),
            output_dir=str(tmp_path / "out"),
            objective="dpo",
            max_steps=2,
            learning_rate=1e-3,
            warmup_ratio=0.0,
            per_device_train_batch_size=2,
            num_frames=4,
            dataloader_num_workers=0,
            **extra,
        )
    )
    # step 1: the policy is its reference (LoRA's B starts at zero), so the loss is log 2 and the rewards 0
    assert summary["losses"][0] == pytest.approx(math.log(2), abs=1e-5)
    assert summary["dpo_margins"][0] == pytest.approx(0.0, abs=1e-5)
    assert summary["objective"] == "dpo" and summary["global_step"] == 2 and summary["dpo_margins"][1] != 0.0
    assert load_model(str(tmp_path / "out")).family == family


def test_dpo_with_lora_must_train_only_the_adapters():
    with pytest.raises(ConfigError, match="only the adapters may train: set freeze_projector"):
        TrainConfig(model="m", data=("d.json",), output_dir="o", objective="dpo", lora=True)
    with pytest.raises(ConfigError, match="objective: expected one of sft, dpo, got 'ppo'"):
        TrainConfig(model="m", data=("d.json",), output_dir="o", objective="ppo")


def dpo_settings(model, pairs, video_root, output, **changes):
    return {
        "model": str(model),
        "data": [str(pairs / "train.json")],
        "video_root": str(video_root),
        "output_dir": str(output),
        "objective": "dpo",
        "max_steps": 3,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "per_device_train_batch_size": 2,
        "num_frames": 4,
        "dataloader_num_workers": 0,
        **changes,
    }


@pytest.mark.slow
@pytest.mark.parametrize("zero, lora", [("zero2", False), ("zero3", False), ("zero3", True)])
def test_dpo_under_deepspeed_trains_as_without_it(zero, lora, tiny_model, pairs, dataset, tmp_path):  # noqa: F811
    """One DeepSpeed process (CPU, gloo) against the same run without DeepSpeed: the same
    losses and margins. ZeRO-2 holds the reference beside the engine, ZeRO-3 partitions it
    in an engine of its own; with LoRA the reference is the model with its adapters off."""
    from pathlib import Path

    from tiny_model_helpers import REPO, run_command, single_process_env

    pytest.importorskip("deepspeed")
    lora = {"lora": True, "freeze_projector": True, "lora_r": 8, "lora_alpha": 16} if lora else {}
    plain = run(TrainConfig(**dpo_settings(tiny_model, pairs, dataset, tmp_path / "plain", **lora)))
    settings = dpo_settings(
        tiny_model, pairs, dataset, tmp_path / zero, deepspeed=str(REPO / "scripts" / f"{zero}.json"), **lora
    )
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(settings))
    run_command([sys.executable, "-m", "llava_star", "train", "--config", str(config)], tmp_path, single_process_env())
    sharded = json.loads((Path(settings["output_dir"]) / "train_summary.json").read_text())
    assert sharded["deepspeed_enabled"] and sharded["deepspeed_stage"] == int(zero[-1])
    assert sharded["losses"] == pytest.approx(plain["losses"], abs=1e-5)
    assert sharded["dpo_margins"] == pytest.approx(plain["dpo_margins"], abs=1e-5)
    assert plain["dpo_margins"][-1] > 0.01  # the runs learned enough to tell a wrong update
