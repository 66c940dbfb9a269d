"""Resuming a killed run from a Trainer checkpoint with every trained weight restored.

transformers 5.23's ``Trainer._load_from_checkpoint`` reads ``checkpoint-N/model.safetensors``
with a non-strict ``load_state_dict`` and no key conversion, but ``save_pretrained`` wrote
that file under the hub's names (``revert_weight_conversion``): for Video-LLaVA none of the
103 tensors loaded, with only a warning, and the run "resumed" on the base weights with a
half-decayed learning rate (upstream: huggingface/transformers#43701; fix proposals #43745
and #44366 were closed unmerged). With ``--lora`` the checkpoint holds only the adapters,
so the projector, which trains in full beside them, silently went back to its base
weights as well.

Here a checkpoint's weights load under the names the model saved them with, strictly: a
weight the checkpoint lacks, or one the model has no place for, is an error that names the
checkpoint. LoRA checkpoints carry the trained non-adapter parameters in a file of their
own (:data:`NON_ADAPTER_FILE`). DeepSpeed resumes through its own engine checkpoint
(``global_stepN/``), which restores the fp32 master weights exactly; nothing here is used
there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llava_star.errors import LlavaStarError
from llava_star.models.checkpoints import hub_weight_name

logger = logging.getLogger(__name__)

# the trained parameters of a LoRA run that are not adapters (the projector), per checkpoint
NON_ADAPTER_FILE = "llava_star_non_adapter_weights.safetensors"
# written last into a checkpoint-N folder by the Trainer: its presence marks a complete checkpoint
TRAINER_STATE_FILE = "trainer_state.json"
_SINGLE_FILE = "model.safetensors"
_INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(LlavaStarError):
    """A trainer checkpoint whose weights do not match the model being trained."""


def saved_names(model: Any) -> dict[str, str]:
    """Map each name ``model.save_pretrained`` writes a weight under to the model's own name.

    transformers renames weights on save (``revert_weight_conversion``, e.g. Video-LLaVA's
    ``model.language_model.*`` is saved as ``language_model.model.*``); the renamed state
    dict holds the model's own tensors, so matching them by identity inverts the renaming
    exactly, for whatever mapping the installed transformers registers. Vision-tower names
    llava_star rewrites to the hub's spelling (:func:`hub_weight_name`) map too.
    """
    from transformers.core_model_loading import revert_weight_conversion

    state = model.state_dict()
    names_of_tensor: dict[int, str] = {}
    for name, tensor in state.items():
        names_of_tensor.setdefault(id(tensor), name)  # tied weights: the first name owns the storage
    mapping: dict[str, str] = {}
    for saved, tensor in revert_weight_conversion(model, dict(state)).items():
        own = names_of_tensor.get(id(tensor))
        if own is None:  # a converter (fused or split tensors) made a new tensor: no one-to-one name
            raise CheckpointError(
                f"{type(model).__name__}: the weight saved as {saved!r} is converted on save, not only renamed; "
                "resuming this architecture without DeepSpeed is not supported (resume under DeepSpeed, whose "
                "engine checkpoint keeps the model's own names)"
            )
        mapping[saved] = own
        mapping.setdefault(hub_weight_name(saved), own)
    return mapping


def read_safetensors_checkpoint(directory: Path) -> dict[str, Any]:
    """Every tensor of a ``save_pretrained`` directory (one file or an index of shards), on the CPU."""
    from safetensors.torch import load_file

    if (directory / _SINGLE_FILE).is_file():
        return load_file(directory / _SINGLE_FILE, device="cpu")
    if (directory / _INDEX_FILE).is_file():
        shards = sorted(set(json.loads((directory / _INDEX_FILE).read_text())["weight_map"].values()))
        state: dict[str, Any] = {}
        for shard in shards:
            state.update(load_file(directory / shard, device="cpu"))
        return state
    raise CheckpointError(f"{directory}: no {_SINGLE_FILE} or {_INDEX_FILE} to resume the model's weights from")


def load_model_weights(model: Any, directory: str | Path) -> int:
    """Load a full-model trainer checkpoint into ``model``, strictly; return the tensors loaded."""
    directory = Path(directory)
    saved = read_safetensors_checkpoint(directory)
    names = saved_names(model)
    unknown = sorted(key for key in saved if key not in names)
    if unknown:
        raise CheckpointError(
            f"{directory}: {len(unknown)} weights the model has no place for, e.g. {unknown[:3]}; "
            "was this checkpoint written by a run of another model?"
        )
    state = {names[key]: tensor for key, tensor in saved.items()}
    missing = _missing_weights(model, state)
    if missing:
        raise CheckpointError(
            f"{directory}: {len(missing)} of the model's weights are not in the checkpoint, e.g. {missing[:3]}"
        )
    model.load_state_dict(state, strict=False)  # tied weights are loaded once, through their owner
    logger.info("resume: %d tensors loaded from %s", len(state), directory)
    return len(state)


def _missing_weights(model: Any, state: Mapping[str, Any]) -> list[str]:
    """The model's state entries neither in ``state`` nor sharing storage with one that is (tied)."""
    loaded_storage = set()
    model_state = model.state_dict()
    for name in state:
        if name in model_state:
            loaded_storage.add(model_state[name].data_ptr())
    return sorted(
        name for name, tensor in model_state.items() if name not in state and tensor.data_ptr() not in loaded_storage
    )


def non_adapter_trainable(named_parameters: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The trained parameters of a peft model that its adapter checkpoint leaves out.

    >>> import torch
    >>> p = torch.nn.Parameter(torch.zeros(1))
    >>> sorted(non_adapter_trainable([("proj.weight", p), ("fc.lora_A.default.weight", p)]))
    ['proj.weight']
    """
    return {
        name: parameter
        for name, parameter in named_parameters
        if parameter.requires_grad and ".lora_A." not in name and ".lora_B." not in name
    }


def save_non_adapter_weights(model: Any, directory: str | Path) -> None:
    """Write the trained non-adapter parameters (the projector) next to a LoRA checkpoint's adapters."""
    from safetensors.torch import save_file

    tensors = {
        name: p.detach().cpu().contiguous() for name, p in non_adapter_trainable(model.named_parameters()).items()
    }
    if tensors:
        save_file(tensors, str(Path(directory) / NON_ADAPTER_FILE), metadata={"format": "pt"})


def load_non_adapter_weights(model: Any, directory: str | Path) -> int:
    """Restore what :func:`save_non_adapter_weights` wrote; every trained non-adapter parameter must be there."""
    import torch
    from safetensors.torch import load_file

    expected = non_adapter_trainable(model.named_parameters())
    if not expected:
        return 0
    path = Path(directory) / NON_ADAPTER_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{directory}: no {NON_ADAPTER_FILE}: this LoRA checkpoint lacks the {len(expected)} trained parameters "
            f"outside the adapters (e.g. {min(expected)}), so resuming would reset them; it was written by "
            "llava-star before the fix, or by another tool: start the run again"
        )
    saved = load_file(path, device="cpu")
    if set(saved) != set(expected):
        difference = sorted(set(saved) ^ set(expected))
        raise CheckpointError(f"{path}: does not match the parameters this run trains, e.g. {difference[:3]}")
    with torch.no_grad():
        for name, parameter in expected.items():
            parameter.copy_(saved[name].to(parameter.dtype))
    logger.info("resume: %d non-adapter parameters loaded from %s", len(saved), path)
    return len(saved)


def last_trainer_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` the Trainer saved in ``output_dir``, if any."""
    steps = []
    for path in output_dir.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and (path / TRAINER_STATE_FILE).is_file():
            steps.append((int(step), path))
    return max(steps)[1] if steps else None
