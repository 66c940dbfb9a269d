"""An answer analysed once, shared by every label check.

Video-LLaVA answers are chatty ("Step 1: ... Therefore, the person is playing the
guitar."). Every label type needs the same views of them: lower-cased words with their
lemmas, where sentences and clauses start, which words sit under a negation, and a copy
with number words turned into digits. :class:`Answer` computes each view on first use,
so a ``yes_no`` label never pays for lemmatizing.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from collections.abc import KeysView

# Work per answer is bounded by refusing longer answers in the guard (guards.py); real
# answers are a few hundred words, runaway generations are far longer.
MAX_ANSWER_CHARS = 20_000

_MARKDOWN_REPLACEMENTS = (
    ("’", "'"),
    ("‘", "'"),
    ("“", '"'),
    ("”", '"'),
    ("*", " "),
    ("#", " "),
    ("`", " "),
    ("_", " "),
)
# "the man's guitar" -> "the man guitar"; "isn't" keeps its negation
_CLITIC = re.compile(r"'(?:s|re|ll|ve|d|m)\b")
# Words and the punctuation that ends sentences and clauses, in one pass (regular
# expressions run in C; a Python loop per character or word would be ten times slower).
# A full stop, comma or colon between digits belongs to the number ("4.3", "1,200", "0:04").
_TOKEN = re.compile(r"\d+(?:[.,:]\d+)*|[a-z]+'t\b|[a-z]+|[.!?;:,\n]")
_CONTENT = re.compile(r"[a-z0-9]")
# Replaced by spaces. ASCII answers (nearly all) map bytes, the cheapest pass in C: str.translate
# looks each character up in a dict, and a regular expression tries each one in turn.
_SEPARATORS = re.compile("[" + re.escape('"()[]{}-–—/*&%$#@+=<>|\\~^`_\t\r…') + "]")
_SEPARATOR_BYTES = bytes(ord(" ") if _SEPARATORS.match(chr(code)) else code for code in range(256))
# A full stop between letters joins abbreviations ("Soms.Pike", "Arm.Forward", "e.g"): two
# words, as the label side splits them. The literal "." first lets the scan skip ahead.
_DOTTED = re.compile(r"\.(?<=[a-z]\.)(?=[a-z])")
# "two and a half" reads 2.5 once number words are digits; "a half twist" 0.5.
_AND_A_HALF = re.compile(r"\b(\d+) and (?:a|one|1) half\b")
_HALF = re.compile(r"\b(?:(?:a|one|1) )?half\b(?: an?\b)?")
_HYPHEN_BETWEEN_LETTERS = re.compile(r"(?<=[a-z])-(?=[a-z])")
_SENTENCE_END = frozenset(".!?\n")
# Tokens that open a new clause: a negation before them does not reach past them.
_CLAUSE_BREAK = frozenset(
    [",", ";", ":", "but", "however", "although", "though", "whereas", "while", "yet", "because", "since"]
    + ["so", "therefore", "thus", "hence", "which", "who", "whose", "where", "when"]
)
_CLAUSE_OPENERS = _CLAUSE_BREAK | _SENTENCE_END
_AND = frozenset(["and"])
_QUESTION_MARK = frozenset("?")
_SUBJECTS_AFTER_AND = frozenset(["he", "she", "they", "it", "then", "there", "we", "i", "you", "this", "that"])
NEGATORS = frozenset(["not", "no", "never", "nobody", "none", "nothing", "neither", "nor", "without", "cannot"])
# "not only X", "no doubt X", "without a doubt X", "nothing but X" assert X.
_NEGATION_EXEMPT_NEXT = frozenset(["only", "just", "merely", "doubt", "question", "matter"])
NEGATION_WINDOW = 8
# "instead of", "rather than": the second word negates, after the first.
_CLAUSE_NEGATORS = {"of": "instead", "than": "rather"}
_BE_DO = frozenset(["is", "are", "was", "were", "be", "does", "do", "did", "seems", "seem", "appears"])
_NEGATIVE_VERDICT_WORDS = frozenset(["incorrect", "wrong", "unlikely", "ruled", "eliminated", "excluded"])
# Substring tests first (cheap), the regular expression only when one of them hits.
_NUMBER_WORD_LIST = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
    "hundred",
    "thousand",
    "million",
]
# Longest first and whole words only: "six" alone must not stop the scan inside "sixteen".
_NUMBER_WORD = re.compile(r"(?<![a-z])(?:" + "|".join(sorted(_NUMBER_WORD_LIST, key=len, reverse=True)) + r")(?![a-z])")
# Every number word contains one of these ("seven" is in "seventeen" and "seventy").
_NUMBER_WORD_STEMS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thir",
    "fif",
    "twenty",
    "forty",
    "hundred",
    "thousand",
    "million",
)


def normalize(text: str) -> str:
    """Lower-case, straight quotes, no markdown emphasis.

    >>> normalize("**The Answer**: it’s B, isn’t it?")
    "  the answer  : it b, isn't it?"
    """
    text = text.lower()
    for mark, replacement in _MARKDOWN_REPLACEMENTS:
        if mark in text:  # a substring test is much cheaper than translating every answer
            text = text.replace(mark, replacement)
    return _CLITIC.sub("", text) if "'" in text else text


@functools.lru_cache(maxsize=1 << 16)
def word_forms(word: str) -> frozenset[str]:
    """Every inflection of the word's lemmas, so "teeth" meets "tooth" and "played" meets
    "playing". Computed for label words only (cached), so answers need no lemmatizer.

    >>> sorted(word_forms("teeth"))
    ['teeth', 'tooth']
    >>> "played" in word_forms("playing") and "car" not in word_forms("cart")
    True
    """
    from lemminflect import (
        getAllInflections,
        getAllInflectionsOOV,
        getAllLemmas,
        getAllLemmasOOV,
    )

    lemmas = {form for forms in getAllLemmas(word).values() for form in forms}
    if not lemmas and word.isalpha() and len(word) > 4 and word.endswith(("ing", "ed", "s")):
        lemmas = {
            form for forms in getAllLemmasOOV(word, "NOUN" if word.endswith("s") else "VERB").values() for form in forms
        }
    forms = {word} | lemmas
    for lemma in lemmas:
        inflections = getAllInflections(lemma) or getAllInflectionsOOV(
            lemma, "VERB" if word.endswith(("ing", "ed")) else "NOUN"
        )
        forms.update(form for found in inflections.values() for form in found)
    return frozenset(forms)


def split_words(text: str) -> list[str]:
    """The words of a phrase as the answer analysis sees them (for labels).

    >>> split_words("Brushing the dog's teeth!")
    ['brushing', 'the', 'dog', 'teeth']
    """
    return [token for token in _TOKEN.findall(normalize(text)) if token[0].isalnum()]


def _is_negator(words: list[str], index: int) -> bool:
    word = words[index]
    if word not in NEGATORS and not word.endswith("'t"):
        return False
    following = words[index + 1 : index + 3]
    if following[:1] and following[0] in _NEGATION_EXEMPT_NEXT:
        return False
    if word == "without" and following == ["a", "doubt"]:
        return False
    return not (word == "nothing" and following[:1] == ["but"]) and following != ["to", "mention"]


class Answer:
    """Views of one answer text, each computed once on first use."""

    def __init__(self, text: str) -> None:
        self.raw = text
        self.text = normalize(text)
        self._positions: dict[frozenset[str], list[int]] = {}

    @functools.cached_property
    def words(self) -> list[str]:
        """Words and the punctuation tokens . ! ? ; : , and line breaks, in order.

        String methods instead of a regular expression: twice as fast, the same tokens
        for ordinary text. A full stop, comma or colon ends a word only before a space,
        so "4.3", "1,200" and "0:04" stay whole.

        >>> Answer("He's at 4.3 s, isn't he? (Yes.)").words
        ['he', 'at', '4.3', 's', ',', "isn't", 'he', '?', 'yes', '.']
        """
        text = self.text
        if text.isascii():
            text = text.encode("ascii").translate(_SEPARATOR_BYTES).decode("ascii") + " "
        else:
            text = _SEPARATORS.sub(" ", text) + " "
        if ".." in text:  # an ellipsis ends a sentence like a full stop
            text = re.sub(r"\.{2,}", " . ", text)
        for mark in "!?\n":
            if mark in text:
                text = text.replace(mark, f" {mark} ")
        for mark in (". ", ", ", ": ", "; "):
            if mark in text:
                text = text.replace(mark, " " + mark)
        if text.count(".") != text.count(" . "):  # a full stop inside a word: "4.3", "soms.pike"
            text = _DOTTED.sub(" ", text)
        if "'" in text:  # quotes, not contractions
            text = text.replace(" '", " ").replace("' ", " ")
        return text.split()

    @property
    def has_content(self) -> bool:
        return _CONTENT.search(self.text) is not None

    @functools.cached_property
    def _openers(self) -> list[int]:
        """Positions of the punctuation and words that open clauses (sentence ends included):
        one pass over the tokens serves both sentences and clauses."""
        words = self.words
        return list(itertools.compress(range(len(words)), map(_CLAUSE_OPENERS.__contains__, words)))

    @functools.cached_property
    def _sentence_ends(self) -> list[int]:
        """Positions of the tokens that end sentences, in order."""
        words = self.words
        return [position for position in self._openers if words[position] in _SENTENCE_END]

    def sentence(self, index: int) -> int:
        """The sentence of token ``index`` (an end mark belongs to the sentence it ends).

        Found by bisecting the few sentence ends: cheaper than numbering every token,
        and answers are only ever asked about the handful of tokens a phrase matched.

        >>> answer = Answer("He runs. She swims!")
        >>> [answer.sentence(i) for i in range(len(answer.words))]
        [0, 0, 0, 1, 1, 1]
        """
        return bisect.bisect_left(self._sentence_ends, index)

    @functools.cached_property
    def _clause_starts(self) -> list[int]:
        """Positions of the tokens that open clauses: commas, sentence ends and "but",
        "which", "and he" ... (a punctuation mark belongs to the clause it opens)."""
        starts = self._openers
        if "and" in self.word_set and not self.word_set.isdisjoint(_SUBJECTS_AFTER_AND):
            words, subjects = self.words, []
            for position in self.positions_of(_AND):
                if position + 1 < len(words) and words[position + 1] in _SUBJECTS_AFTER_AND:
                    subjects.append(position + 1)
            if subjects:
                starts = sorted(set(starts).union(subjects))
        return starts

    def clause(self, index: int) -> int:
        """The clause of token ``index``.

        >>> answer = Answer("He runs, but she swims and he waits.")
        >>> [answer.clause(i) for i in range(len(answer.words))]
        [0, 0, 1, 2, 2, 2, 2, 3, 3, 4]
        """
        return bisect.bisect_right(self._clause_starts, index)

    def sentence_start(self, index: int) -> int:
        """The first token of the sentence of token ``index``."""
        sentence = self.sentence(index)
        return self._sentence_ends[sentence - 1] + 1 if sentence else 0

    @functools.cached_property
    def _questions(self) -> frozenset[int]:
        if "?" not in self.text:
            return frozenset()
        return frozenset(self.sentence(position) for position in self.positions_of(_QUESTION_MARK))

    def in_question(self, index: int) -> bool:
        """True when token ``index`` is in a sentence ending with "?" (asked, not asserted)."""
        return bool(self._questions) and self.sentence(index) in self._questions

    def span_text(self, first: int, last: int) -> str:
        """Tokens ``first`` to ``last`` (inclusive), for evidence in reasons."""
        return " ".join(self.words[first : last + 1])

    def gap_text(self, first: int, last: int) -> str:
        """The tokens strictly between ``first`` and ``last`` ("" when adjacent)."""
        return " ".join(self.words[first + 1 : last])

    @functools.cached_property
    def _last_position(self) -> dict[str, int]:
        """Each distinct word and where it last occurs (built in C: later positions win)."""
        words = self.words
        return dict(zip(words, range(len(words))))

    @functools.cached_property
    def _first_position(self) -> dict[str, int]:
        words = self.words
        return dict(zip(reversed(words), range(len(words) - 1, -1, -1)))

    @property
    def word_set(self) -> KeysView[str]:
        """The distinct words (a set view: ``in``, ``isdisjoint``, iteration)."""
        return self._last_position.keys()

    def positions_of(self, forms: frozenset[str]) -> list[int]:
        """Where any of ``forms`` occurs (cached per answer: synonyms share words).

        Most words occur once, found by two dictionary lookups; a repeated word's other
        positions lie between its first and last and are found by ``list.index`` (C).
        """
        found = self._positions.get(forms)
        if found is None:
            last, found = self._last_position, []
            for word in forms:  # a handful of inflections
                end = last.get(word)
                if end is not None:
                    position = self._first_position[word]
                    found.append(position)
                    while position != end:
                        position = self.words.index(word, position + 1)
                        found.append(position)
            found.sort()
            self._positions[forms] = found
        return found

    @functools.cached_property
    def _negator_positions(self) -> list[tuple[int, bool]]:
        """(position, reaches the whole clause) of each negating word.

        "instead of X" and "rather than X" negate X anywhere later in the clause; "not",
        "no one", "isn't", "never" negate within a few words.
        """
        words, present = self.words, self.word_set
        candidates = {word for word in NEGATORS if word in present}
        candidates |= {word for word, opener in _CLAUSE_NEGATORS.items() if opener in present and word in present}
        contractions = "'t" in self.text
        if not candidates and not contractions:
            return []  # most answers: no token scan
        if contractions:
            positions = [i for i, word in enumerate(words) if word in candidates or word.endswith("'t")]
        else:
            positions = self.positions_of(frozenset(candidates))
        found = []
        for position in positions:
            word = words[position]
            if word in _CLAUSE_NEGATORS:
                if position and words[position - 1] == _CLAUSE_NEGATORS[word]:
                    found.append((position, True))
            elif _is_negator(words, position):
                found.append((position, False))
        return found

    def negated(self, first: int, last: int) -> str | None:
        """The negating words when the phrase at words ``first..last`` is negated in its clause."""
        negators = self._negator_positions
        if negators and negators[0][0] < first:  # most answers negate nothing
            clause = self.clause(first)
            for position, whole_clause in negators:
                if position >= first:
                    break
                if self.clause(position) == clause and (whole_clause or first - position <= NEGATION_WINDOW):
                    return self.span_text(position, last)
        return self._negated_after(last)

    def _negated_after(self, last: int) -> str | None:
        """ "swimming is not ...", "B is incorrect": a verdict right after the phrase."""
        words, starts = self.words, self._clause_starts
        following = bisect.bisect_right(starts, last)  # the next clause opens at starts[following]
        end = min(last + 4, len(words), starts[following] if following < len(starts) else len(words))
        after = range(last + 1, end)
        if not after:
            return None
        next_words = words[last + 1 : end]
        if not _NEGATIVE_VERDICT_WORDS.isdisjoint(next_words):
            return self.span_text(last, after[-1])
        if next_words[0].endswith("'t") or (
            next_words[0] in _BE_DO and len(next_words) > 1 and next_words[1] in ("not", "never")
        ):
            return self.span_text(last, after[min(1, len(after) - 1)])
        return None

    @functools.cached_property
    def digits(self) -> str:
        """The text with number words as digits ("seventy-five" -> "75"), for number parsers."""
        return with_digits(self.text)

    @functools.cached_property
    def numeric(self) -> Answer:
        """The answer with its counts as digits, for class names that contain numbers
        ("2.5 Soms.Pike" is asserted by "two and a half somersaults in the pike position").

        >>> Answer("One and a half twists, then a half-twist.").numeric.words
        ['1.5', 'twists', ',', 'then', '0.5', 'twist', '.']
        """
        text = self.digits if "-" not in self.text else with_digits(_HYPHEN_BETWEEN_LETTERS.sub(" ", self.text))
        if "half" in text:
            text = _HALF.sub("0.5", _AND_A_HALF.sub(r"\1.5", text))
        return self if text == self.text else Answer(text)


def with_digits(text: str) -> str:
    """Number words as digits; the text itself (no parser call) when it has none.

    >>> with_digits("sixteen people and seventy-five chairs")
    '16 people and 75 chairs'
    """
    if not any(map(text.__contains__, _NUMBER_WORD_STEMS)) or _NUMBER_WORD.search(text) is None:
        return text
    from text_to_num import alpha2digit

    return alpha2digit(text, "en", threshold=0)
