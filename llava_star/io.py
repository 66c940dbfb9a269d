"""JSONL and atomic file I/O: how every stage reads and writes its files.

Writers are crash-safe: :class:`JsonlAppender` writes each record as one whole line and
repairs a torn last line on reopen, so a killed job resumes without losing or
duplicating work; :func:`write_json_atomic` replaces a file only once the new content is
fully on disk. Errors name the file and line (``samples.jsonl:12: labels[0].value: ...``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Self, TypeVar

from llava_star.errors import OutputError, RecordError

logger = logging.getLogger(__name__)

RecordT = TypeVar("RecordT")

# Bounds on one line of a JSONL file, which may come from a stranger (issue 27): a 50 MB
# line, nesting 200,000 deep, a 5,000-digit integer or a NaN each crashed a stage with no
# file or line, on every rerun. Each is now a RecordError naming the file and line.
MAX_LINE_BYTES = 4 * 1024 * 1024  # a Kinetics-700 class label with its vocabulary is ~15 KB
MAX_NESTING = 32  # a sample is ~4 deep (labels -> label -> options)
MAX_INTEGER_DIGITS = 30  # beyond float range long before 309 digits; ids are strings


class _OutOfBounds(ValueError):
    """A value the bounded decoder refuses; its message says which and why."""


def _bounded_integer(text: str) -> int:
    if len(text) > MAX_INTEGER_DIGITS + 1:
        raise _OutOfBounds(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INTEGER_DIGITS})")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _OutOfBounds(f"the number {text[:40]} is out of range")
    return value


def _refuse_constant(name: str) -> Any:
    raise _OutOfBounds(f"{name} is not a number (NaN and Infinity are refused)")


_DECODER = json.JSONDecoder(parse_int=_bounded_integer, parse_float=_finite_float, parse_constant=_refuse_constant)


def _nesting(data: Any) -> int:
    """How deep lists and objects nest in ``data`` (without recursion)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in value if isinstance(child, (dict, list)))
    return deepest


def loads_bounded(raw: bytes | str) -> Any:
    """``json.loads`` of one line, refusing NaN/Infinity, huge numbers and deep nesting (``ValueError``).

    >>> loads_bounded(b'{"id": "7", "score": 8.5}')
    {'id': '7', 'score': 8.5}
    """
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    try:
        data = _DECODER.decode(text)
    except RecursionError:
        raise _OutOfBounds(f"nested deeper than {MAX_NESTING} levels") from None
    # a line with few brackets cannot nest deeply: most lines skip the walk
    if text.count("[") + text.count("{") > MAX_NESTING and _nesting(data) > MAX_NESTING:
        raise _OutOfBounds(f"nested deeper than {MAX_NESTING} levels")
    return data


def read_jsonl(
    path: str | os.PathLike[str],
    parse: Callable[[Any], RecordT] = lambda data: data,
    *,
    allow_torn_tail: bool = True,
) -> Iterator[RecordT]:
    """Yield ``parse(obj)`` for each line of a JSONL file.

    Errors name the file and line: ``samples.jsonl:12: labels[0].value: ...``. Blank
    lines are skipped. A last line without its newline is what a killed writer leaves;
    with ``allow_torn_tail`` it is skipped with a warning instead of failing the read.
    """
    return parse_jsonl_lines(path, jsonl_lines(path), parse, allow_torn_tail=allow_torn_tail)


def jsonl_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a JSONL file with their line numbers, not yet parsed.

    A process that needs only some lines (its shard) picks them here and parses only
    those with :func:`parse_jsonl_lines`.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as error:
        raise RecordError(f"{path}: cannot open: {error.strerror}") from None
    with handle:
        line_number = 0
        while raw := handle.readline(MAX_LINE_BYTES + 1):  # never more than the bound in memory
            line_number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise RecordError(f"{path}:{line_number}: a line longer than {MAX_LINE_BYTES:,} bytes")
            if raw.strip():
                yield line_number, raw


def parse_jsonl_lines(
    path: str | os.PathLike[str],
    lines: Iterable[tuple[int, bytes]],
    parse: Callable[[Any], RecordT] = lambda data: data,
    *,
    allow_torn_tail: bool = True,
) -> Iterator[RecordT]:
    """``parse(obj)`` of each ``(line_number, raw)`` of ``path``, as :func:`read_jsonl` does."""
    for line_number, raw in lines:
        torn = not raw.endswith(b"\n")
        try:
            data = loads_bounded(raw)
        except _OutOfBounds as error:
            raise RecordError(f"{path}:{line_number}: {error}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            if torn and allow_torn_tail:
                logger.warning("%s:%d: skipping an incomplete last line (interrupted write)", path, line_number)
                return
            raise RecordError(f"{path}:{line_number}: not valid JSON: {error}") from None
        try:
            yield parse(data)
        except RecordError as error:
            raise type(error)(f"{path}:{line_number}: {error}") from None


def _to_jsonable(record: Any) -> Any:
    if hasattr(record, "to_dict"):
        return record.to_dict()
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return dataclasses.asdict(record)
    return record


# one encoder for every line: json.dumps with options builds a new one per call
_LINE_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps_line(record: Any) -> bytes:
    """One record as one JSONL line (UTF-8, newline-terminated, no NaN)."""
    return (_LINE_ENCODER.encode(_to_jsonable(record)) + "\n").encode("utf-8")


def _truncate_torn_tail(path: Path) -> None:
    """Cut a last line that is not whole JSON: the remains of a write killed half-way."""
    size = path.stat().st_size
    if size == 0:
        return
    with path.open("rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        block = 1 << 16
        position = size
        while position > 0:
            start = max(0, position - block)
            handle.seek(start)
            chunk = handle.read(position - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            position = start
        else:
            keep = 0
        handle.seek(keep)
        tail = handle.read()
        try:
            json.loads(tail)
        except (json.JSONDecodeError, UnicodeDecodeError):
            logger.warning("%s: dropping %d bytes of an incomplete last line", path, size - keep)
            handle.truncate(keep)
        else:  # a whole record that only lacks its newline (readers count it as written)
            handle.seek(0, os.SEEK_END)
            handle.write(b"\n")


class JsonlAppender:
    """Append records to a JSONL file, one whole line per record.

    The file is opened with O_APPEND and each line (or run of whole lines, with
    ``write_many``) goes out in a single ``os.write``,
    so concurrent readers never see half a record from a healthy writer; if the process
    is killed mid-line, the torn tail is removed the next time the file is opened.
    ``fsync_every`` bounds how much finished work a power loss can take.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync_every: int = 64) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                _truncate_torn_tail(self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:
            raise _cannot_write(self.path, error) from None
        self._fsync_every = fsync_every
        self._unsynced = 0

    def write(self, record: Any) -> None:
        self._append(dumps_line(record), 1)

    def write_many(self, records: Iterable[Any], *, lines_per_write: int = 256) -> None:
        """Append whole lines, many per system call (a killed write leaves a torn tail at worst)."""
        records = iter(records)
        while chunk := [dumps_line(record) for record in itertools.islice(records, lines_per_write)]:
            self._append(b"".join(chunk), len(chunk))

    def write_lines(self, lines: Sequence[bytes], *, lines_per_write: int = 256) -> None:
        """Append lines already encoded (each one record, newline-terminated), many per system call."""
        for start in range(0, len(lines), lines_per_write):
            chunk = lines[start : start + lines_per_write]
            self._append(b"".join(chunk), len(chunk))

    def _append(self, data: bytes, lines: int) -> None:
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # rare: a short write on a full disk or a signal
                written += os.write(self._fd, data[written:])
        except OSError as error:  # a torn last line is repaired when the file is reopened
            raise _cannot_write(self.path, error) from None
        self._unsynced += lines
        if self._unsynced >= self._fsync_every:
            self.flush()

    def flush(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as error:
            raise _cannot_write(self.path, error) from None
        self._unsynced = 0

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.flush()
            finally:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def written_ids(paths: Iterable[str | os.PathLike[str]]) -> set[str]:
    """Ids already present in JSONL files, so a restarted job skips finished work."""
    ids: set[str] = set()
    for path in paths:
        if Path(path).exists():
            rows: Iterable[Any] = read_jsonl(path)
            ids.update(str(data["id"]) for data in rows if isinstance(data, dict) and "id" in data)
    return ids


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _cannot_write(path: Path, error: OSError) -> OutputError:
    """A full disk, a read-only or unwritable folder, as an error naming the file (not a traceback)."""
    reason = error.strerror or str(error)
    return OutputError(f"{path}: cannot write: {reason} (errno {error.errno}); what was written before is kept")


@contextlib.contextmanager
def replaced_atomically(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """A handle on a temp file beside ``path`` that replaces it once the block ends without error.

    A full disk or an unwritable folder is an :class:`OutputError` naming ``path``; the old
    file, if any, is left as it was, and the temp file is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise _cannot_write(path, error) from None
    try:
        # mkstemp makes the file private (0600); outputs are read by other users' jobs
        # (a trainer running as another account), so give it the mode open() would
        os.fchmod(fd, 0o666 & ~_current_umask())
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding, buffering=1 << 20) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except OSError as error:
        Path(temp_name).unlink(missing_ok=True)
        raise _cannot_write(path, error) from None
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text`` only once it is complete on disk (temp file + rename)."""
    with replaced_atomically(path) as handle:
        handle.write(text)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(_to_jsonable(obj), ensure_ascii=False, indent=indent, allow_nan=False) + "\n")


def write_jsonl_atomic(path: str | os.PathLike[str], records: Iterable[Any]) -> int:
    """Write a whole JSONL file atomically, record by record: ``path`` is replaced once all are on disk.

    ``records`` may be a generator of millions: they are written as they come, not held.
    """
    count = 0
    with replaced_atomically(path, "wb") as handle:
        for record in records:
            handle.write(dumps_line(record))
            count += 1
    return count


class JsonArrayWriter:
    """Write a JSON array one element at a time, replacing ``path`` only once it is complete.

    The bytes are those of :func:`write_json_atomic` of the whole list (``indent`` 2), so a
    stage can stream millions of records to a training JSON without holding them. Inside
    ``with``: an exception discards the partial file and leaves the old one as it was.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with JsonArrayWriter(folder / "a.json") as out:
    ...     out.write({"id": "1", "x": [1, 2]})
    ...     out.write({"id": "2"})
    >>> (folder / "a.json").read_text() == json.dumps([{"id": "1", "x": [1, 2]}, {"id": "2"}], indent=2) + "\\n"
    True
    """

    def __init__(self, path: str | os.PathLike[str], *, indent: int = 2) -> None:
        self.path = Path(path)
        self.count = 0
        self._indent = " " * indent
        self._encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=indent)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._temp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            os.fchmod(fd, 0o666 & ~_current_umask())  # as write_text_atomic: readable by other users' jobs
        except OSError as error:
            raise _cannot_write(self.path, error) from None
        self._handle = os.fdopen(fd, "w", encoding="utf-8", buffering=1 << 20)

    def write(self, record: Any) -> None:
        text = self._encoder.encode(_to_jsonable(record)).replace("\n", "\n" + self._indent)
        self._put(("[\n" if self.count == 0 else ",\n") + self._indent + text)
        self.count += 1

    def write_many(self, records: Iterable[Any]) -> None:
        for record in records:
            self.write(record)

    def _put(self, text: str) -> None:
        try:
            self._handle.write(text)
        except OSError as error:
            self.discard()
            raise _cannot_write(self.path, error) from None

    def finish(self) -> None:
        """Close the array and put the file in place of ``path``."""
        self._put("\n]\n" if self.count else "[]\n")
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            os.replace(self._temp_name, self.path)
        except OSError as error:
            self.discard()
            raise _cannot_write(self.path, error) from None

    def discard(self) -> None:
        """Drop what was written: ``path`` stays as it was."""
        if not self._handle.closed:
            self._handle.close()
        Path(self._temp_name).unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.discard()
