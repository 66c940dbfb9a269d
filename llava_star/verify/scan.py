"""Regex matches found without the engine's scan of every character.

``pattern.finditer`` tries the pattern at each character of an answer, which costs more
than everything else the verifier does with a chatty answer. The patterns here can only
start at a few places (a digit, a bracket, a cue word such as "answer"); those places are
found with ``str.find`` and ``bytes.translate`` (C loops), and the pattern is tried there
alone. Each function finds exactly what the full scan finds (tested on random strings).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator


def matches_at(pattern: re.Pattern[str], text: str, starts: list[int]) -> Iterator[re.Match[str]]:
    """``pattern.finditer(text)`` for a pattern that can only match at ``starts`` (sorted):
    a few anchored matches instead of the engine trying the pattern at every character."""
    end = 0
    for start in starts:
        if start >= end:
            match = pattern.match(text, start)
            if match:
                end = match.end()
                yield match


def search_at_end(
    pattern: re.Pattern[str], endings: tuple[str, ...], text: str, start: int = 0, end: int | None = None
) -> re.Match[str] | None:
    """``pattern.search(text, start, end)`` for a pattern that ends with ``\\s*$`` after one of ``endings``
    ("out of 10" before a number): ``str.endswith`` rules out nearly every text, and the
    engine, which would try the pattern at every character, runs only for the rest.

    >>> bool(search_at_end(re.compile(r"\\bstep\\s*$"), ("step",), "in step ")), search_at_end(re.compile(r"x$"), ("x",), "y")
    (True, None)
    """
    end = len(text) if end is None else end
    return pattern.search(text, start, end) if text[start:end].rstrip().endswith(endings) else None


def starts_of(text: str, parts: Iterable[str]) -> list[int]:
    """Every position where one of ``parts`` starts in ``text``, in order.

    Most parts do not occur at all: ``filter`` rules them out with one C-level substring
    test each, and only the parts present are looked for again, one ``str.find`` per hit.

    >>> starts_of("a [b] (c) [d]", ("[", "("))
    [2, 6, 10]
    """
    found = []
    for part in filter(text.__contains__, parts):
        position = text.find(part)
        while position >= 0:
            found.append(position)
            position = text.find(part, position + 1)
    found.sort()
    return found


# Every byte but the ASCII digits, as a space: what is left splits into runs of digits.
_DIGITS_ONLY = bytes(code if chr(code) in "0123456789" else ord(" ") for code in range(256))


def digit_matches(pattern: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
    r"""``pattern.finditer(text)`` for a pattern whose matches start with a digit.

    The regular expression engine tries every character of the answer as a start; here
    it is tried only where a run of digits starts, found by ``bytes.translate`` and
    ``split`` (one pass in C, four times cheaper than the scan), so a chatty answer with
    a handful of numbers costs a handful of anchored matches.

    >>> number = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
    >>> [m.group() for m in digit_matches(number, "scores 7.5, 1,200 and 3, then 1,2345")]
    ['7.5', '1,200', '3', '1,234', '5']
    """
    if not text.isascii():  # other scripts have digits of their own: scan as usual
        yield from pattern.finditer(text)
        return
    spaced = text.encode("ascii").translate(_DIGITS_ONLY)
    position = end = 0
    for run in spaced.split():
        position = spaced.find(run, position)
        # A run the previous number took ("1,200" holds "200") is skipped, or its rest tried.
        start, position = max(position, end), position + len(run)
        if start < position:
            match = pattern.match(text, start)
            if match:  # a digit always starts a match; the guard is for the type checker
                end = match.end()
                yield match
