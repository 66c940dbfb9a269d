"""Several answers per question (generate --num-answers): every answer verified and recorded,
the first passing one trained, failed direct answers kept beside the rationalized ones."""

import json
import re

import pytest
from test_generate import COLOURS, colour_frames, config_for, dataset, read_all, single_process  # noqa: F401
from tiny_model_helpers import in_memory_frames, one_torch_thread  # noqa: F401 (an autouse fixture)

from llava_star.errors import ConfigError
from llava_star.records import Generation
from llava_star.stages.generate import Reply, run
from llava_star.stages.generate import main as generate_main

torch = pytest.importorskip("torch")


class AlternatingSampler:
    """A stand-in sampler: the n-th time it is asked a direct question it names blue, then
    green, then blue...; given a hint it repeats the hint. So with 2 answers per question a
    blue or green sample passes once and fails once, and a red or yellow one fails twice and
    is rationalized."""

    def __init__(self):
        self.asked: dict[str, int] = {}
        self.prompts = []

    def replies(self, prompts, videos):
        self.prompts.extend(prompts)
        out = []
        for prompt in prompts:
            hint = re.search(r"\nAnswer: (.+)\.\n", prompt)
            turn = self.asked.get(prompt, 0)
            self.asked[prompt] = turn + 1
            colour = hint.group(1) if hint else ("blue", "green")[turn % 2]
            out.append(Reply(f"The square is {colour} in every frame. So it is {colour}."))
        return out


def test_num_answers_needs_sampling_and_says_why(dataset, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match=r"num_answers: 4 answers per question need sampling \(--temperature > 0\)"):
        config_for(dataset, tmp_path, num_answers=4)
    argv = ["--model", "m", "--samples", str(dataset / "samples.jsonl"), "--video-root", str(dataset), "-o"]
    with pytest.raises(ConfigError, match="need sampling"):
        generate_main([*argv, str(tmp_path), "--num-answers", "2"])


def test_every_answer_is_recorded_and_the_first_passing_one_is_trained(dataset, tmp_path):  # noqa: F811
    answerer = AlternatingSampler()
    summary = run(config_for(dataset, tmp_path, num_answers=2, temperature=0.7), answerer=answerer)
    lines = {line["id"]: line for line in read_all(tmp_path)}
    assert len(lines) == 24 and summary["kept"] == 24
    for line in lines.values():
        colour = line["labels"][0]["value"]
        said = [re.search(r"square is (\w+)", answer["answer"]).group(1) for answer in line["answers"]]
        if colour in ("blue", "green"):  # one of the two direct answers passed: no hint asked
            assert said == ["blue", "green"]
            assert [a["passed"] for a in line["answers"]] == [colour == "blue", colour == "green"]
            assert not line["rationalized"] and not any(a["rationalized"] for a in line["answers"])
        else:  # both failed: rationalized twice, the failed direct answers kept first
            assert said == ["blue", "green", colour, colour]
            assert [(a["rationalized"], a["passed"]) for a in line["answers"]] == [
                (False, False),
                (False, False),
                (True, True),
                (True, True),
            ]
            assert line["rationalized"]
        assert line["answer"] == next(a["answer"] for a in line["answers"] if a["passed"])
        assert line["passed"] and "Answer:" not in json.dumps({k: v for k, v in line.items() if k != "answers"})
        assert all(a["checks"][-1]["type"] == "class" for a in line["answers"])
        assert Generation.from_dict(line).to_dict() == line
    # 24 questions twice, then the 12 red/yellow ones twice with the hint
    assert len([p for p in answerer.prompts if "\nAnswer: " in p]) == 24 and len(answerer.prompts) == 72


def test_one_answer_records_a_failed_direct_answer_beside_the_rationalized_one(dataset, tmp_path):  # noqa: F811
    run(config_for(dataset, tmp_path), answerer=AlternatingSampler())
    for line in read_all(tmp_path):
        if line["labels"][0]["value"] == "blue":  # passed directly: one answer, no list
            assert "answers" not in line and not line["rationalized"]
        else:
            assert [(a["rationalized"], a["passed"]) for a in line["answers"]] == [(False, False), (True, True)]
            assert line["answers"][0]["answer"] == "The square is blue in every frame. So it is blue."
            assert line["answers"][1]["answer"] == line["answer"]


def test_a_resumed_run_with_several_answers_writes_the_same_lines(dataset, tmp_path):  # noqa: F811
    run(config_for(dataset, tmp_path / "whole", num_answers=2, temperature=0.7), answerer=AlternatingSampler())
    run(config_for(dataset, tmp_path / "part", num_answers=2, temperature=0.7, limit=10), answerer=AlternatingSampler())
    run(config_for(dataset, tmp_path / "part", num_answers=2, temperature=0.7), answerer=AlternatingSampler())
    whole = sorted(read_all(tmp_path / "whole"), key=lambda line: line["id"])
    assert sorted(read_all(tmp_path / "part"), key=lambda line: line["id"]) == whole


@pytest.mark.parametrize("family", ["video_llava", "llava_next_video", "llava_onevision", "qwen2_vl", "qwen2_5_vl"])
def test_hf_sampling_returns_each_prompts_answers_together(tmp_path, family):
    """Near-zero temperature samples the greedy answer: K copies of each prompt's own greedy
    answer, in prompt order (the video inputs are expanded with the prompts)."""
    from llava_star.generation.answerer import ModelAnswerer
    from llava_star.models.loading import load_model
    from llava_star.models.tiny import build_tiny_model

    loaded = load_model(build_tiny_model(family, tmp_path / family))
    prompts = ["What colour?", "What colour is the large square in the middle of the video?"]
    videos = [in_memory_frames(colour_frames(rgb, count=4, seed=i)) for i, rgb in enumerate(COLOURS.values())][:2]
    greedy = ModelAnswerer(loaded, max_new_tokens=8).replies(prompts, videos)
    near_greedy = ModelAnswerer(loaded, max_new_tokens=8, temperature=1e-6).several_replies(prompts, videos, 3)
    assert near_greedy == [[greedy[0]] * 3, [greedy[1]] * 3]
    sampled = ModelAnswerer(loaded, max_new_tokens=8, temperature=1.0).several_replies(prompts, videos, 3)
    assert [len(replies) for replies in sampled] == [3, 3]
    assert len({reply.text for reply in sampled[0]}) > 1  # sampled apart, not one answer copied


@pytest.mark.slow
@pytest.mark.parametrize("family", ["video_llava", "llava_next_video", "llava_onevision", "qwen2_vl"])
def test_generate_num_answers_4_end_to_end(dataset, tmp_path, family):  # noqa: F811
    from llava_star.models.tiny import build_tiny_model

    model = build_tiny_model(family, tmp_path / family)
    argv = ["--model", str(model), "--samples", str(dataset / "samples.jsonl"), "--video-root", str(dataset)]
    argv += ["-o", str(tmp_path / "out"), "--limit", "4", "--num-frames", "4", "--max-new-tokens", "6"]
    assert generate_main([*argv, "--num-answers", "4", "--temperature", "0.7", "--num-workers", "0"]) == 0
    lines = read_all(tmp_path / "out")
    assert len(lines) == 4
    for line in lines:  # a random tiny model never passes: 4 direct, then 4 rationalized answers
        assert [(a["rationalized"], a["passed"]) for a in line["answers"]] == [(False, False)] * 4 + [(True, False)] * 4
        assert line["answer"] == line["answers"][4]["answer"] and line["rationalized"]
