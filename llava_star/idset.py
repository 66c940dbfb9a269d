"""A set of sample ids in 8 bytes an id, for the stages that must remember every id they saw.

Resuming a generation run, deduplicating an export and checking a samples file for a
repeated id each need "have I seen this id?" over the whole run. A Python set of the id
strings costs ~100 bytes an id (2.4 GB of them per rank at 20M samples); :class:`IdHashes`
keeps a 63-bit hash of each id in sorted numpy blocks, ~8 bytes an id. Two different ids
share a hash with probability ~n²/2^64 (5e-8 at a million ids, 5e-6 at ten million);
where a false "seen" must not pass silently (a repeated id named as an error), the caller
confirms a hit against the ids themselves (:class:`RepeatedIds`).
"""

from __future__ import annotations

import json.decoder
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llava_star.errors import RecordError
from llava_star.io import jsonl_lines, loads_bounded, parse_jsonl_lines

_RECENT = 1 << 15  # hashes held in a Python set before they become a sorted block
_MASK63 = (1 << 63) - 1
_FILTER_BITS = 25  # a 4 MB bitmap of hashes: most "not seen" answers need no block search


def id_hash(sample_id: str) -> int:
    """The 63-bit hash an id is kept as: Python's own string hash (SipHash, computed once per
    string object), the same within a process and the workers it forks, not across runs.

    >>> id_hash("clip_000001") == id_hash("clip_000001"), id_hash("a") == id_hash("b")
    (True, False)
    """
    return hash(sample_id) & _MASK63


class IdHashes:
    """Ids seen so far, as 63-bit hashes: ``add`` and ``in``, about 8 bytes an id.

    New hashes wait in a small set; every ``_RECENT`` of them become a sorted int64 block,
    and blocks of similar size are merged (as a binary counter carries), so there are never
    more than ~log2(n / _RECENT) blocks to search and each hash is copied ~log2 times. A
    fixed bitmap of the hashes answers most lookups of an id not seen without a search.

    >>> ids = IdHashes(["a", "b"])
    >>> ids.add("c")
    >>> "a" in ids, "c" in ids, "d" in ids, len(ids)
    (True, True, False, 3)
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._recent: set[int] = set()
        self._blocks: list[Any] = []  # sorted int64 arrays, largest first
        self._filter = bytearray(1 << (_FILTER_BITS - 3))
        self._size = 0
        for sample_id in ids:
            self.add(sample_id)

    def __contains__(self, sample_id: object) -> bool:
        return isinstance(sample_id, str) and self.has_hash(id_hash(sample_id))

    def has_hash(self, key: int) -> bool:
        bit = key >> (63 - _FILTER_BITS)
        if not self._filter[bit >> 3] & (1 << (bit & 7)):
            return False
        if key in self._recent:
            return True
        for block in self._blocks:
            index = int(block.searchsorted(key))
            if index < len(block) and int(block[index]) == key:
                return True
        return False

    def add(self, sample_id: str) -> None:
        self.add_hash(id_hash(sample_id))

    def add_hash(self, key: int) -> None:
        """Add a hash (of :func:`id_hash`); adding one already present changes nothing."""
        if not self.has_hash(key):
            self._insert(key)

    def _insert(self, key: int) -> None:
        bit = key >> (63 - _FILTER_BITS)
        self._filter[bit >> 3] |= 1 << (bit & 7)
        self._recent.add(key)
        self._size += 1
        if len(self._recent) >= _RECENT:
            self._seal()

    def add_new(self, sample_id: str) -> bool:
        """Add ``sample_id``; True when it was not there yet (a first occurrence)."""
        key = id_hash(sample_id)
        if self.has_hash(key):
            return False
        self._insert(key)
        return True

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """Bytes held by the sorted blocks (the bitmap adds 4 MB, the recent set at most ~2 MB)."""
        return sum(block.nbytes for block in self._blocks)

    def _seal(self) -> None:
        import numpy as np

        block = np.fromiter(self._recent, dtype=np.int64, count=len(self._recent))
        block.sort()
        self._recent.clear()
        self._blocks.append(block)
        while len(self._blocks) > 1 and len(self._blocks[-2]) <= 2 * len(self._blocks[-1]):
            newest, older = self._blocks.pop(), self._blocks.pop()
            merged = np.concatenate((older, newest))
            del older, newest
            merged.sort()  # in place (no merge buffer: the peak is the two blocks and their union)
            self._blocks.append(merged)


def _first_line_with_id(path: str | os.PathLike[str], sample_id: str, before: int) -> int | None:
    """The first line before line ``before`` whose id is ``sample_id`` (None: a hash collision, no repeat)."""
    for number, raw in jsonl_lines(path):
        if number >= before:
            return None
        found = line_id(raw)
        if found is None:
            try:
                data = loads_bounded(raw)
            except ValueError:
                continue
            found = data.get("id") if isinstance(data, dict) else None
        if found == sample_id:
            return number
    return None


class RepeatedIds:
    """Which ids of a samples file were seen, as 8-byte hashes; a hash seen before is confirmed
    against the file (a rescan up to that line), so a repeat is named exactly, with both lines."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path, self.seen = path, IdHashes()

    def check(self, sample_id: str, line: int) -> None:
        """A ``RecordError`` naming both lines when an earlier line has ``sample_id``."""
        if self.seen.add_new(sample_id):
            return
        first = _first_line_with_id(self.path, sample_id, line)
        if first is not None:
            raise RecordError(f"{self.path}:{line}: id {sample_id!r} is already the id of line {first}")


_ID_PREFIX = b'{"id":"'  # how every line this project writes begins (io.dumps_line of a record with an id)


def line_id(raw: bytes) -> str | None:
    """The id of a whole JSONL line written by this project, read without parsing the rest;
    None when the line is not of that form (the caller parses it).

    >>> line_id(b'{"id":"clip\\u00e9 7","video":"v.mp4"}\\n'), line_id(b'{"video":"v.mp4","id":"7"}\\n')
    ('clipé 7', None)
    """
    if not raw.startswith(_ID_PREFIX) or not raw.endswith(b"\n"):
        return None
    try:
        sample_id, _ = json.decoder.scanstring(raw.decode("utf-8"), len(_ID_PREFIX))
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        return None
    return sample_id


def ids_in_jsonl(path: str | os.PathLike[str]) -> Iterator[str]:
    """The ids of a JSONL file's lines, as :func:`llava_star.io.written_ids` reads them, but
    each line's id read without parsing the rest when the line is of the project's form."""
    for line_number, raw in jsonl_lines(path):
        sample_id = line_id(raw)
        if sample_id is None:  # another form, or a last line a killed writer tore: as read_jsonl reads it
            rows = parse_jsonl_lines(path, [(line_number, raw)])
            sample_id = next((str(row["id"]) for row in rows if isinstance(row, dict) and "id" in row), None)
        if sample_id is not None:
            yield sample_id


def written_id_hashes(paths: Iterable[str | os.PathLike[str]]) -> IdHashes:
    """The ids already in JSONL files (those that exist), as hashes: what a resumed job skips."""
    done = IdHashes()
    for path in paths:
        if Path(path).exists():
            for sample_id in ids_in_jsonl(path):
                done.add(sample_id)
    return done
