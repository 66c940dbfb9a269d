"""Tiny models of every family: built offline, loaded, prompted through the chat template."""

import numpy as np
import pytest
from tiny_model_helpers import noise_frames, one_torch_thread  # noqa: F401 (an autouse fixture)

from llava_star.errors import ConfigError
from llava_star.models.families import FAMILIES as FAMILY_FACTS
from llava_star.models.families import family_of
from llava_star.models.inputs import build_inputs, from_llava_turns, video_conversation
from llava_star.models.loading import choose_attention, load_model
from llava_star.models.tiny import FAMILIES, VARIANTS, build_tiny_model
from llava_star.models.tiny import main as tiny_model_main

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny_model(family, root / family) for family in FAMILIES + VARIANTS}


@pytest.mark.parametrize("family", FAMILIES + VARIANTS)
def test_tiny_model_loads_with_auto_classes(tiny_dirs, family):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_dirs[family])
    processor = AutoProcessor.from_pretrained(tiny_dirs[family])
    assert sum(p.numel() for p in model.parameters()) < 300_000
    assert processor.tokenizer.eos_token_id == model.generation_config.eos_token_id
    assert model.config.get_text_config().vocab_size == len(processor.tokenizer)


def test_same_seed_same_weights_and_global_rng_untouched(tmp_path):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = build_tiny_model("video_llava", tmp_path / "a", seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    second = build_tiny_model("video_llava", tmp_path / "b", seed=7)
    other = build_tiny_model("video_llava", tmp_path / "c", seed=8)
    weights = [(path / "model.safetensors").read_bytes() for path in (first, second, other)]
    assert weights[0] == weights[1] != weights[2]


def test_unknown_family_is_refused(tmp_path):
    with pytest.raises(ValueError, match="llava_next"):
        build_tiny_model("llava_next", tmp_path)


def test_cli_writes_a_loadable_model(tmp_path):
    assert tiny_model_main(["qwen2_vl", "-o", str(tmp_path / "m")]) == 0
    assert load_model(tmp_path / "m").family == "qwen2_vl"


def test_attention_falls_back_to_sdpa_without_flash_attn_or_cuda(tiny_dirs):
    loaded = load_model(tiny_dirs["video_llava"], device="cpu")
    assert loaded.model.config._attn_implementation == "sdpa"
    assert choose_attention(None, "cpu") == "sdpa"
    assert choose_attention("eager", "cpu") == "eager"
    with pytest.raises(ConfigError, match="flash_attention_2 needs a CUDA device"):
        choose_attention("flash_attention_2", "cpu")
    with pytest.raises(ConfigError, match="attn_implementation"):
        choose_attention("flash", "cpu")


def test_qwen2_5_vl_loads_as_the_qwen2_vl_family(tiny_dirs):
    loaded = load_model(tiny_dirs["qwen2_5_vl"])
    assert loaded.family == "qwen2_vl" and loaded.model.config.model_type == "qwen2_5_vl"


def test_a_checkpoint_without_chat_template_gets_its_family_template(tmp_path):
    model_dir = build_tiny_model("llava_next_video", tmp_path / "m")
    expected = (model_dir / "chat_template.jinja").read_text()
    (model_dir / "chat_template.jinja").unlink()
    from transformers import AutoProcessor

    assert AutoProcessor.from_pretrained(model_dir).chat_template is None
    loaded = load_model(model_dir)
    assert loaded.processor.chat_template == expected == FAMILY_FACTS["llava_next_video"].chat_template


def test_unsupported_model_type_names_it():
    assert family_of("qwen2_5_vl") == "qwen2_vl"
    with pytest.raises(ConfigError, match="'llama'"):
        family_of("llama")


def test_the_family_table_is_what_the_tiny_models_are():
    """Every tiny model's config.model_type maps to its family; no model type is claimed twice."""
    model_types = [t for family in FAMILY_FACTS.values() for t in family.model_types]
    assert len(model_types) == len(set(model_types))
    assert set(FAMILIES) <= set(FAMILY_FACTS)
    assert all(FAMILY_FACTS[name].videos for name in FAMILIES)  # the tiny models are video models


@pytest.mark.parametrize("family", FAMILIES + VARIANTS)
def test_assistant_mask_covers_the_answer_and_end_of_turn(tiny_dirs, family):
    loaded = load_model(tiny_dirs[family])
    tokenizer = loaded.processor.tokenizer
    answers = ["The shape is red.", "It moves left, then it stops at the edge."]
    conversations = [video_conversation(f"Question {i}?", answer) for i, answer in enumerate(answers)]
    videos = [noise_frames(0), noise_frames(1)]
    for padding_side in ("left", "right"):
        inputs = build_inputs(
            loaded.processor,
            conversations,
            videos,
            add_generation_prompt=False,
            assistant_spans=True,
            padding_side=padding_side,
        )
        for row, answer in enumerate(answers):
            masked = inputs.batch["input_ids"][row][inputs.assistant_mask[row]]
            text = tokenizer.decode(masked)
            assert text.strip().startswith(answer)
            assert tokenizer.eos_token in text[len(answer) :]
        labels = inputs.labels()
        assert (labels != -100).sum() == inputs.assistant_mask.sum()
        loss = loaded.model(**inputs.batch, labels=labels).loss
        assert torch.isfinite(loss)


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_prompt_ends_where_the_answer_starts(tiny_dirs, family):
    loaded = load_model(tiny_dirs[family])
    conversation = video_conversation("What colour is the shape?")
    prompt = loaded.processor.apply_chat_template(conversation, add_generation_prompt=True)
    full = loaded.processor.apply_chat_template(video_conversation("What colour is the shape?", "Red."))
    assert full.startswith(prompt)
    inputs = build_inputs(loaded.processor, [conversation], [noise_frames(0)], add_generation_prompt=True)
    with torch.no_grad():
        output = loaded.model.generate(**inputs.batch, max_new_tokens=4, do_sample=False)
    assert output.shape[1] <= inputs.batch["input_ids"].shape[1] + 4


def test_conversations_and_videos_must_pair_up(tiny_dirs):
    loaded = load_model(tiny_dirs["video_llava"])
    with pytest.raises(ValueError, match="2 conversations but 1 videos"):
        build_inputs(
            loaded.processor,
            [video_conversation("a?"), video_conversation("b?")],
            [noise_frames(0)],
            add_generation_prompt=True,
        )


def test_labels_need_the_mask(tiny_dirs):
    loaded = load_model(tiny_dirs["video_llava"])
    inputs = build_inputs(loaded.processor, [video_conversation("a?")], [noise_frames(0)], add_generation_prompt=True)
    with pytest.raises(ValueError, match="assistant_spans=True"):
        inputs.labels()


def test_llava_turns_become_the_processor_conversation(tiny_dirs):
    turns = [{"from": "human", "value": "<video>\nWhat colour is it?"}, {"from": "gpt", "value": "It is red."}]
    conversation = from_llava_turns(turns)
    assert conversation == video_conversation("What colour is it?", "It is red.")
    loaded = load_model(tiny_dirs["llava_onevision"])
    inputs = build_inputs(loaded.processor, [conversation], [noise_frames(0)], add_generation_prompt=False)
    assert "pixel_values_videos" in inputs.batch
    with pytest.raises(ValueError, match="turn 1"):
        from_llava_turns([turns[0], {"from": "assistant", "value": "x"}])


def noise_image(seed, height=24, width=40):
    """An RGB image of another size and aspect than the video frames, as LLaVA-665K's are."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


MIXED_ANSWERS = ["The shape is red.", "A circle, then a square.", "Yes, it is."]


def mixed_conversations():
    """A video, an image (placeholder after the question, as in LLaVA-665K) and a text-only record."""
    questions = ["<video>\nWhat colour is it?", "What shape is in the picture?\n<image>", "Is the answer yes?"]
    return [
        from_llava_turns([{"from": "human", "value": question}, {"from": "gpt", "value": answer}])
        for question, answer in zip(questions, MIXED_ANSWERS)
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_batch_mixing_video_image_and_text_only_masks_each_answer(tiny_dirs, family):
    loaded = load_model(tiny_dirs[family])
    processor, tokenizer = loaded.processor, loaded.processor.tokenizer
    media_ids = {processor.video_token_id, processor.image_token_id}
    for padding_side in ("left", "right"):
        inputs = build_inputs(
            processor,
            mixed_conversations(),
            [noise_frames(0), None, None],
            images=[None, noise_image(1), None],
            add_generation_prompt=False,
            assistant_spans=True,
            padding_side=padding_side,
        )
        ids = inputs.batch["input_ids"]
        assert (ids[0] == processor.video_token_id).sum() > 1 and not (ids[0] == processor.image_token_id).any()
        assert (ids[1] == processor.image_token_id).sum() > 1 and not (ids[1] == processor.video_token_id).any()
        assert not any(token in media_ids for token in ids[2].tolist())
        for row, answer in enumerate(MIXED_ANSWERS):
            mask = inputs.assistant_mask[row]
            positions = mask.nonzero().flatten().tolist()
            # one contiguous run: the answer and its end-of-turn token, nothing of the prompt or the media
            assert positions == list(range(positions[0], positions[-1] + 1))
            assert not any(token in media_ids for token in ids[row][mask].tolist())
            text = tokenizer.decode(ids[row][mask])
            assert text.strip().startswith(answer) and tokenizer.eos_token in text[len(answer) :]
            prompt = tokenizer.decode(
                ids[row][: positions[0]][inputs.batch["attention_mask"][row][: positions[0]].bool()]
            )
            assert answer not in prompt and "?" in prompt
        loss = loaded.model(**inputs.batch, labels=inputs.labels()).loss
        assert torch.isfinite(loss)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_image_prompt_generates(tiny_dirs, family):
    loaded = load_model(tiny_dirs[family])
    conversation = from_llava_turns([{"from": "human", "value": "<image>\nWhat shape is it?"}])
    inputs = build_inputs(loaded.processor, [conversation], [None], images=[noise_image(2)], add_generation_prompt=True)
    with torch.no_grad():
        output = loaded.model.generate(**inputs.batch, max_new_tokens=3, do_sample=False)
    assert output.shape[1] > inputs.batch["input_ids"].shape[1]


def test_media_must_match_the_conversation_items(tiny_dirs):
    loaded = load_model(tiny_dirs["video_llava"])
    image_question = from_llava_turns([{"from": "human", "value": "<image>\nWhat is it?"}])
    with pytest.raises(ValueError, match="conversation 0: 1 image item.* but 0 image given"):
        build_inputs(loaded.processor, [image_question], [None], add_generation_prompt=True)
    with pytest.raises(ValueError, match="conversation 0: 0 video item.* but 1 video given"):
        build_inputs(
            loaded.processor, [image_question], [noise_frames(0)], images=[noise_image(0)], add_generation_prompt=True
        )
    with pytest.raises(ValueError, match="1 conversations but 2 images"):
        build_inputs(loaded.processor, [image_question], [None], images=[None, None], add_generation_prompt=True)
