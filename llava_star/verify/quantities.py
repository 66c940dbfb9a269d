"""Numbers, times and boxes read from an answer's text (number words already as digits).

The original Video-STaR verifier took the closest of ALL numbers in an answer to the
gold value, so an answer listing many numbers passed; here an answer states one value
(the one next to the label's name, else its final one) and ranges ("between 50 and 85"),
alternatives ("75 or 80") and denominators ("out of 10", "/10") state none.
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import NamedTuple

from llava_star.verify.answer import split_words, word_forms

_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")  # one branch starting with a digit: a fast scan
# A number glued to a word, a clock time or a fraction ("x2", "0:04", "7/10") is not a value.
_GLUE_BEFORE = frozenset(".:,/")
_GLUE_AFTER = re.compile(r"[\w:]|[.,]\d")
_DENOMINATOR_BEFORE = re.compile(r"(?:out of|/|scale of|scale from|range of|ranging from|from 0 to)\s*$")
_RANGE_BEFORE = re.compile(r"(?:between|from|range|ranging)\s+(?:about |around |approximately )?$")
_RANGE_GAP = re.compile(r"^\s*(?:-|–|—|to|and|or)\s*$")
_ALTERNATIVE_GAP = re.compile(r"^\s*(?:,\s*)?(?:or|and/or|maybe|perhaps)\s*(?:maybe |perhaps |possibly )?$")
_LIST_GAP = re.compile(r"^\s*(?:,|,?\s*and|,?\s*or|,?\s*and/or)\s*(?:maybe |perhaps |possibly )?$")
_NOT_A_QUANTITY_BEFORE = re.compile(r"\b(?:not|step|frame|option|part|stage|phase|figure|no\.)\s*$")
# "no one", "the one who", "one of them": "one" as a pronoun, not a count
_ONE_AS_PRONOUN_BEFORE = re.compile(r"\b(?:no|any|every|some|the|this|that|which|each)\s+$")
_ONE_AS_PRONOUN_AFTER = re.compile(r"^\s+(?:of|another|who|that)\b")
_TIME_UNIT_AFTER = re.compile(r"^\s*-?\s*(?:seconds?|secs?|s|minutes?|mins?|hours?|hrs?)\b")
_ENUMERATION = re.compile(r"(?:^|\n)\s*$")
# Word patterns start with the literal (a leading \b makes the scan several times slower);
# the word boundary before a match is checked by ``word_matches``.
_CONCLUSION = re.compile(r"(?:answer|total|final|overall|altogether|in all|result|estimate|conclusion)\b")
_NONE_STATED = re.compile(r"\bthere (?:are|is|were|was) no\b|\bnone\b|\bnobody\b|\bno one\b")
_VERB_USE_BEFORE = re.compile(r"\b(?:i|we|you|let|to|can|will|must)\s+$")
_SENTENCE_BREAK = re.compile(r"[.!?\n]\s")
_CONTENT_CHAR = re.compile(r"\w")
_ASSOCIATE_AFTER_CHARS = 60
_ASSOCIATE_BEFORE_CHARS = 25


class Quantity(NamedTuple):
    """A number in the text: its value, where it is, and whether it is asserted."""

    value: float
    start: int
    end: int
    asserted: bool = True


def _to_float(text: str) -> float:
    return float(text.replace(",", ""))


def find_numbers(text: str) -> list[Quantity]:
    """Every number, with ranges, alternatives, denominators and enumerations not asserted.

    >>> [(q.value, q.asserted) for q in find_numbers("8.5 out of 10, between 50 and 85")]
    [(8.5, True), (10.0, False), (50.0, False), (85.0, False)]
    """
    spans = [(m.start(), m.end()) for m in _NUMBER.finditer(text) if not _glued(text, m.start(), m.end())]
    hedged = _hedged_numbers(text, spans)
    found = []
    for i, (start, end) in enumerate(spans):
        before, after = text[max(0, start - 24) : start], text[end : end + 24]
        asserted = not (
            i in hedged
            or _DENOMINATOR_BEFORE.search(before)
            or _NOT_A_QUANTITY_BEFORE.search(before)
            or (
                text[start:end] == "1" and (_ONE_AS_PRONOUN_AFTER.match(after) or _ONE_AS_PRONOUN_BEFORE.search(before))
            )
            or (after[:1] in (".", ")", ":") and not after[1:2].isdigit() and _ENUMERATION.search(before))
            or _TIME_UNIT_AFTER.match(after)
        )
        found.append(Quantity(_to_float(text[start:end]), start, end, asserted))
    return found


def _glued(text: str, start: int, end: int) -> bool:
    before = text[start - 1] if start else " "
    return before.isalnum() or before in _GLUE_BEFORE or _GLUE_AFTER.match(text, end) is not None


def _hedged_numbers(text: str, spans: list[tuple[int, int]]) -> set[int]:
    """Numbers in a range ("50-85", "between 50 and 85") or offered as alternatives
    ("75 or 80", "60, 70, 80 or 90")."""
    hedged: set[int] = set()
    chain = [0]  # numbers joined by commas, "and", "or": a list, hedged when an "or" joins it
    has_or = False
    for i in range(len(spans) - 1):
        gap = text[spans[i][1] : spans[i + 1][0]]
        before = text[max(0, spans[i][0] - 24) : spans[i][0]]
        is_range = _RANGE_GAP.match(gap) and (gap.strip() not in ("and", "or") or _RANGE_BEFORE.search(before))
        if is_range or _ALTERNATIVE_GAP.match(gap):
            hedged.update((i, i + 1))
        if _LIST_GAP.match(gap):
            chain.append(i + 1)
            has_or = has_or or bool(_ALTERNATIVE_GAP.match(gap))
            continue
        if has_or:
            hedged.update(chain)
        chain, has_or = [i + 1], False
    if has_or:
        hedged.update(chain)
    return hedged


@functools.lru_cache(maxsize=1024)
def name_pattern(name: str) -> re.Pattern[str]:
    """The label's ``name`` in any inflection: "score" also finds "scores", "scored"."""
    keys = sorted({form for word in split_words(name) for form in word_forms(word)}, key=len, reverse=True)
    return re.compile(r"(?:" + "|".join(re.escape(key) for key in keys) + r")\b")


def word_matches(pattern: re.Pattern[str], text: str) -> list[re.Match[str]]:
    """Matches of a word pattern that start a word ("scores", not "underscores").

    >>> [m.start() for m in word_matches(name_pattern("score"), "underscores, scores")]
    [13]
    """
    return [m for m in pattern.finditer(text) if not (m.start() and text[m.start() - 1].isalnum())]


def stated_number(text: str, name: str | None, *, last_resort: bool = True) -> float | None:
    """The value the answer asserts for ``name``, else its conclusion, else its last number;
    with no number at all, "there are no people" / "nobody" states zero.

    The last two are guesses that suit a count ("I see three dogs") and the verifier, where a
    stray number rarely falls within the tolerance. A metric that needs the value the answer
    gave for ``name`` (a score's rank correlation, its parse rate) passes ``last_resort=False``:
    then only a number next to the name or a conclusion counts, or an answer that is that one
    number and nothing else, so "one diver jumps" states no score.

    >>> stated_number("there are no people in the video.", "count")
    0.0
    >>> stated_number("1 diver jumps", "score"), stated_number("1 diver jumps", "score", last_resort=False)
    (1.0, None)
    >>> stated_number("The dive deserves a score of 81.5.", "score", last_resort=False)
    81.5
    """
    numbers = [q for q in find_numbers(text) if q.asserted]
    if not numbers:
        return 0.0 if last_resort and _NONE_STATED.search(text) else None
    for anchor in _anchors(name):
        value = _last_associated(text, numbers, anchor)
        if value is not None:
            return value
    if last_resort or _only_number(text, numbers):
        return numbers[-1].value
    return None


def _only_number(text: str, numbers: list[Quantity]) -> bool:
    """Whether the text is one number and punctuation: a bare "81.5" answers the question."""
    return len(numbers) == 1 and not _CONTENT_CHAR.search(text[: numbers[0].start] + text[numbers[0].end :])


@functools.lru_cache(maxsize=1024)
def _anchors(name: str | None) -> tuple[re.Pattern[str], ...]:
    """What a stated value sits next to: the label's name (when it has words), then a conclusion."""
    return ((name_pattern(name),) if name and split_words(name) else ()) + (_CONCLUSION,)


def _last_associated(text: str, numbers: list[Quantity], anchor: re.Pattern[str]) -> float | None:
    value = None
    for match in word_matches(anchor, text):
        if _VERB_USE_BEFORE.search(text, max(0, match.start() - 8), match.start()):
            continue  # "I count two dogs ...": the name used as a verb, not a stated value
        after = [q for q in numbers if 0 <= q.start - match.end() <= _ASSOCIATE_AFTER_CHARS]
        after = [q for q in after if not _SENTENCE_BREAK.search(text, match.end(), q.start)]
        before = [q for q in numbers if 0 <= match.start() - q.end <= _ASSOCIATE_BEFORE_CHARS]
        before = [q for q in before if not _SENTENCE_BREAK.search(text, q.end, match.start())]
        if after:
            value = after[0].value
        elif before:
            value = before[-1].value
    return value


# --- times -------------------------------------------------------------------------------

# One scan for numbers (clock times included), then an anchored look at what follows each.
_TIME_NUMBER = re.compile(r"\d+(?:\.\d+)?(?::\d{2}(?:\.\d+)?){0,2}")
_TIME_AFTER = re.compile(
    r"\s*-?\s*(hours?|hrs?|minutes?|mins?)\b(?:\s*,?\s*(?:and\s*)?(\d+(?:\.\d+)?)\s*(?:seconds?|secs?|s)\b)?"
    r"|\s*-?\s*(seconds?|secs?|s)\b|\s*(%|percent\b)"
)
_BARE_POINT_WORDS = ("at", "around", "about", "approximately", "roughly")
_BARE_POINT_BEFORE = re.compile(r"\b(?:" + "|".join(_BARE_POINT_WORDS) + r")\s+(?:the\s+)?$")
_TIME_RANGE_GAP = re.compile(
    r"^\s*(?:marks?\s*|points?\s*)?(?:-|–|—|to|until|till|through|and)\s*"
    r"(?:(?:it\s+|then\s+)?(?:ends?|finish(?:es)?|stops?|lasts?)\s+(?:at|around|by|until)\s*)?"
    r"(?:the\s+)?(?:about\s+|around\s+|approximately\s+)?$"
)
_TIME_ALTERNATIVE_GAP = re.compile(
    r"^\s*(?:marks?\s*)?,?\s*(?:or|and/or)\s*(?:maybe\s+|perhaps\s+)?(?:the\s+|from\s+|at\s+|in\s+|between\s+)?$"
)
_BETWEEN_BEFORE = re.compile(r"between\s+(?:the\s+)?$")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}


class TimeMention(NamedTuple):
    """A time in the text; ``kind`` is ``unit``, ``clock``, ``percent`` or ``bare`` (no unit)."""

    value: float
    start: int
    end: int
    kind: str

    def seconds(self, duration: float | None, like: TimeMention | None = None) -> float | None:
        kind = like.kind if self.kind == "bare" and like is not None else self.kind
        if kind == "percent":
            return None if duration is None else self.value / 100.0 * duration
        return self.value


def _unit_seconds(unit: str) -> float:
    return _UNIT_SECONDS["s" if unit.startswith("s") else unit[0]]


def find_times(text: str) -> list[TimeMention]:
    """Times with a unit, clock times (m:ss, h:mm:ss), percents, and bare numbers.

    >>> [(t.value, t.kind) for t in find_times("from 0:04 to 1:02:03, then 2 minutes and 5 s, 20% in")]
    [(4.0, 'clock'), (3723.0, 'clock'), (125.0, 'unit'), (20.0, 'percent')]
    """
    mentions: list[TimeMention] = []
    for match in _TIME_NUMBER.finditer(text):
        start, end, number = match.start(), match.end(), match.group()
        if (mentions and start < mentions[-1].end) or (
            start and (text[start - 1].isalnum() or text[start - 1] in ".:")
        ):
            continue
        if ":" in number:
            value = 0.0
            for part in number.split(":"):
                value = value * 60 + float(part)
            mentions.append(TimeMention(value, start, end, "clock"))
            continue
        after = _TIME_AFTER.match(text, end)
        if after is None:
            if end < len(text) and (text[end].isalnum() or text[end] == ":"):
                continue  # "3rd", "4k"
            mentions.append(TimeMention(float(number), start, end, "bare"))
        elif after.group(1):
            value = float(number) * _unit_seconds(after.group(1)) + float(after.group(2) or 0)
            mentions.append(TimeMention(value, start, after.end(), "unit"))
        elif after.group(3):
            mentions.append(TimeMention(float(number), start, after.end(), "unit"))
        else:
            mentions.append(TimeMention(float(number), start, after.end(), "percent"))
    return mentions


class TimeReading(NamedTuple):
    """What an answer states about time: the chosen value (or None) and why."""

    value: float | tuple[float, float] | None
    reason: str = ""


def stated_range(text: str, duration: float | None) -> TimeReading:
    """The last time range stated ("from 4 to 9 seconds", "0:04-0:09", "20% to 40%")."""
    mentions = find_times(text)
    ranges: list[tuple[int, int, tuple[float, float]]] = []
    for a, b in itertools.pairwise(mentions):
        if a.kind == "bare" and b.kind == "bare":
            continue
        if not _TIME_RANGE_GAP.match(text[a.end : b.start]):
            continue
        start, end = a.seconds(duration, like=b), b.seconds(duration, like=a)
        if start is None or end is None:
            return TimeReading(None, "a range in percent of the video, but the label has no duration")
        ranges.append((a.start, b.end, (start, end)))
    if not ranges:
        return TimeReading(None, "no time range stated")
    for left, right in itertools.pairwise(ranges):
        if _TIME_ALTERNATIVE_GAP.match(text[left[1] : right[0]]):
            return TimeReading(None, f"offers alternative ranges {_fmt_range(left[2])} or {_fmt_range(right[2])}")
    return TimeReading(ranges[-1][2])


def stated_time(text: str, duration: float | None) -> TimeReading:
    """The last point in time stated; times that belong to a range or alternatives do not count."""
    mentions = find_times(text)
    in_range: set[int] = set()
    for i, (a, b) in enumerate(itertools.pairwise(mentions)):
        gap = text[a.end : b.start]
        between = _BETWEEN_BEFORE.search(text, max(0, a.start - 12), a.start)
        if (a.kind != "bare" or b.kind != "bare") and _TIME_RANGE_GAP.match(gap) and (gap.strip() != "and" or between):
            in_range.update((i, i + 1))
        if (a.kind != "bare" or b.kind != "bare") and _TIME_ALTERNATIVE_GAP.match(gap):
            return TimeReading(None, "offers alternative times")
    points = []
    for i, mention in enumerate(mentions):
        if i in in_range:
            continue
        if mention.kind == "bare" and not _BARE_POINT_BEFORE.search(text, max(0, mention.start - 20), mention.start):
            continue
        seconds = mention.seconds(duration)
        if seconds is not None:
            points.append(seconds)
    if not points:
        return TimeReading(None, "a range is not a point in time" if in_range else "no time stated")
    return TimeReading(points[-1])


def _fmt_range(value: tuple[float, float]) -> str:
    return f"{value[0]:g}-{value[1]:g}s"


# --- boxes -------------------------------------------------------------------------------

_BOX_NUMBER = r"\s*(\d*\.?\d+)\s*"
_BOX = re.compile(r"[\[(]" + ",".join([_BOX_NUMBER] * 4) + r"[\])]")


class BoxMention(NamedTuple):
    numbers: tuple[float, float, float, float]
    start: int


def find_boxes(text: str) -> list[BoxMention]:
    """Four numbers in brackets or parentheses.

    >>> find_boxes("the cup is at [0.1, 0.2, 0.5, 0.6].")[0].numbers
    (0.1, 0.2, 0.5, 0.6)
    """
    return [BoxMention(_four_numbers(m), m.start()) for m in _BOX.finditer(text)]


def _four_numbers(match: re.Match[str]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = map(float, match.groups())  # _BOX has exactly four groups
    return x0, y0, x1, y1


def to_corners(numbers: tuple[float, float, float, float], box_format: str) -> tuple[float, float, float, float]:
    """Convert a box to corners (x1, y1, x2, y2).

    >>> to_corners((0.5, 0.5, 0.2, 0.4), "cxcywh")
    (0.4, 0.3, 0.6, 0.7)
    """
    a, b, c, d = numbers
    if box_format == "xywh":
        return (a, b, a + c, b + d)
    if box_format == "cxcywh":
        return (round(a - c / 2, 12), round(b - d / 2, 12), round(a + c / 2, 12), round(b + d / 2, 12))
    return (a, b, c, d)


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two corner boxes.

    >>> round(box_iou((0, 0, 1, 1), (0.5, 0, 1, 1)), 2)
    0.5
    """
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def range_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Temporal intersection over union.

    >>> range_iou((4.0, 9.0), (5.0, 10.0))
    0.6666666666666666
    """
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    if union <= 0:
        return 1.0 if a == b else 0.0
    return inter / union
