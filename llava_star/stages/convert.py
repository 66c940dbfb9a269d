"""``llava-star convert SRC -o DIR``: an original LLaVA-family checkpoint as the transformers class.

The original repositories (``liuhaotian/llava-v1.5-7b``, ``liuhaotian/llava-v1.6-vicuna-7b``, ``LanguageBind/Video-LLaVA-7B``,
``lmms-lab/LLaVA-NeXT-Video-7B``, ``lmms-lab/llava-onevision-qwen2-7b-ov``) save
``LlavaLlamaForCausalLM`` / ``LlavaQwenForCausalLM``: a ``config.json`` with
``model_type: llava`` and the vision tower by hub name, and weight shards under LLaVA's own
names. transformers runs the same networks as ``LlavaForConditionalGeneration``,
``LlavaNextForConditionalGeneration``, ``VideoLlavaForConditionalGeneration``, ``LlavaNextVideoForConditionalGeneration`` and
``LlavaOnevisionForConditionalGeneration``; the renaming is that of transformers'
``convert_llava_weights_to_hf.py``, ``convert_video_llava_weights_to_hf.py``,
``convert_llava_next_weights_to_hf.py``, ``convert_llava_next_video_weights_to_hf.py`` and ``convert_llava_onevision_weights_to_hf.py``
(docs/convert.md has the table):

==========================================  ==============================================
original                                    transformers
==========================================  ==============================================
``model.embed_tokens|layers|norm.*``        ``model.language_model.*``
``lm_head.weight``                          ``lm_head.weight``
``model.mm_projector.0.* / .2.*``           ``model.multi_modal_projector.linear_1/2.*``
``model.vision_tower.vision_tower.*``       ``model.vision_tower.*`` (LLaVA-1.5; less ``vision_model.``)
``model.image_tower.image_tower.*``         ``model.image_tower.*`` (Video-LLaVA)
``model.video_tower.video_tower.*``         ``model.video_tower.*`` (Video-LLaVA)
``model.image_newline``                     ``model.image_newline`` (LLaVA-NeXT-Video, OneVision)
``*.inv_freq``                              dropped (recomputed rotary buffers)
==========================================  ==============================================

The tokenizer gains ``<image>`` (and ``<video>``) and a ``<pad>`` token, and the embeddings
grow to a multiple of 64, as those scripts do; the new rows start at the mean embedding.
Every weight is accounted for: the converted state dict loads with ``strict=True`` (no
key missing, none left over, shapes checked). LLaVA-1.5's shards do not contain CLIP
(the original code loads it from the hub by name), and nothing is downloaded here, so
``--vision-tower DIR`` names a local copy of that vision model.

A language model alone (``lmsys/vicuna-7b-v1.5``, what LLaVA's ``pretrain.sh`` and
``finetune.sh`` start from) is composed the same way: its weights, ``--vision-tower DIR``
and ``--projector mm_projector.bin`` (the pretraining stage's output; a new projector
without it) become one ``LlavaForConditionalGeneration``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_star.errors import ConfigError
from llava_star.models.checkpoints import write_hub_weight_names
from llava_star.models.conversion import (
    MEDIA_TOKENS,
    MODEL_CLASSES,
    add_media_tokens,
    build_model_config,
    build_processor,
    check_video_layout,
    converted_key,
    fit_vision_layers,
    grow_embeddings,
    projector_weights,
    read_json,
    read_shards,
    text_config_of,
    vision_tower_of,
)
from llava_star.models.loading import model_from_state
from llava_star.models.original import original_kind
from llava_star.records import write_json_atomic

logger = logging.getLogger(__name__)

PROVENANCE_FILE = "llava_star_convert.json"


@dataclass(frozen=True)
class ConvertConfig:
    source: str
    output_dir: str
    vision_tower: str | None = None
    # LLaVA's mm_projector.bin, for a source that is a language model alone
    projector: str | None = None


def convert(config: ConvertConfig) -> dict[str, Any]:
    """Convert ``config.source`` into ``config.output_dir``; return what was done."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    source = Path(config.source)
    if not (source / "config.json").is_file():
        raise ConfigError(
            f"{config.source}: expected a local checkpoint directory with config.json (nothing is "
            "downloaded here; fetch the repository first, e.g. `hf download REPO --local-dir DIR`)"
        )
    original = read_json(source / "config.json")
    kind = original_kind(original)
    composed = kind is None and original.get("model_type") == "llama"
    if composed:  # LLaVA's pretrain.sh / finetune.sh: a language model + --vision_tower (+ mm_projector.bin)
        if config.vision_tower is None:
            raise ConfigError(
                f"{source}: a language model alone (llama); LLaVA's scripts add the vision tower "
                "they name and a projector: pass --vision-tower DIR (a local CLIP) and, for "
                "finetuning, --projector mm_projector.bin (without it the projector starts anew)"
            )
        kind = "llava"
        original = dict(original, architectures=["LlavaLlamaForCausalLM"], model_type="llava")
    elif kind is None:
        raise ConfigError(
            f"{source}/config.json: not an original LLaVA checkpoint (architectures "
            f"{original.get('architectures')}); transformers checkpoints load as they are"
        )
    elif config.projector is not None:
        raise ConfigError(
            f"--projector: {source} has its own projector; --projector adds one to a language model alone"
        )
    check_video_layout(kind, original)
    if kind == "llava" and config.vision_tower is None:
        raise ConfigError(
            f"{source}: LLaVA-1.5 checkpoints do not contain their vision tower "
            f"({original.get('mm_vision_tower')!r}, loaded from the hub by the original code); "
            "pass --vision-tower DIR, a local copy of it"
        )
    state = {}
    for key, value in read_shards(source).items():
        new_key = converted_key(key)
        if new_key is not None:
            state[new_key] = value
    text = text_config_of(original, kind)
    vision, tower_weights = vision_tower_of(Path(config.vision_tower) if config.vision_tower else None, kind)
    overlap = state.keys() & tower_weights.keys()
    if overlap:
        raise ConfigError(
            f"{source}: the checkpoint already holds the vision tower ({min(overlap)}); leave out --vision-tower"
        )
    state.update(tower_weights)
    if composed:
        dtype = state["model.language_model.embed_tokens.weight"].dtype
        projector = projector_weights(config.projector, text.hidden_size, vision.hidden_size)
        state.update({key: value.to(dtype) for key, value in projector.items()})
    if "lm_head.weight" not in state and "model.language_model.embed_tokens.weight" in state:
        state["lm_head.weight"] = state["model.language_model.embed_tokens.weight"].clone()  # tied, not saved
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    tokens = add_media_tokens(tokenizer, MEDIA_TOKENS[kind])
    text.vocab_size = grow_embeddings(state, len(tokenizer))
    text.pad_token_id = tokenizer.pad_token_id
    feature_layer = fit_vision_layers(vision, state, int(original.get("mm_vision_select_layer", -2)))
    model_config = build_model_config(kind, original, text, vision, tokens, feature_layer)
    model_class = getattr(transformers, MODEL_CLASSES[kind])
    with torch.device("meta"):
        model = model_class(model_config)
    expected = model.state_dict()
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise ConfigError(
            f"{source}: the weights do not map onto {model_class.__name__}: missing {missing[:5]} "
            f"({len(missing)}), left over {unexpected[:5]} ({len(unexpected)})"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ConfigError(
                f"{source}: {key} has shape {tuple(value.shape)}, {model_class.__name__} expects "
                f"{tuple(expected[key].shape)} (check --vision-tower and config.json)"
            )
    dtype = next(iter(state.values())).dtype
    model_config.dtype = dtype
    processor = build_processor(kind, tokenizer, vision, model_config)
    summary = {
        "source": str(source),
        "kind": kind,
        "class": model_class.__name__,
        "parameters": len(state),
        "added_tokens": tokens,
        "vocab_size": text.vocab_size,
        "vision_tower": config.vision_tower,
        "composed": composed,
        "projector": config.projector,
    }
    output = Path(config.output_dir)
    # written next to the output, then renamed: a conversion cut short leaves no half checkpoint
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model_from_state(model_class, model_config, state).save_pretrained(str(partial))
    write_hub_weight_names(partial)  # the vision tower under the hub's names, which vLLM reads too
    processor.save_pretrained(str(partial))
    if (source / "generation_config.json").is_file():
        shutil.copyfile(source / "generation_config.json", partial / "generation_config.json")
    write_json_atomic(partial / PROVENANCE_FILE, summary)
    if output.is_dir() and not any(output.iterdir()):
        output.rmdir()
    partial.rename(output)
    logger.info("convert: %s (%s) -> %s as %s, %d tensors", source, kind, output, model_class.__name__, len(state))
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-star convert", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "source",
        help="local directory of an original LLaVA / Video-LLaVA / LLaVA-NeXT-Video / "
        "OneVision checkpoint, or of a "
        "LLaMA / Vicuna language model to compose with --vision-tower (and --projector)",
    )
    parser.add_argument("-o", "--output-dir", required=True, help="directory to write the transformers checkpoint to")
    parser.add_argument(
        "--projector",
        help="LLaVA's mm_projector.bin (--pretrain_mm_mlp_adapter) when SOURCE is a "
        "language model alone (LLaVA's pretrain.sh / finetune.sh inputs); without it a new projector",
    )
    parser.add_argument(
        "--vision-tower",
        help="local directory of the CLIP vision model LLaVA-1.5 names in its config "
        "(its weights and config); for Video-LLaVA, whose shards hold the towers, only its config is "
        "read (default: CLIP ViT-L/14 at 224 px)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.path.exists(args.output_dir) and any(Path(args.output_dir).iterdir()):
        raise ConfigError(f"-o {args.output_dir}: exists and is not empty")
    convert(
        ConvertConfig(
            source=args.source, output_dir=args.output_dir, vision_tower=args.vision_tower, projector=args.projector
        )
    )
    return 0
