"""Training examples: assistant-only labels after video- and image-token expansion, text-only
records, truncation that keeps media whole, padding of mixed batches, and unreadable videos
and images reported instead of substituted."""

import json

import numpy as np
import pytest

from llava_star.errors import RecordError
from llava_star.models.tiny import FAMILIES, build_tiny_model
from llava_star.training.data import (
    IGNORE_INDEX,
    ConversationDataset,
    ExampleSettings,
    FailedSample,
    MediaGroupedSampler,
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


IMAGE_RECORD = {  # LLaVA-665K style: the placeholder after the question, two turns
    "id": "image-two-turns",
    "image": "coco/000000033471.png",
    "conversations": [
        {"from": "human", "value": "What shape is in the picture?\n<image>"},
        {"from": "gpt", "value": "A circle and a square."},
        {"from": "human", "value": "Which one is larger?"},
        {"from": "gpt", "value": "The square is larger."},
    ],
}
TEXT_RECORD = {
    "id": "text-only",
    "conversations": [
        {"from": "human", "value": "Say yes or no."},
        {"from": "gpt", "value": "Yes."},
        {"from": "human", "value": "Why?"},
        {"from": "gpt", "value": "Because the answer is yes."},
    ],
}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny_model(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def processors(tiny_dirs):
    from transformers import AutoProcessor

    return {family: AutoProcessor.from_pretrained(path) for family, path in tiny_dirs.items()}


@pytest.fixture(scope="module")
def image():
    """RGB, another size and aspect than the video frames."""
    return np.random.default_rng(3).integers(0, 256, (24, 40, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory, image):
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    (root / "coco").mkdir()
    Image.fromarray(image).save(root / IMAGE_RECORD["image"])
    return root


@pytest.fixture(scope="module")
def frames(synthetic_dataset):
    from llava_star.media.video import read_frames

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
    assert isinstance(items[0], dict) and items[1:] == [FailedSample("video")] * 3
    lines = [json.loads(line) for line in failures.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["cut", "garbage", "missing"]
    assert all(line["reason"] and line["video"].endswith(".mp4") for line in lines)
    assert "missing.mp4" in lines[2]["reason"]


def test_dataset_refuses_records_it_cannot_train_on(processors, image_root):
    settings = ExampleSettings(video_root="videos", num_frames=8, model_max_length=64)
    two_images = {
        "id": "img",
        "image": ["a.jpg", "b.jpg"],
        "conversations": [
            {"from": "human", "value": "<image>\n<image>\nWhat is it?"},
            {"from": "gpt", "value": "A cat."},
        ],
    }
    with pytest.raises(RecordError, match=r"record 0 \(id 'img'\): 2 images; training takes at most one image"):
        ConversationDataset([two_images], processors["video_llava"], settings)
    with pytest.raises(RecordError, match=r"image_root: 1 records name images \(e.g. 'coco/000000033471.png'\)"):
        ConversationDataset([IMAGE_RECORD], processors["video_llava"], settings)
    with pytest.raises(RecordError, match="image_root: none of the records' images exist under nowhere"):
        ConversationDataset(
            [IMAGE_RECORD], processors["video_llava"], ExampleSettings(None, 8, 64, image_root="nowhere")
        )
    # text-only records need no folder at all
    assert (
        ConversationDataset([TEXT_RECORD], processors["video_llava"], ExampleSettings(None, 8, 4096))[0][
            "input_ids"
        ].numel()
        > 0
    )
    with pytest.raises(RecordError, match="video_root"):
        ConversationDataset([TWO_TURNS], processors["video_llava"], ExampleSettings(None, 8, 64))
    with pytest.raises(RecordError, match="video_root: none of the records' videos exist under nowhere"):
        ConversationDataset([TWO_TURNS], processors["video_llava"], ExampleSettings("nowhere", 8, 64))


def test_a_length_limit_below_the_video_tokens_fails_before_training(processors, synthetic_dataset):
    settings = ExampleSettings(video_root=str(synthetic_dataset.root), num_frames=8, model_max_length=16)
    dataset = ConversationDataset([TWO_TURNS], processors["video_llava"], settings)
    with pytest.raises(
        RecordError, match=r"none of the first 1 records .* media tokens end at position \d+, past model_max_length 16"
    ):
        dataset.usable_example_of_each_kind()
    settings = ExampleSettings(video_root=str(synthetic_dataset.root), num_frames=8, model_max_length=4096)
    examples = ConversationDataset([TWO_TURNS], processors["video_llava"], settings).usable_example_of_each_kind()
    assert list(examples) == ["video"] and examples["video"]["input_ids"].numel() > 100


def labelled_runs_and_text(processor, example):
    input_ids, labels = example["input_ids"].tolist(), example["labels"].tolist()
    assert len(input_ids) == len(labels) == len(example["attention_mask"])
    labelled = [label != IGNORE_INDEX for label in labels]
    assert all(labels[i] == input_ids[i] for i in range(len(labels)) if labelled[i])
    spans = runs(labelled)
    return input_ids, spans, [processor.tokenizer.decode(input_ids[start:end]) for start, end in spans]


@pytest.mark.parametrize("family", FAMILIES)
def test_only_assistant_tokens_are_labelled_after_image_expansion(processors, image, family):
    processor = processors[family]
    example = encode_example(processor, IMAGE_RECORD, None, model_max_length=4096, image=image)
    input_ids, spans, texts = labelled_runs_and_text(processor, example)
    image_positions = [i for i, token in enumerate(input_ids) if token == processor.image_token_id]
    assert len(image_positions) > 1, "the processor expands <image> into many tokens"
    assert processor.video_token_id not in input_ids
    assert len(spans) == 2 and spans[0][0] > image_positions[-1]
    assert not any(start <= i < end for i in image_positions for start, end in spans)
    assert texts[0].strip().startswith("A circle and a square.") and texts[0].strip() != "A circle and a square."
    assert texts[1].strip().startswith("The square is larger.") and texts[1].strip() != "The square is larger."
    assert all("picture" not in text and "larger?" not in text for text in texts)
    decode = processor.tokenizer.decode
    assert "What shape is in the picture?" in decode(input_ids[: spans[0][0]])
    assert "Which one is larger?" in decode(input_ids[spans[0][1] : spans[1][0]])
    assert any(key.startswith("pixel_values") and "videos" not in key for key in example)


@pytest.mark.parametrize("family", FAMILIES)
def test_only_assistant_tokens_are_labelled_in_a_text_only_record(processors, family):
    processor = processors[family]
    example = encode_example(processor, TEXT_RECORD, None, model_max_length=4096)
    input_ids, spans, texts = labelled_runs_and_text(processor, example)
    assert not media_token_ids(processor) & set(input_ids)
    assert not any(key.startswith("pixel_values") for key in example)
    assert len(spans) == 2
    assert texts[0].strip().startswith("Yes.") and "Why" not in texts[0]
    assert texts[1].strip().startswith("Because the answer is yes.")
    decode = processor.tokenizer.decode
    assert "Say yes or no." in decode(input_ids[: spans[0][0]]) and "Why?" in decode(
        input_ids[spans[0][1] : spans[1][0]]
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_a_collated_mixed_batch_equals_the_processor_batch(tiny_dirs, processors, frames, image, family):
    """Examples encoded one by one (as DataLoader workers do) and collated give the loss the
    model gets from the same records processed as one batch: media meet their placeholders."""
    from transformers import AutoModelForImageTextToText

    from llava_star.models.inputs import build_inputs, from_llava_turns

    processor = processors[family]
    model = AutoModelForImageTextToText.from_pretrained(tiny_dirs[family]).eval()
    records = [TEXT_RECORD, IMAGE_RECORD, TWO_TURNS, TEXT_RECORD]
    videos = [None, None, frames, None]
    images = [None, image, None, None]
    examples = [encode_example(processor, r, v, 4096, image=i) for r, v, i in zip(records, videos, images)]
    collated = PaddingCollator(pad_token_id=processor.tokenizer.pad_token_id)(examples)
    together = build_inputs(
        processor,
        [from_llava_turns(r["conversations"]) for r in records],
        videos,
        images=images,
        add_generation_prompt=False,
        assistant_spans=True,
        padding_side="right",
    )
    assert torch.equal(collated["input_ids"], together.batch["input_ids"])
    assert torch.equal(collated["labels"], together.labels(IGNORE_INDEX))
    assert set(collated) == set(together.batch) | {"labels"}
    with torch.no_grad():
        loss = model(**collated).loss
        expected = model(**together.batch, labels=together.labels(IGNORE_INDEX)).loss
    assert torch.isfinite(loss) and torch.allclose(loss, expected, atol=1e-5)
    text_only = PaddingCollator(pad_token_id=processor.tokenizer.pad_token_id)([examples[0], None, examples[3]])
    assert not any(key.startswith("pixel_values") for key in text_only)
    with torch.no_grad():
        assert torch.isfinite(model(**text_only).loss)


def test_image_crops_are_padded_when_images_differ_in_crops():
    from llava_star.training.data import _stack_media

    few, many = torch.ones(1, 2, 3, 4, 4), torch.ones(1, 5, 3, 4, 4)
    stacked = _stack_media("pixel_values", [few, many])
    assert stacked.shape == (2, 5, 3, 4, 4) and stacked[0, 2:].abs().sum() == 0 and stacked[1].sum() == 5 * 48
    with pytest.raises(RecordError, match="pixel_values_videos: per-sample tensors of shapes"):
        _stack_media("pixel_values_videos", [torch.ones(1, 4, 3, 4, 4), torch.ones(1, 2, 3, 4, 4)])


def test_unreadable_images_are_reported_and_skipped(processors, image_root, tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    good = (image_root / IMAGE_RECORD["image"]).read_bytes()
    (root / "good.png").write_bytes(good)
    (root / "cut.png").write_bytes(good[: len(good) // 2])
    (root / "garbage.jpg").write_bytes(b"not an image" * 100)
    records = [
        dict(IMAGE_RECORD, id=name, image=name) for name in ("good.png", "cut.png", "garbage.jpg", "missing.jpg")
    ]
    records.append(dict(IMAGE_RECORD, id="escape", image="../images/good.png"))
    failures = tmp_path / "failures.jsonl"
    settings = ExampleSettings(
        None, num_frames=8, model_max_length=4096, failures_path=str(failures), image_root=str(root)
    )
    dataset = ConversationDataset(records, processors["qwen2_vl"], settings)
    items = [dataset[index] for index in range(len(dataset))]
    assert isinstance(items[0], dict) and items[1:] == [FailedSample("image")] * 4
    lines = [json.loads(line) for line in failures.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["cut.png", "garbage.jpg", "missing.jpg", "escape"]
    for line in lines[:3]:  # the reason names the file
        assert line["image"] == line["id"] and str(root / line["id"]) in line["reason"] and line["video"] is None
    assert "no such image file" in lines[2]["reason"] and "image root" in lines[3]["reason"]


def test_doctests():
    import doctest

    import llava_star.llava_json
    import llava_star.media.images
    import llava_star.training.data

    for module in (llava_star.media.images, llava_star.llava_json, llava_star.training.data):
        assert doctest.testmod(module).failed == 0


def test_truncated_image_fails_even_after_lmms_eval_relaxed_pil(image_root, tmp_path):
    """lmms-eval flips PIL's global LOAD_TRUNCATED_IMAGES on import; read_image stays strict."""
    from PIL import ImageFile

    from llava_star.errors import ImageError
    from llava_star.media.images import read_image

    good = (image_root / IMAGE_RECORD["image"]).read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(good[: len(good) // 2])
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # what `import lmms_eval.api.task` does
    try:
        with pytest.raises(ImageError, match="cut.png"):
            read_image(cut)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is put back
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def test_media_grouped_batches_hold_one_kind_on_every_rank_at_every_step():
    """Sharded as accelerate shards it (batch i of each run of `ranks` batches to rank i),
    every step gives all ranks records of one kind; every record comes at least once."""
    kinds = ["video"] * 11 + ["image"] * 4 + ["text"] * 6
    batch_size, ranks = 2, 3
    sampler = MediaGroupedSampler(kinds, group_size=batch_size * ranks, seed=7)
    order = list(sampler)
    assert len(order) == len(sampler) == 12 + 6 + 6 and set(order) == set(range(len(kinds)))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    for step in range(len(batches) // ranks):
        on_ranks = batches[step * ranks : (step + 1) * ranks]
        assert len({kinds[index] for batch in on_ranks for index in batch}) == 1, on_ranks
    assert order == list(MediaGroupedSampler(kinds, batch_size * ranks, seed=7)), "the same on every rank"
    sampler.set_epoch(1)
    again = list(sampler)
    assert again != order and len(again) == len(order) and set(again) == set(order)


def test_a_failed_batch_becomes_a_placeholder_of_its_own_kind(processors, frames, image):
    processor = processors["video_llava"]
    placeholders = {
        "video": encode_example(processor, TWO_TURNS, frames, 4096),
        "image": encode_example(processor, IMAGE_RECORD, None, 4096, image=image),
    }
    collate = PaddingCollator(pad_token_id=0, placeholders=placeholders)
    for kind, media_key in (("video", "pixel_values_videos"), ("image", "pixel_values_images")):
        batch = collate([FailedSample(kind), FailedSample(kind)])
        assert media_key in batch and (batch["labels"] == IGNORE_INDEX).all()
        assert torch.equal(batch["input_ids"][0], placeholders[kind]["input_ids"])
    assert "pixel_values_videos" in collate([FailedSample("text")]), "no text placeholder: another kind"
