"""A checkpoint's manifest: the SHA-256 of every file the run wrote into ``checkpoint-N``,
checked before anything of it is loaded.

DeepSpeed resumes its engine from ``checkpoint-N/global_stepN/*.pt`` with
``torch.load(weights_only=False)``, which runs whatever a pickle asks: a file planted in a
run's folder (or a checkpoint from elsewhere) ran its code on ``train --deepspeed ...
--resume-from-checkpoint DIR``. Every checkpoint the run saves gets a manifest of its
files (:data:`MANIFEST_FILE`), written after every rank has finished writing and before
older checkpoints are rotated away; a resume first checks that the folder holds exactly
those files with those hashes, and refuses, naming the file, when one was added, changed
or removed, or when there is no manifest. The manifest proves the files are the ones the
run wrote, not who wrote the manifest: whoever can rewrite it can forge it, like the files.
``--trust-checkpoint`` skips the check for a checkpoint written by another tool.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llava_star.errors import LlavaStarError
from llava_star.io import write_json_atomic

MANIFEST_FILE = "llava_star_checkpoint_manifest.json"
MANIFEST_FORMAT = 1
_CHUNK = 1 << 20


class UntrustedCheckpointError(LlavaStarError):
    """A checkpoint whose files are not exactly the ones its run wrote: nothing of it is loaded."""


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_files(directory: Path) -> list[str]:
    """Every file under ``directory`` (relative, sorted), the manifest left out; a link or
    anything but a regular file or folder is refused, since its content is not the run's."""
    files = []
    for root, folders, names in os.walk(directory, followlinks=False):
        for name in sorted(folders + names):
            path = Path(root) / name
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise UntrustedCheckpointError(
                    f"{path}: a link or special file in a checkpoint; refusing to load it (a run writes plain files)"
                )
        for name in names:
            relative = (Path(root) / name).relative_to(directory).as_posix()
            if relative != MANIFEST_FILE:
                files.append(relative)
    return sorted(files)


def file_entries(directory: Path, names: list[str], share: tuple[int, int] = (0, 1)) -> dict[str, dict[str, Any]]:
    """The manifest entries (hash, size) of every ``share[1]``-th of ``names``, from the ``share[0]``-th:
    the ranks of a job split the hashing of a checkpoint."""
    rank, world_size = share
    return {
        name: {"sha256": file_sha256(directory / name), "bytes": (directory / name).stat().st_size}
        for index, name in enumerate(names)
        if index % world_size == rank
    }


def write_manifest(
    directory: str | os.PathLike[str],
    settings: Mapping[str, Any] | None = None,
    files: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write the manifest of the checkpoint ``directory``; return its path.

    ``files``: the entries of every file (:func:`file_entries`, gathered from the ranks);
    by default every file is hashed here. ``settings`` (the run's resolved config) go with
    it, so a rerun can tell whether the checkpoint belongs to the run it continues.
    """
    directory = Path(directory)
    if files is None:
        files = file_entries(directory, checkpoint_files(directory))
    manifest = {"format": MANIFEST_FORMAT, "settings": dict(settings or {}), "files": dict(sorted(files.items()))}
    write_json_atomic(directory / MANIFEST_FILE, manifest)
    return directory / MANIFEST_FILE


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of ``directory``, or :class:`UntrustedCheckpointError` saying why there is none."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise UntrustedCheckpointError(
            f"{path}: missing: this checkpoint was not written by a llava-star run (or its save was cut short), "
            "so its pickles are not loaded; if you trust whoever wrote it, pass --trust-checkpoint"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UntrustedCheckpointError(f"{path}: unreadable manifest: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise UntrustedCheckpointError(f"{path}: not a manifest of format {MANIFEST_FORMAT}")
    if not isinstance(manifest.get("files"), dict):
        raise UntrustedCheckpointError(f"{path}: its 'files' is not a mapping")
    return manifest


def verify_manifest(directory: str | os.PathLike[str], share: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    """Check that ``directory`` holds exactly its manifest's files, with their hashes; return the manifest.

    Raises :class:`UntrustedCheckpointError` naming the first file that was added, removed,
    resized or changed. ``share`` = (rank, world size): this process hashes every
    world-size-th file only, so the ranks of a job split the reading; the listing is
    checked in full by each.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    listed: dict[str, Any] = manifest["files"]
    present = checkpoint_files(directory)
    for name in present:
        if name not in listed:
            raise UntrustedCheckpointError(
                f"{directory / name}: not written by the run (not in {MANIFEST_FILE}); refusing to load the checkpoint"
            )
    for name in sorted(set(listed) - set(present)):
        raise UntrustedCheckpointError(f"{directory / name}: listed in {MANIFEST_FILE} but missing")
    rank, world_size = share
    for index, name in enumerate(present):
        expected = listed[name]
        path = directory / name
        if not isinstance(expected, dict) or path.stat().st_size != expected.get("bytes"):
            raise UntrustedCheckpointError(f"{path}: its size differs from the one the run wrote; refusing to load it")
        if index % world_size == rank and file_sha256(path) != expected.get("sha256"):
            raise UntrustedCheckpointError(
                f"{path}: its SHA-256 differs from the one the run wrote; refusing to load it"
            )
    return manifest
