"""Training examples: assistant-only labels after video-token expansion, truncation that
keeps media whole, padding, and unreadable videos reported instead of substituted."""

import json

import pytest

from llava_star.errors import RecordError
from llava_star.models.tiny import FAMILIES, build_tiny_model
from llava_star.training_data import (
    IGNORE_INDEX,
    ConversationDataset,
    ExampleSettings,
    PaddingCollator,
    UnusableSample,
    encode_example,
    media_token_ids,
)

torch = pytest.importorskip("torch")

TWO_TURNS = {
    "id": "two-turns",
    "video": "videos/synthetic-00000.mp4",
    "conversations": [
        {"from": "human", "value": "<video>\nWhat colour is the object?"},
        {"from": "gpt", "value": "The object is red."},
        {"from": "human", "value": "Are you sure?"},
        {"from": "gpt", "value": "Yes, it stays red in every frame."},
    ],
}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def processors(tmp_path_factory):
    from transformers import AutoProcessor

    root = tmp_path_factory.mktemp("tiny")
    return {family: AutoProcessor.from_pretrained(build_tiny_model(family, root / family)) for family in FAMILIES}


@pytest.fixture(scope="module")
def frames(synthetic_dataset):
    from llava_star.video import read_frames

    return read_frames(synthetic_dataset.root / TWO_TURNS["video"], 8)


def runs(mask):
    """Maximal runs of True in a boolean list, as (start, end) pairs."""
    spans, start = [], None
    for position, flag in enumerate([*mask, False]):
        if flag and start is None:
            start = position
        if not flag and start is not None:
            spans.append((start, position))
            start = None
    return spans


@pytest.mark.parametrize("family", FAMILIES)
def test_only_assistant_tokens_are_labelled_after_video_expansion(processors, frames, family):
    processor = processors[family]
    example = encode_example(processor, TWO_TURNS, frames, model_max_length=4096)
    input_ids, labels = example["input_ids"].tolist(), example["labels"].tolist()
    assert len(input_ids) == len(labels) == len(example["attention_mask"])
    video_positions = [i for i, token in enumerate(input_ids) if token == processor.video_token_id]
    assert len(video_positions) > 1, "the processor expands <video> into many tokens"
    labelled = [label != IGNORE_INDEX for label in labels]
    assert all(labels[i] == input_ids[i] for i in range(len(labels)) if labelled[i])
    assert not any(labelled[i] for i in video_positions)
    # two assistant turns -> two runs of labels, both after the video, each starting at the answer text
    spans = runs(labelled)
    assert len(spans) == 2 and spans[0][0] > video_positions[-1]
    decode = processor.tokenizer.decode
    first, second = (decode(input_ids[start:end]) for start, end in spans)
    assert first.strip().startswith("The object is red.")
    assert second.strip().startswith("Yes, it stays red in every frame.")
    for text in (first, second):  # the end-of-turn token is learned (so the model stops), nothing of the user turn
        assert text.strip() not in ("The object is red.", "Yes, it stays red in every frame.")
        assert "sure" not in text.lower() and "colour" not in text.lower()
    # everything between and before the runs is the prompt: the user turns are not learned
    assert "Are you sure?" in decode(input_ids[spans[0][1] : spans[1][0]])


@pytest.mark.parametrize("family", ["video_llava", "qwen2_vl"])
def test_truncation_keeps_media_tokens_whole(processors, frames, family):
    processor = processors[family]
    full = encode_example(processor, TWO_TURNS, frames, model_max_length=4096)
    ids = full["input_ids"].tolist()
    last_media = max(i for i, token in enumerate(ids) if token in media_token_ids(processor))
    first_label = next(i for i, label in enumerate(full["labels"].tolist()) if label != IGNORE_INDEX)
    cut = first_label + 2
    truncated = encode_example(processor, TWO_TURNS, frames, model_max_length=cut)
    assert truncated["input_ids"].tolist() == ids[:cut]
    assert truncated["labels"].tolist() == full["labels"].tolist()[:cut]
    assert set(truncated) == set(full)
    with pytest.raises(UnusableSample, match="media tokens end"):
        encode_example(processor, TWO_TURNS, frames, model_max_length=last_media)
    with pytest.raises(UnusableSample, match="no answer token"):
        encode_example(processor, TWO_TURNS, frames, model_max_length=first_label)


def test_collator_pads_right_and_concatenates_media(processors, frames):
    processor = processors["qwen2_vl"]
    short = dict(TWO_TURNS, conversations=TWO_TURNS["conversations"][:2])
    examples = [encode_example(processor, record, frames, 4096) for record in (TWO_TURNS, short)]
    batch = PaddingCollator(pad_token_id=processor.tokenizer.pad_token_id)([examples[0], None, examples[1]])
    lengths = [len(example["input_ids"]) for example in examples]
    assert batch["input_ids"].shape == (2, max(lengths))
    pad = max(lengths) - min(lengths)
    assert batch["attention_mask"][1, -pad:].tolist() == [0] * pad
    assert batch["labels"][1, -pad:].tolist() == [IGNORE_INDEX] * pad
    assert batch["input_ids"][1, -pad:].tolist() == [processor.tokenizer.pad_token_id] * pad
    assert batch["video_grid_thw"].shape == (2, 3)
    assert batch["pixel_values_videos"].shape[0] == 2 * examples[0]["pixel_values_videos"].shape[0]
    empty = PaddingCollator(pad_token_id=0)([None, None])
    assert empty["labels"].tolist() == [[IGNORE_INDEX]]


def test_unreadable_videos_are_reported_and_skipped(processors, synthetic_dataset, tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    good = (synthetic_dataset.root / TWO_TURNS["video"]).read_bytes()
    (root / "good.mp4").write_bytes(good)
    (root / "cut.mp4").write_bytes(good[:200])
    (root / "garbage.mp4").write_bytes(b"not a video" * 100)
    records = [dict(TWO_TURNS, id=name, video=f"{name}.mp4") for name in ("good", "cut", "garbage", "missing")]
    failures = tmp_path / "failures.jsonl"
    settings = ExampleSettings(video_root=str(root), num_frames=8, model_max_length=4096, failures_path=str(failures))
    dataset = ConversationDataset(records, processors["video_llava"], settings)
    items = [dataset[index] for index in range(len(dataset))]
    assert items[0] is not None and items[1:] == [None, None, None]
    lines = [json.loads(line) for line in failures.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["cut", "garbage", "missing"]
    assert all(line["reason"] and line["video"].endswith(".mp4") for line in lines)
    assert "missing.mp4" in lines[2]["reason"]


def test_dataset_refuses_records_it_cannot_train_on(processors):
    settings = ExampleSettings(video_root="videos", num_frames=8, model_max_length=64)
    image = {"id": "img", "image": "a.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]}  # fmt: skip
    with pytest.raises(RecordError, match=r"record 0 \(id 'img'\): image records"):
        ConversationDataset([image], processors["video_llava"], settings)
    with pytest.raises(RecordError, match="video_root"):
        ConversationDataset([TWO_TURNS], processors["video_llava"], ExampleSettings(None, 8, 64))
    with pytest.raises(RecordError, match="video_root: none of the records' videos exist under nowhere"):
        ConversationDataset([TWO_TURNS], processors["video_llava"], ExampleSettings("nowhere", 8, 64))


def test_a_length_limit_below_the_video_tokens_fails_before_training(processors, synthetic_dataset):
    settings = ExampleSettings(video_root=str(synthetic_dataset.root), num_frames=8, model_max_length=16)
    dataset = ConversationDataset([TWO_TURNS], processors["video_llava"], settings)
    with pytest.raises(RecordError, match=r"none of the first 1 records .* media tokens end at position \d+, past model_max_length 16"):
        dataset.check_usable()
    settings = ExampleSettings(video_root=str(synthetic_dataset.root), num_frames=8, model_max_length=4096)
    assert ConversationDataset([TWO_TURNS], processors["video_llava"], settings).check_usable() > 100
