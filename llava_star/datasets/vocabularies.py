"""Class lists that class labels refer to by name instead of copying them.

A Kinetics-700 sample would otherwise carry 700 class names on every JSONL line. A
label's ``vocabulary`` is therefore one of:

- an inline list of class names (small custom datasets),
- the name of a packaged list (``kinetics400``, ``kinetics600``, ``kinetics700``, ``ssv2``,
  and the others in ``llava_star/data/vocabularies/``),
- ``"file:PATH"``: a UTF-8 text file with one class name a line.

Lists are read once per process and cached (they are immutable tuples).
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from llava_star.errors import LabelError

FILE_PREFIX = "file:"


def packaged_vocabularies() -> list[str]:
    """Names of the class lists shipped with the package."""
    folder = resources.files("llava_star").joinpath("data/vocabularies")
    return sorted(entry.name[: -len(".txt")] for entry in folder.iterdir() if entry.name.endswith(".txt"))


def _parse_lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@functools.lru_cache(maxsize=64)
def load_vocabulary(reference: str) -> tuple[str, ...]:
    """Resolve a vocabulary reference to its class names.

    >>> "abseiling" in load_vocabulary("kinetics700")
    True
    """
    if reference.startswith(FILE_PREFIX):
        path = Path(reference[len(FILE_PREFIX) :]).expanduser()
        try:
            return _parse_lines(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise LabelError(f"vocabulary: cannot read {path}: {error.strerror}") from None
    resource = resources.files("llava_star").joinpath(f"data/vocabularies/{reference}.txt")
    if "/" in reference or not resource.is_file():
        raise LabelError(
            f"vocabulary: unknown vocabulary {reference!r}; packaged ones are "
            f"{', '.join(packaged_vocabularies())}, or use 'file:PATH' or an inline list"
        )
    return _parse_lines(resource.read_text(encoding="utf-8"))


def resolve_vocabulary(vocabulary: tuple[str, ...] | str | None) -> tuple[str, ...]:
    """The class names of a label's ``vocabulary`` field (empty when there is none)."""
    if vocabulary is None:
        return ()
    if isinstance(vocabulary, str):
        return load_vocabulary(vocabulary)
    return tuple(vocabulary)
