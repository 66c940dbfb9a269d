"""Is a class name asserted by an answer? Matching, negation and hedging for phrases.

A class (``class`` labels, ``sequence`` steps, ``choice`` option texts) is asserted when
its content words appear in any inflection and any order, close together in one
sentence, not under a negation in their clause, and not as one of several classes
offered as alternatives. The original Video-STaR verifier took a fuzzy ratio > 85 on the
whole answer instead, which passes "car" for "cart", answers that list every class, and
"not playing guitar".
"""

from __future__ import annotations

import functools
import operator
import re
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from llava_star.verify.answer import Answer, split_words, word_forms

# Words that carry no meaning of a class name ("playing the guitar" == "playing guitar").
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "on",
        "in",
        "at",
        "to",
        "for",
        "with",
        "and",
        "or",
        "by",
        "from",
        "his",
        "her",
        "their",
        "its",
        "some",
        "someone",
        "something",
    ]
)
_PARENTHESES = re.compile(r"\([^)]*\)")
# Extra words allowed inside a match: "brushing her teeth", "playing an acoustic guitar".
WINDOW_SLACK = 4
# "could be X, Y", "maybe X or Y": cues that make several classes in one sentence alternatives.
_HEDGE_CUE = re.compile(
    r"\b(?:could|might|may) (?:also )?be\b|\bpossibl[ey]\b|\bperhaps\b|\bmaybe\b|\beither\b|\bnot sure\b"
    r"|\bunsure\b|\buncertain\b|\bone of\b|\bpossibilities\b|\boptions\b|\bunclear\b"
)
_ALTERNATIVE_GAP = re.compile(r"^[\s,;/&]*(?:(?:or|nor|either|maybe|perhaps|possibly|even|a|an|the)\b[\s,;/&]*)*$")
_LIST_GAP = re.compile(r"^[\s,;/&]*(?:(?:and|or|as well as|a|an|the)\b[\s,;/&]*)*$")
# More than this many other classes asserted next to the label is a list, not an answer.
MAX_OTHER_CLASSES = 3


@dataclass(frozen=True)
class Phrase:
    """A class name reduced to its content words, each as the set of its inflections."""

    text: str
    words: tuple[frozenset[str], ...]

    @property
    def size(self) -> int:
        return len(self.words)

    @functools.cached_property
    def probes(self) -> tuple[tuple[str, ...], ...]:
        """Per word, the forms no other form of it contains ("brush" for "brushing",
        "brushes", ...): the fewest substring tests that can rule the phrase out."""
        return tuple(
            tuple(form for form in forms if not any(other in form for other in forms if other != form))
            for forms in self.words
        )


@functools.lru_cache(maxsize=1 << 14)
def make_phrase(text: str) -> Phrase:
    """Content words of a class name; qualifiers in parentheses are optional.

    >>> [sorted(forms) for forms in make_phrase("brushing teeth (person)").words]
    [['brush', 'brushed', 'brushes', 'brushing', 'brushings'], ['teeth', 'tooth']]
    """
    words = [word for word in split_words(_PARENTHESES.sub(" ", text)) if word not in STOPWORDS]
    if not words:  # a name made only of stop words ("on") still has to match
        words = split_words(text)
    return Phrase(text=text, words=tuple(word_forms(word) for word in words))


# Bounds the variants of a name with many "/" and "or" alternatives.
_MAX_VARIANTS = 16


@functools.lru_cache(maxsize=1 << 14)
def class_phrases(name: str) -> tuple[Phrase, ...]:
    """The phrases that assert a class name. Dataset names carry their own alternatives:
    Kinetics' "canoeing or kayaking" is asserted by either word, Something-Something's
    "Drinking from a cup/glass/bottle" by any of the three; "dish/es" is a plural.

    >>> [len(p.words) for p in class_phrases("catching or throwing baseball")]
    [2, 2]
    >>> len(class_phrases("Drinking from a cup/glass/bottle"))
    3
    """
    words = _PARENTHESES.sub(" ", name).lower().split()
    variants = list(dict.fromkeys(" ".join(v) for v in _expand(words)))[:_MAX_VARIANTS]
    phrases = [Phrase(name, make_phrase(variant).words) for variant in variants]
    return tuple(p for p in phrases if p.words) or (make_phrase(name),)


class Names(NamedTuple):
    """The phrases of a class name and its synonyms, and whether any of them counts
    something ("2.5 Soms.Pike"): those are matched on :attr:`Answer.numeric`."""

    phrases: tuple[Phrase, ...]
    counts: bool

    def view(self, answer: Answer) -> Answer:
        return answer.numeric if self.counts else answer


@functools.lru_cache(maxsize=1 << 12)
def names_phrases(names: tuple[str, ...]) -> Names:
    """Phrases asserting any of ``names`` (a label and its synonyms).

    >>> names_phrases(("2.5 Soms.Pike",)).counts, names_phrases(("swimming",)).counts
    (True, False)
    """
    phrases = tuple(phrase for name in names for phrase in class_phrases(name))
    return Names(phrases, any(form[0].isdigit() for p in phrases for forms in p.words for form in forms))


def _expand(words: list[str]) -> list[list[str]]:
    if "or" in words[1:-1]:
        at = words.index("or", 1)
        left, right = words[:at], words[at + 1 :]
        return _expand(left + right[1:]) + _expand(left[:-1] + right)
    for at, word in enumerate(words):
        if "/" in word:
            # "towel/s", "dish/es": a plural spelled out, which inflections cover anyway
            options = [option for option in word.split("/") if len(option) > 2] or [word.split("/")[0]]
            return [variant for option in options for variant in _expand(words[:at] + [option] + words[at + 1 :])]
    return [words]


class Match(NamedTuple):
    """Where a phrase occurs: words ``first..last`` of the answer."""

    phrase: Phrase
    first: int
    last: int

    def overlaps(self, other: Match) -> bool:
        return self.first <= other.last and other.first <= self.last


# Sort key: matches in reading order.
in_reading_order = operator.attrgetter("first", "last")


def may_occur(answer: Answer, phrase: Phrase) -> bool:
    """False when a word of the phrase is not even a substring of the answer, so
    :func:`find_phrase` would find nothing: a few substring tests instead of tokenizing.

    >>> may_occur(Answer("He plays the guitar."), make_phrase("playing guitar"))
    True
    >>> may_occur(Answer("He plays the piano."), make_phrase("playing guitar"))
    False
    """
    contains = answer.text.__contains__
    return all(any(map(contains, probes)) for probes in phrase.probes)


def find_phrase(answer: Answer, phrase: Phrase) -> list[Match]:
    """Every place the phrase's words occur close together in one asserted sentence."""
    if not phrase.words:
        return []
    lists = [answer.positions_of(forms) for forms in phrase.words]
    if not all(lists):
        return []
    if len(lists) == 1:  # one content word: each occurrence outside a question is a match
        return [Match(phrase, position, position) for position in lists[0] if not answer.in_question(position)]
    window = phrase.size + WINDOW_SLACK
    sizes = [len(found) for found in lists]
    anchor = sizes.index(min(sizes))
    matches = []
    for position in lists[anchor]:
        if answer.in_question(position):
            continue
        sentence = answer.sentence(position)
        chosen = {position}
        for other, candidates in enumerate(lists):
            if other == anchor:
                continue
            near = [
                c
                for c in candidates
                if c not in chosen and abs(c - position) < window and answer.sentence(c) == sentence
            ]
            if not near:
                break
            # the nearest word, preferring one in the anchor's own clause
            if len(near) > 1:
                clause = answer.clause(position)
                near.sort(key=lambda c: (answer.clause(c) != clause, abs(c - position)))  # stable
            chosen.add(near[0])
        else:
            first, last = min(chosen), max(chosen)
            if last - first < window:
                matches.append(Match(phrase, first, last))
    return sorted(set(matches), key=in_reading_order) if len(matches) > 1 else matches


@dataclass(frozen=True)
class Vocabulary:
    """A dataset's class names, indexed by content word to find the few an answer names."""

    phrases: tuple[Phrase, ...]
    by_form: dict[str, tuple[int, ...]]

    @classmethod
    def of(cls, phrases: tuple[Phrase, ...]) -> Vocabulary:
        # Index each class by its rarest word ("guitar", not "playing"): an answer that
        # says "playing" then pulls in a handful of classes, not the fifty "playing X".
        frequency = Counter(forms for phrase in phrases for forms in set(phrase.words))
        by_form: dict[str, list[int]] = {}
        for number, phrase in enumerate(phrases):
            if phrase.words:
                for form in min(phrase.words, key=frequency.__getitem__):
                    by_form.setdefault(form, []).append(number)
        return cls(phrases, {form: tuple(numbers) for form, numbers in by_form.items()})


@functools.lru_cache(maxsize=64)
def make_vocabulary(names: tuple[str, ...]) -> Vocabulary:
    """The vocabulary of a dataset's class names (cached: Kinetics has 700)."""
    return Vocabulary.of(tuple(phrase for name in names for phrase in class_phrases(name)))


def vocabulary_matches(
    answer: Answer, vocabulary: Vocabulary, exclude: frozenset[tuple[frozenset[str], ...]]
) -> list[Match]:
    """Matches of the vocabulary classes the answer names, other than the ``exclude`` phrases."""
    present = answer.word_set
    candidates = set().union(*filter(None, map(vocabulary.by_form.get, present)))
    found = []
    for number in sorted(candidates):
        phrase = vocabulary.phrases[number]
        # cheap test first: every content word of the class occurs somewhere
        if phrase.words not in exclude and not any(map(present.isdisjoint, phrase.words)):
            found.extend(find_phrase(answer, phrase))
    return found


def distinguishing_phrases(texts: tuple[str, ...]) -> tuple[Phrase, ...]:
    """Phrases without the words every text shares: options "The man jumps" / "The man
    walks" are told apart by "jumps" and "walks", wherever the answer says "the man".

    >>> [len(p.words) for p in distinguishing_phrases(("the man jumps", "the man walks away"))]
    [1, 2]
    """
    phrases = [make_phrase(text) for text in texts]
    shared = set.intersection(*(set(p.words) for p in phrases)) if len(phrases) > 1 else set()
    return tuple(Phrase(p.text, tuple(w for w in p.words if w not in shared) or p.words) for p in phrases)


class Reading(NamedTuple):
    """How an answer uses a class: ``asserted``, ``negated``, ``hedged``, ``other`` or ``absent``."""

    status: str
    evidence: str = ""


def read_class(answer: Answer, phrases: tuple[Phrase, ...], vocabulary: Vocabulary | None = None) -> Reading:
    """Decide whether the class (any of ``phrases``: label and synonyms) is asserted."""
    if not any(may_occur(answer, phrase) for phrase in phrases):
        return Reading("absent")  # known without tokenizing the answer
    matches = sorted(
        (match for phrase in phrases for match in find_phrase(answer, phrase)),
        key=lambda m: (m.first, -m.last),
    )
    if not matches:
        return Reading("absent")
    own = frozenset(phrase.words for phrase in phrases)
    others = vocabulary_matches(answer, vocabulary, own) if vocabulary else []
    others = [other for other in others if answer.negated(other.first, other.last) is None]
    readings = [_read_match(answer, match, others) for match in matches]
    asserted = [reading for reading in readings if reading.status == "asserted"]
    if not asserted:
        return readings[-1]
    separate = {o.phrase.text for o in others if not any(o.overlaps(m) for m in matches)}
    if len(separate) > MAX_OTHER_CLASSES:
        return Reading("hedged", "also names " + ", ".join(sorted(separate)))
    return asserted[-1]


def _read_match(answer: Answer, match: Match, others: list[Match]) -> Reading:
    text = answer.span_text(match.first, match.last)
    negation = answer.negated(match.first, match.last)
    if negation is not None:
        return Reading("negated", negation)
    for other in others:
        if other.overlaps(match) and set(match.phrase.words) < set(other.phrase.words):
            return Reading("other", f"names the more specific class {other.phrase.text!r}")
    alternatives = _alternatives(answer, match, [o for o in others if not o.overlaps(match)])
    if alternatives:
        return Reading("hedged", f"{text!r} offered with {', '.join(alternatives)}")
    if _next_to_or(answer, match):
        return Reading("hedged", f"{text!r} offered as one of alternatives")
    return Reading("asserted", text)


def _next_to_or(answer: Answer, match: Match) -> bool:
    """ "swimming or something else", "either swimming": alternatives with no vocabulary."""
    words, clause = answer.words, answer.clause(match.first)
    following = words[match.last + 1] if match.last + 1 < len(words) else ""
    preceding = [w for w in words[max(0, match.first - 3) : match.first] if w not in ("a", "an", "the")]
    if following == "or" and answer.clause(match.last + 1) == clause:
        return words[match.last + 2 : match.last + 3] != ["not"]
    return bool(preceding) and preceding[-1] in ("or", "either")


def _alternatives(answer: Answer, match: Match, others: list[Match]) -> list[str]:
    """Other classes offered in the same sentence as alternatives to ``match``."""
    sentence = answer.sentence(match.first)
    same = [o for o in others if answer.sentence(o.first) == sentence]
    if not same:
        return []
    first = min([match.first] + [o.first for o in same])
    last = max([match.last] + [o.last for o in same])
    if _HEDGE_CUE.search(answer.span_text(answer.sentence_start(first), last)):
        return sorted({o.phrase.text for o in same})
    chain = _list_around(answer, match, same)
    joined_by_or = any(
        _ALTERNATIVE_GAP.match(_gap(answer, match, o)) and " or " in f" {_gap(answer, match, o)} " for o in chain
    )
    if joined_by_or or len(chain) >= 2:
        return sorted({o.phrase.text for o in chain})
    if chain and "," in _gap(answer, match, chain[0]) and " and " not in f" {_gap(answer, match, chain[0])} ":
        return [chain[0].phrase.text]
    return []


def _gap(answer: Answer, a: Match, b: Match) -> str:
    left, right = (a, b) if a.last < b.first else (b, a)
    return answer.gap_text(left.last, right.first)


def _list_around(answer: Answer, match: Match, others: list[Match]) -> list[Match]:
    """The classes joined to ``match`` by only commas, "and" or "or": a bare list."""
    members = [match]
    changed = True
    while changed:
        changed = False
        for other in others:
            if other in members:
                continue
            if any(not other.overlaps(m) and _LIST_GAP.match(_gap(answer, m, other)) for m in members):
                members.append(other)
                changed = True
    return members[1:]
