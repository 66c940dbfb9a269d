"""TRL's own GRPOTrainer trains with llava_star.rewards.label_reward (issue 30).

A tiny causal LM whose sampling is restricted to the words " red", " blue" and "." answers
"What colour is the square?" (gold: red, vocabulary red/blue), so its completions earn
both rewards. What TRL logged must equal our verifier's score of the very completions TRL
decoded, with the labels of the rows they answer, and the update must follow those rewards.
"""

from __future__ import annotations

import json
import statistics

import pytest

pytest.importorskip("trl")

LABELS = [{"type": "class", "value": "red", "vocabulary": ["red", "blue"]}]
NUM_GENERATIONS = 4


def tiny_causal_lm():
    import torch
    from tokenizers import AddedToken
    from transformers import LlamaConfig, LlamaForCausalLM

    from llava_star.models.tiny import train_tokenizer

    tokenizer = train_tokenizer(("<s>", "</s>", "<pad>"))
    tokenizer.add_tokens([AddedToken(" red", normalized=False), AddedToken(" blue", normalized=False)])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    return model, tokenizer


@pytest.mark.slow
def test_grpo_trainer_runs_two_steps_on_the_verifiers_reward(tmp_path):
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from llava_star.rewards import label_reward, score

    model, tokenizer = tiny_causal_lm()
    allowed = set(tokenizer(" red blue.")["input_ids"]) | {tokenizer.eos_token_id}
    rows = [{"prompt": "What colour is the square?", "labels": json.dumps(LABELS)}] * 8
    calls = []

    def recorded_label_reward(completions, **columns):
        rewards = label_reward(completions, **columns)
        calls.append({"completions": list(completions), "rewards": rewards, **columns})
        return rewards

    recorded_label_reward.__name__ = "label_reward"  # the name TRL logs the reward under
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=NUM_GENERATIONS,
        num_generations=NUM_GENERATIONS,
        max_completion_length=6,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        seed=0,
        generation_kwargs={"suppress_tokens": [i for i in range(len(tokenizer)) if i not in allowed]},
    )
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[recorded_label_reward],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.train()

    logged = [entry for entry in trainer.state.log_history if "rewards/label_reward/mean" in entry]
    assert len(calls) == len(logged) == 2
    for call, entry in zip(calls, logged, strict=True):
        # TRL's contract as we document it: decoded strings, and every dataset column by keyword
        assert call["completions"] == tokenizer.batch_decode(call["completion_ids"], skip_special_tokens=True)
        assert call["labels"] == [json.dumps(LABELS)] * NUM_GENERATIONS
        assert call["rewards"] == [score(completion, LABELS) for completion in call["completions"]]
        assert entry["rewards/label_reward/mean"] == pytest.approx(statistics.mean(call["rewards"]))
        assert entry["rewards/label_reward/std"] == pytest.approx(statistics.stdev(call["rewards"]), abs=1e-6)
    # mixed rewards in a group give GRPO an advantage to learn from, so the weights moved
    assert any(0.0 < statistics.mean(call["rewards"]) < 1.0 for call in calls)
    moved = [name for name, parameter in model.named_parameters() if not torch.equal(parameter, before[name])]
    assert moved
