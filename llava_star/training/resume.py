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
from llava_star.training.manifest import MANIFEST_FILE

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


def trainer_checkpoints(output_dir: Path) -> list[Path]:
    """The ``checkpoint-N`` folders of ``output_dir`` the Trainer finished (its state written), oldest first."""
    steps = []
    for path in Path(output_dir).glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and (path / TRAINER_STATE_FILE).is_file():
            steps.append((int(step), path))
    return [path for _, path in sorted(steps)]


def last_trainer_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` in ``output_dir``: the Trainer's state and the
    manifest (written last, once every rank has saved) are there."""
    complete = [path for path in trainer_checkpoints(output_dir) if (path / MANIFEST_FILE).is_file()]
    return complete[-1] if complete else None


# ``--resume-from-checkpoint`` words: HF's ``True`` (the last checkpoint) and a fresh start
_RESUME_LAST = frozenset({"true", "last"})
_RESUME_NONE = frozenset({"none", "false", "no"})
# settings a resumed run may change: they do not alter what it computes
_SETTINGS_FREE_ON_RESUME = frozenset(
    {"resume_from_checkpoint", "trust_checkpoint", "output_dir", "dataloader_num_workers", "report_to", "cache_dir"}
)


def checkpoint_to_resume(output_dir: str | Path, requested: str | None) -> Path | None:
    """Where a run goes on from: ``requested`` unset, the last complete checkpoint of
    ``output_dir`` (a rerun of the same command resumes, as HF's example scripts do); ``none``
    (or ``false``), nowhere; ``true`` / ``last``, the last one, which must exist; else that folder.

    >>> checkpoint_to_resume("no-such-run", None) is None, checkpoint_to_resume("no-such-run", "none")
    (True, None)
    """
    output_dir = Path(output_dir)
    if requested is not None and requested.strip().lower() in _RESUME_NONE:
        return None
    last = last_trainer_checkpoint(output_dir)
    if requested is None or requested.strip().lower() in _RESUME_LAST:
        unverifiable = [path for path in trainer_checkpoints(output_dir) if not (path / MANIFEST_FILE).is_file()]
        if last is None and unverifiable:
            raise CheckpointError(
                f"{unverifiable[-1]}: a checkpoint without {MANIFEST_FILE} (written by another tool or an older "
                "llava-star); pass --resume-from-checkpoint DIR --trust-checkpoint to resume it, "
                "--resume-from-checkpoint none to start afresh, or another -o"
            )
        if last is None and requested is not None:
            raise CheckpointError(f"resume_from_checkpoint: {requested}: {output_dir} holds no complete checkpoint")
        return last
    return Path(requested)


def check_same_settings(checkpoint: Path, settings: Mapping[str, Any], saved: Mapping[str, Any]) -> None:
    """Refuse to go on from a checkpoint of a run with other settings (the data, the model, the schedule).

    >>> check_same_settings(Path("c"), {"learning_rate": 2e-5, "report_to": []}, {"learning_rate": 2e-5})
    """
    changed = sorted(
        key
        for key in set(settings) | set(saved)
        if key not in _SETTINGS_FREE_ON_RESUME and settings.get(key) != saved.get(key)
    )
    if changed:
        shown = ", ".join(f"{key}: {saved.get(key)!r} -> {settings.get(key)!r}" for key in changed[:4])
        raise CheckpointError(
            f"{checkpoint}: written by a run with other settings ({shown}); a rerun resumes it only with the same "
            "ones: pass --resume-from-checkpoint none to start afresh in this folder, or write to another -o"
        )


def clear_earlier_attempt(output_dir: str | Path, failures_path: str | Path) -> list[Path]:
    """Before a fresh start in ``output_dir``: remove the earlier attempt's ``checkpoint-N``
    folders and failures file, so neither is mistaken for this run's; return what was removed."""
    import shutil

    removed = []
    for path in sorted(Path(output_dir).glob("checkpoint-*")):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(path)
    if Path(failures_path).is_file():
        Path(failures_path).unlink()
        removed.append(Path(failures_path))
    if removed:
        logger.info("train: starting afresh; removed the earlier attempt's %s", ", ".join(p.name for p in removed))
    return removed


def deduplicate_lines(path: str | Path) -> int:
    """Rewrite a failures file with each line once, in first-seen order; return the lines kept.

    A resumed run (and every epoch after the first) meets a broken sample again; it is one
    failure, counted once.
    """
    from llava_star.io import write_text_atomic

    path = Path(path)
    if not path.is_file():
        return 0
    lines = list(dict.fromkeys(line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()))
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return len(lines)


def verify_before_resume(checkpoint: Path, settings: Mapping[str, Any], *, same_settings: bool) -> None:
    """Check ``checkpoint``'s manifest (and, when ``same_settings``, that its run had these
    settings) before anything of it is loaded; every rank of a job raises if any rank found a fault.

    The ranks split the hashing (each reads every world-size-th file) and share what they found.
    """
    from llava_star.distributed import gather_from_every_rank, rank_and_world_size
    from llava_star.training.manifest import UntrustedCheckpointError, verify_manifest

    fault: tuple[str, str] | None = None
    try:
        manifest = verify_manifest(checkpoint, rank_and_world_size())
        if same_settings:
            check_same_settings(checkpoint, settings, manifest.get("settings") or {})
    except LlavaStarError as error:
        fault = (type(error).__name__, str(error))
    found = [item for item in gather_from_every_rank(fault) if item is not None]
    if found:
        kind, message = found[0]
        raise (UntrustedCheckpointError if kind == UntrustedCheckpointError.__name__ else CheckpointError)(message)
    logger.info("resume: %s matches its manifest", checkpoint)
