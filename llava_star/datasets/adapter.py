"""What every dataset adapter shares: its input, its output, and how it reads files.

An adapter is a function ``adapt(request) -> Iterator[Found | Skipped]``. It reads the
annotation file named in the :class:`PrepareRequest`, and for each row yields either a
:class:`Found` sample (with ``where``, the file:line or key it came from, so later checks
can name it) or a :class:`Skipped` row with a short reason that ``prepare`` counts.
Malformed input is not skipped: it raises :class:`~llava_star.errors.AnnotationError`
naming the file and line or key, because a silently shrunken dataset is worse than a
stopped run.

Videos are found through a :class:`VideoIndex`, built by walking the video root once,
so layouts that differ between downloads (flat, per-class folders, per-split folders,
``.mp4`` or ``.webm``) cost one lookup per row instead of many ``stat`` calls.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from llava_star.errors import AnnotationError, RecordError
from llava_star.records import Sample

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")


@dataclass(frozen=True)
class PrepareRequest:
    """What ``llava-star prepare`` hands an adapter."""

    dataset: str
    annotations: Path
    video_root: Path
    split: str | None = None
    mapping: Path | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(0))


@dataclass(frozen=True)
class Found:
    """A sample and where it came from (``file:line`` or ``file: key``) for error messages."""

    sample: Sample
    where: str


@dataclass(frozen=True)
class Skipped:
    """A row that yields no sample for a normal reason (no label in a test split, ...)."""

    reason: str
    where: str


Adapter = Callable[[PrepareRequest], Iterator["Found | Skipped"]]


@contextmanager
def located(where: str) -> Iterator[None]:
    """Re-raise a label or sample that fails validation as an error naming its row."""
    try:
        yield
    except RecordError as error:
        raise AnnotationError(f"{where}: {error}") from None


def load_json(path: Path) -> Any:
    """Parse a JSON annotation file; a syntax error names the file, line and column."""
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as error:
        raise AnnotationError(f"{path}: cannot read: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path}:{error.lineno}:{error.colno}: not valid JSON: {error.msg}") from None
    except UnicodeDecodeError as error:
        raise AnnotationError(f"{path}: not UTF-8 text ({error.reason})") from None
    except RecursionError:
        raise AnnotationError(f"{path}: nested too deeply to be an annotation file") from None
    except ValueError as error:  # an integer of thousands of digits
        raise AnnotationError(f"{path}: {error}") from None


def read_text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line_number, line)`` for the non-blank lines of a text file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise AnnotationError(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise AnnotationError(f"{path}: not UTF-8 text ({error.reason})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


def read_csv_rows(
    path: Path, *, delimiter: str = ",", header: Sequence[str] | None = None
) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line_number, row)`` for each data row of a CSV file, keyed by the header.

    ``header`` is for files without one (e.g. SSv2 ``test-answers.csv``). A row with a
    different number of fields than the header is an error naming its line: a real CSV
    reader already copes with quoted commas, so a mismatch means the file is damaged.
    """
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as error:
        raise AnnotationError(f"{path}: cannot read: {error.strerror}") from None
    with handle:
        reader = csv.reader(handle, delimiter=delimiter, strict=True)
        try:
            columns = list(header) if header is not None else next(reader, None)
            if not columns:
                raise AnnotationError(f"{path}: empty file, expected a header row")
            columns = [column.strip() for column in columns]
            line_number = reader.line_num
            for fields in reader:
                if not any(value.strip() for value in fields):
                    line_number = reader.line_num
                    continue
                if len(fields) != len(columns):
                    raise AnnotationError(
                        f"{path}:{line_number + 1}: expected {len(columns)} fields "
                        f"({', '.join(columns)}), got {len(fields)}"
                    )
                yield line_number + 1, dict(zip(columns, (value.strip() for value in fields)))
                line_number = reader.line_num
        except csv.Error as error:
            raise AnnotationError(f"{path}:{reader.line_num}: malformed CSV: {error}") from None
        except UnicodeDecodeError as error:
            raise AnnotationError(f"{path}: not UTF-8 text ({error.reason})") from None


def require_columns(path: Path, row: dict[str, str], columns: Iterable[str]) -> None:
    missing = [column for column in columns if column not in row]
    if missing:
        raise AnnotationError(f"{path}: missing column(s) {missing}; the header has {list(row)}")


def parse_seconds(text: Any, where: str, what: str) -> float:
    """A finite, non-negative number of seconds from a cell (``84``, ``84.0``, ``"11.10"``)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: {what}: expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise AnnotationError(f"{where}: {what}: expected seconds >= 0, got {text!r}")
    return value


def split_aliases(split: str) -> frozenset[str]:
    """Names one split goes by across releases (Kinetics-700 says ``validate``).

    >>> sorted(split_aliases("val"))
    ['val', 'validate', 'validation']
    """
    split = split.strip().lower()
    for group in (("val", "validate", "validation"), ("train", "training"), ("test", "testing")):
        if split in group:
            return frozenset(group)
    return frozenset({split})


class CompactPaths:
    """Video paths by file stem in 12 bytes a file: a 63-bit hash of the stem (sorted), the
    index of its folder and of its extension. A dict of the path strings took ~250 bytes a
    file (225 MB for Kinetics-700's 650k clips); the stem is given back by the lookup.

    >>> paths = CompactPaths.of([("val/abseiling", "abc", ".mp4"), (".", "abc", ".webm"), (".", "xyz", ".mp4")])
    >>> paths.get("abc"), paths.get("nope"), len(paths)
    (('abc.webm', 'val/abseiling/abc.mp4'), None, 3)
    """

    def __init__(self, hashes: Any, places: Any, folder_names: list[str], suffix_names: list[str]) -> None:
        self._hashes, self._places = hashes, places  # sorted int64; int32 folder << 8 | extension
        self._folder_names, self._suffix_names = folder_names, suffix_names

    @classmethod
    def of(cls, files: Iterable[tuple[str, str, str]]) -> CompactPaths:
        """From ``(folder relative to the root, stem, extension)`` triples, held as arrays while read."""
        import array

        import numpy as np

        hashes, places = array.array("q"), array.array("i")
        folder_ids: dict[str, int] = {}
        suffix_ids: dict[str, int] = {}
        for folder, stem, suffix in files:
            hashes.append(hash(stem) & ((1 << 63) - 1))
            suffix_id = suffix_ids.setdefault(suffix, len(suffix_ids))
            if suffix_id > 255:
                raise AnnotationError(f"more than 256 spellings of the video extensions ({suffix!r})")
            places.append(folder_ids.setdefault(folder, len(folder_ids)) << 8 | suffix_id)
        # one array copied at a time: the peak is ~3x the 12 bytes a file, not ~6x
        order = np.argsort(np.frombuffer(hashes, dtype=np.int64), kind="stable")
        sorted_hashes = np.frombuffer(hashes, dtype=np.int64)[order]
        del hashes
        sorted_places = np.frombuffer(places, dtype=np.int32)[order]
        del places, order
        return cls(sorted_hashes, sorted_places, list(folder_ids), list(suffix_ids))

    def get(self, stem: str) -> tuple[str, ...] | None:
        """The paths (sorted) of the files named ``stem`` plus an extension, None when there are none."""
        key = hash(stem) & ((1 << 63) - 1)
        first = int(self._hashes.searchsorted(key))
        paths = []
        for position in range(first, len(self._hashes)):
            if int(self._hashes[position]) != key:
                break
            place = int(self._places[position])
            folder, name = self._folder_names[place >> 8], stem + self._suffix_names[place & 255]
            paths.append(name if folder == "." else f"{folder}/{name}")
        return tuple(sorted(paths)) or None

    def __len__(self) -> int:
        return len(self._hashes)


@dataclass(frozen=True)
class VideoIndex:
    """Every video file under a root, by file stem, built with one walk of the tree.

    >>> index = VideoIndex({"abc": ("val/abseiling/abc.mp4", "abc.mp4")})
    >>> index.find(["abc"], prefer_dirs={"abseiling"})
    'val/abseiling/abc.mp4'
    """

    by_stem: Mapping[str, tuple[str, ...]] | CompactPaths

    @classmethod
    def build(cls, root: Path, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> VideoIndex:
        if not root.is_dir():
            raise AnnotationError(f"--video-root {root}: not a directory")
        wanted = tuple(extension.lower() for extension in extensions)

        def files() -> Iterator[tuple[str, str, str]]:
            for folder, _, names in os.walk(root):
                relative_folder = PurePosixPath(Path(folder).relative_to(root).as_posix()).as_posix()
                for name in names:
                    if name.lower().endswith(wanted) and not name.startswith("."):
                        stem = name.rsplit(".", 1)[0]
                        yield relative_folder, stem, name[len(stem) :]

        paths = CompactPaths.of(files())
        logger.info("indexed %d videos under %s", len(paths), root)
        return cls(paths)

    def find(self, stems: Sequence[str], *, prefer_dirs: Iterable[str] = ()) -> str | None:
        """The path of the first stem that exists; among copies, the one in a preferred folder.

        Several copies of a clip happen when splits or class folders overlap; a copy
        whose folders name the row's split or class is the one meant.
        """
        preferred = {name.lower() for name in prefer_dirs}
        for stem in stems:
            paths = self.by_stem.get(stem)
            if paths:
                return max(paths, key=lambda path: sum(part.lower() in preferred for part in path.split("/")[:-1]))
        return None
