"""The verifier's table: for each label type, a parser and a check.

A parser reads what the answer states for one label: ``(value, note)`` with ``value``
None when the answer states nothing usable (``note`` says why). A check compares a
stated value with the gold label: ``(passed, reason)``. Both are pure functions; only
``text`` labels load a model (lazily, once per process).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llava_star.datasets.vocabularies import resolve_vocabulary
from llava_star.errors import LabelError
from llava_star.records import Label
from llava_star.verify import quantities
from llava_star.verify.answer import NEGATORS, Answer, split_words
from llava_star.verify.embedding import similarities
from llava_star.verify.phrases import (
    Match,
    Phrase,
    Reading,
    Vocabulary,
    distinguishing_phrases,
    find_phrase,
    in_reading_order,
    make_vocabulary,
    names_phrases,
    read_class,
)

Parsed = tuple[Any, str]
Outcome = tuple[bool, str]
DEFAULT_MIN_IOU = 0.5
# A timestamp said as "around 4 seconds" for a gold 4.3 s is right: 1 s unless the label says.
DEFAULT_TIMESTAMP_TOLERANCE = 1.0
DEFAULT_TEXT_THRESHOLD = 0.6
# Float noise only: "75.0" is 75; any real slack must come from the label's tolerance.
_EXACT = 1e-9
_MAX_TEXT_SENTENCES = 64


@dataclass(frozen=True)
class Rule:
    """How one label type is verified."""

    parse: Callable[[Answer, Label], Parsed]
    check: Callable[[Any, Label], Outcome]


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- class ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _vocabulary(reference: tuple[str, ...] | str) -> Vocabulary:
    return make_vocabulary(resolve_vocabulary(reference))


def parse_class(answer: Answer, label: Label) -> Parsed:
    vocabulary = _vocabulary(label.vocabulary) if label.vocabulary else None
    names = names_phrases((label.value, *label.synonyms))
    reading = read_class(names.view(answer), names.phrases, vocabulary)
    return reading, reading.status


def check_class(reading: Reading, label: Label) -> Outcome:
    gold = label.value
    if reading.status == "asserted":
        return True, f"asserts {gold!r}: {_short(reading.evidence)!r}"
    if reading.status == "absent":
        return False, f"does not name {gold!r}"
    if reading.status == "negated":
        return False, f"{gold!r} is negated: {_short(reading.evidence)!r}"
    if reading.status == "hedged":
        return False, f"hedges: {_short(reading.evidence, 120)}"
    return False, f"{reading.evidence} instead of {gold!r}"


# --- number and timestamp ----------------------------------------------------------------


def _within(value: float, gold: float, tolerance: float | None, rel_tolerance: float | None) -> bool:
    allowed = max(tolerance or 0.0, (rel_tolerance or 0.0) * abs(gold), _EXACT * max(1.0, abs(gold)))
    return abs(value - gold) <= allowed


def _tolerance_text(tolerance: float | None, rel_tolerance: float | None) -> str:
    if tolerance and rel_tolerance:
        return f"±{tolerance:g} or ±{rel_tolerance:.0%}"
    if tolerance:
        return f"±{tolerance:g}"
    return f"±{rel_tolerance:.0%}" if rel_tolerance else "exact"


def parse_number(answer: Answer, label: Label) -> Parsed:
    value = quantities.stated_number(answer.digits, label.name)
    if value is None:
        what = f"for {label.name!r} " if label.name else ""
        return None, f"states no value {what}(ranges, alternatives and denominators do not count)"
    return value, ""


def check_number(value: float, label: Label) -> Outcome:
    passed = _within(value, label.value, label.tolerance, label.rel_tolerance)
    name = f"{label.name} " if label.name else ""
    verb = "matches" if passed else "does not match"
    return passed, f"{name}{value:g} {verb} {label.value:g} ({_tolerance_text(label.tolerance, label.rel_tolerance)})"


def parse_timestamp(answer: Answer, label: Label) -> Parsed:
    reading = quantities.stated_time(answer.digits, label.duration)
    return reading.value, reading.reason


def check_timestamp(value: float, label: Label) -> Outcome:
    tolerance = label.tolerance
    if tolerance is None and label.rel_tolerance is None:
        tolerance = DEFAULT_TIMESTAMP_TOLERANCE
    passed = _within(value, label.value, tolerance, label.rel_tolerance)
    verb = "matches" if passed else "does not match"
    return passed, f"{value:g}s {verb} {label.value:g}s ({_tolerance_text(tolerance, label.rel_tolerance)})"


# --- time_range and box --------------------------------------------------------------------


def parse_time_range(answer: Answer, label: Label) -> Parsed:
    reading = quantities.stated_range(answer.digits, label.duration)
    return reading.value, reading.reason


def _iou_outcome(iou: float, label: Label, shown: str) -> Outcome:
    min_iou = DEFAULT_MIN_IOU if label.min_iou is None else label.min_iou
    passed = iou >= min_iou
    return passed, f"{shown} has IoU {iou:.2f} {'>=' if passed else '<'} {min_iou:g}"


def check_time_range(value: tuple[float, float], label: Label) -> Outcome:
    if value[1] < value[0]:
        return False, f"range {value[0]:g}-{value[1]:g}s ends before it starts"
    return _iou_outcome(quantities.range_iou(value, label.value), label, f"{value[0]:g}-{value[1]:g}s")


def parse_box(answer: Answer, label: Label) -> Parsed:
    """The box the answer gives, read in the label's ``box_format`` (the format asked for)."""
    boxes = quantities.find_boxes(answer.text)
    if not boxes:
        return None, "states no box (four numbers in brackets)"
    if label.name and len(boxes) > 1:
        mentions = [m.end() for m in quantities.word_matches(quantities.name_pattern(label.name), answer.text)]
        after_name = [b for b in boxes if any(0 <= b.start - end <= 80 for end in mentions)]
        boxes = after_name[-1:] or boxes
    box_format = label.box_format or "xyxy"
    corners = [quantities.to_corners(b.numbers, box_format) for b in boxes]
    distinct = [c for i, c in enumerate(corners) if all(quantities.box_iou(c, d) < 0.5 for d in corners[:i])]
    if len(distinct) > 1:
        return None, f"offers {len(distinct)} different boxes"
    if any(n > 1.0 for n in boxes[-1].numbers):
        return None, f"box {list(boxes[-1].numbers)} is not normalized to [0, 1]"
    return corners[-1], ""


def check_box(value: tuple[float, float, float, float], label: Label) -> Outcome:
    if value[2] <= value[0] or value[3] <= value[1]:
        return False, f"box {[round(v, 3) for v in value]} has no area (read as {label.box_format or 'xyxy'})"
    shown = "box [" + ", ".join(f"{v:.3g}" for v in value) + "]"
    return _iou_outcome(quantities.box_iou(value, label.value), label, shown)


# --- yes_no ----------------------------------------------------------------------------------

_LEADING_YES_NO = re.compile(
    r"^[^a-z0-9]*(?:(?:final )?answer\s*:\s*)?(?:(yes|yeah|yep|correct|true)\b"
    r"|(no|nope|false|incorrect)(?=\s*[,.!;:]|\s*$|\s+(?:it|there|the|he|she|they|this|that|i|we)\b))"
)
_STATED_YES_NO = re.compile(
    r"(?:answer|response)\s*(?:is|would be|should be|:)\s*:?\s*[\"']?(?:(yes|true)|(no|false))\b(?!\s+one)"
    r"|(?:so|therefore|thus|hence|in conclusion|in summary|to conclude|to summarize|overall)\s*,?\s*"
    r"(?:(yes)|(no))\b(?=\s*[,.!;:]|\s*$)"
    r"|the (?:statement|claim) is (?:(true|correct)|(false|incorrect))\b"
)
_YES_NO_HEDGES = (
    "yes and no",
    "yes or no",
    "maybe",
    "perhaps",
    "possibly",
    "not sure",
    "unsure",
    "unclear",
    "hard to say",
    "it depends",
    "difficult to say",
    "can't be sure",
    "cannot be sure",
)
_YES_NO_HEDGE = re.compile(r"\b(?:" + "|".join(_YES_NO_HEDGES) + r")\b")
# Every stated answer starts with one of these; matches may overlap, so each is tried.
_YES_NO_CUE = re.compile(
    r"answer|response|so|therefore|thus|hence|in conclusion|in summary|to conclude|to summarize"
    r"|overall|the statement|the claim"
)


def _stated_yes_no(text: str) -> list[re.Match[str]]:
    """Every stated answer, tried at each cue that starts a word (matches may overlap)."""
    found = {}  # by start: two cues can start at one position
    for cue in _YES_NO_CUE.finditer(text):
        position = cue.start()
        if not (position and text[position - 1].isalnum()):
            match = _STATED_YES_NO.match(text, position)
            if match:
                found[match.start()] = match
    return list(found.values())


_SENTENCE_AROUND = re.compile(r"[^.!?\n]*")


def _sentence_at(text: str, start: int) -> str:
    begin = max(text.rfind(".", 0, start), text.rfind("\n", 0, start), text.rfind("!", 0, start)) + 1
    sentence = _SENTENCE_AROUND.match(text, begin)
    return sentence.group() if sentence else ""  # the pattern also matches "", so always a match


def parse_yes_no(answer: Answer, label: Label) -> Parsed:
    text = answer.text
    stated: list[tuple[bool, int]] = []
    leading = _LEADING_YES_NO.match(text)
    if leading:
        stated.append((leading.group(1) is not None, leading.start()))
    for match in _stated_yes_no(text):
        groups = match.groups()
        stated.append((any(groups[i] for i in (0, 2, 4)), match.start()))
    if not stated:
        return None, "commits to neither yes nor no"
    if len({value for value, _ in stated}) > 1:
        return None, "says both yes and no"
    value, position = stated[-1]
    sentence = _sentence_at(text, position + 1)
    # the engine would try the pattern at every character; most sentences hold no hedge at all
    hedge = _YES_NO_HEDGE.search(sentence) if any(map(sentence.__contains__, _YES_NO_HEDGES)) else None
    if hedge:
        return None, f"hedges: {hedge.group()!r}"
    return value, ""


def check_yes_no(value: bool, label: Label) -> Outcome:
    said, gold = ("yes" if value else "no"), ("yes" if label.value else "no")
    return value == label.value, f"answers {said}, gold {gold}"


# --- choice ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _choice_patterns(keys: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    letters = "|".join(re.escape(key) for key in sorted(keys, key=len, reverse=True))
    # "A" followed by a lower-case word is the article, unless that word is a conjunction.
    not_article = r"(?!\s+(?!(?:because|since|as|and|or|which|for|given|based|according|is|was)\b)[a-z])"
    key = rf"[\(\[]?\s*({letters})\s*[\)\]]?(?![\w'’-]){not_article}"
    conclusion = re.compile(
        r"(?i:\b(?:answer|correct (?:option|choice)|best (?:option|choice|answer)|right (?:option|choice)"
        r"|i (?:choose|pick|select|would choose|would pick|would select)|i'd (?:choose|pick|go with)"
        r"|(?:it|this) (?:must|has to|should) be|(?:must|has to) be)"
        r"\s*(?:is|would be|should be|:|=)?\s*:?\s*(?:option\s+|choice\s+)?)" + key
    )
    verdict = re.compile(rf"(?<![\w'’])(?i:option\s+|choice\s+)?{key}\s*(?i:is (?:the )?(?:correct|right|best|answer))")
    leading = re.compile(rf"^[^\w(\[]*(?i:option\s+|choice\s+)?[\(\[]?\s*({letters})\s*(?:[\)\]\.:,]|$)")
    mention = re.compile(rf"(?i:\b(?:option|choice)\s+)\(?({letters})\b|\(({letters})\)")
    # used with .match(text, pos), which anchors at pos; a "^" here would never match there
    alternative = re.compile(
        rf"\s*(?:,\s*(?:or|and)?|or|and|/|and/or)\s*(?:(?:maybe|perhaps|possibly)\s+)?(?i:option\s+|choice\s+)?[\(\[]?\s*({letters})\b{not_article}"
    )
    return conclusion, verdict, leading, mention, alternative


_MARKDOWN_MARKS = str.maketrans("*_`#", "    ")
_VERDICT_CUE = re.compile(r"is (?:the )?(?:correct|right|best|answer)")


def parse_choice(answer: Answer, label: Label) -> Parsed:
    options = _options(label)
    conclusion, verdict, leading, mention, alternative = _choice_patterns(tuple(options))
    raw = answer.raw
    if any(map(raw.__contains__, "*_`#")):  # four memchr scans; translate maps every character
        raw = raw.translate(_MARKDOWN_MARKS)
    # A conclusion is tried only where one can begin, and the verdict pattern only when
    # "is correct" is said. Lower-cased text has the same positions as the answer only
    # when it is ASCII; other answers are scanned in full.
    concluded = list(conclusion.finditer(raw))
    if _VERDICT_CUE.search(raw.lower()):  # the verdict pattern is costly; most answers never say "is correct"
        concluded += verdict.finditer(raw)
    found = max(concluded, key=lambda m: m.start(), default=None) or leading.match(raw)
    if found:
        other = alternative.match(raw, found.end())
        if other and other.group(1) != found.group(1):
            return None, f"offers options {found.group(1)} and {other.group(1)}"
        listed = _listed_options(raw, options) if found.re is leading else []
        if len(listed) > 1:
            return None, f"lists options {', '.join(listed)} without concluding"
        return found.group(1), f"states option {found.group(1)}"
    letters = sorted({a or b for a, b in mention.findall(raw)})
    if len(letters) == 1:
        return letters[0], f"names option {letters[0]}"
    if len(letters) > 1:
        return None, f"names options {', '.join(letters)} without concluding"
    return _choice_by_text(answer, options)


def _listed_options(raw: str, options: dict[str, str]) -> list[str]:
    """The options an answer echoes as a list, each letter followed by its own text.

    A leading "A." is a committed answer only when it is not the start of the question's
    option list copied back ("A. The book. B. The cup. C. ..."), which names every option.

    >>> _listed_options("A. The book. B. The cup.", {"A": "The book", "B": "The cup", "C": "A pen"})
    ['A', 'B']
    >>> _listed_options("(B) the cup, since it is on the table.", {"A": "The book", "B": "The cup"})
    ['B']
    """
    listed = []
    for key, text in options.items():
        words = r"\s+".join(map(re.escape, text.strip().rstrip(".").split()))
        marker = rf"(?<![\w'’])[\(\[]?\s*{re.escape(key)}\s*[\)\]\.:]\s*(?i:{words})"
        if re.search(marker, raw):
            listed.append(key)
    return listed


def _options(label: Label) -> dict[str, str]:
    options: dict[Any, Any] = dict(label.options or {})  # untrusted: checked below
    for key, text in options.items():
        if not isinstance(key, str) or not isinstance(text, str) or not text.strip():
            raise LabelError(f"options: option {key!r} needs a non-empty text, got {text!r}")
    return options


def _choice_by_text(answer: Answer, options: dict[str, str]) -> Parsed:
    """The one option whose text the answer asserts (the others serve as the vocabulary)."""
    phrases = distinguishing_phrases(tuple(options.values()))
    vocabulary = Vocabulary.of(phrases)
    asserted = [
        key for key, phrase in zip(options, phrases) if read_class(answer, (phrase,), vocabulary).status == "asserted"
    ]
    if len(asserted) == 1:
        return asserted[0], f"states the text of option {asserted[0]}"
    if asserted:
        return None, f"states the texts of options {', '.join(asserted)}"
    return None, "names no option letter or option text"


def check_choice(value: str, label: Label) -> Outcome:
    return value == label.value, f"chooses {value}, gold {label.value}"


# --- sequence --------------------------------------------------------------------------------


def parse_sequence(answer: Answer, label: Label) -> Parsed:
    """Where each step is asserted, each after the one before."""
    synonyms = label.synonyms if isinstance(label.synonyms, Mapping) else {}
    steps = [names_phrases((step, *synonyms.get(step, ()))) for step in label.value]
    if any(names.counts for names in steps):  # one view for all steps, so positions compare
        answer = answer.numeric
    positions: list[int] = []
    after = -1
    for number, (step, names) in enumerate(zip(label.value, steps), start=1):
        stated = _first_asserted(answer, names.phrases, after)
        if stated is None:
            where = f" after step {number - 1}" if number > 1 else ""
            return None, f"step {number} {step!r} is not stated{where}"
        after = stated.last
        positions.append(stated.first)
    return tuple(positions), ""


def _first_asserted(answer: Answer, phrases: tuple[Phrase, ...], after: int) -> Match | None:
    """The first match of any of ``phrases`` past token ``after`` that is not negated."""
    later = [match for phrase in phrases for match in find_phrase(answer, phrase) if match.first > after]
    if len(later) > 1:
        later.sort(key=in_reading_order)
    for match in later:
        if answer.negated(match.first, match.last) is None:
            return match
    return None


def check_sequence(value: tuple[int, ...], label: Label) -> Outcome:
    return True, f"states all {len(label.value)} steps in order"


# --- text --------------------------------------------------------------------------------------

_SENTENCES = re.compile(r"[^.!?\n]+")


def _has_negation(text: str) -> bool:
    return any(word in NEGATORS or word.endswith("n't") for word in split_words(text))


def parse_text(answer: Answer, label: Label) -> Parsed:
    """The answer sentence closest in meaning to the reference, and its similarity."""

    negated_reference = _has_negation(label.value)
    sentences = [s.strip() for s in _SENTENCES.findall(answer.raw) if len(s.split()) >= 3]
    sentences = [s for s in sentences[:_MAX_TEXT_SENTENCES] if _has_negation(s) == negated_reference]
    if not sentences:
        return None, "no sentence to compare (negated sentences do not count)"
    scores = similarities(label.value, sentences)
    best = max(range(len(scores)), key=scores.__getitem__)
    return (scores[best], sentences[best]), ""


def check_text(value: tuple[float, str], label: Label) -> Outcome:
    score, sentence = value
    passed = score >= DEFAULT_TEXT_THRESHOLD
    sign = ">=" if passed else "<"
    return passed, f"similarity {score:.2f} {sign} {DEFAULT_TEXT_THRESHOLD:g}: {_short(sentence)!r}"


RULES: dict[str, Rule] = {
    "class": Rule(parse_class, check_class),
    "number": Rule(parse_number, check_number),
    "timestamp": Rule(parse_timestamp, check_timestamp),
    "time_range": Rule(parse_time_range, check_time_range),
    "box": Rule(parse_box, check_box),
    "yes_no": Rule(parse_yes_no, check_yes_no),
    "choice": Rule(parse_choice, check_choice),
    "sequence": Rule(parse_sequence, check_sequence),
    "text": Rule(parse_text, check_text),
}
