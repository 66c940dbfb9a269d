"""An answer analysed once, shared by every label check.

Video-LLaVA answers are chatty ("Step 1: ... Therefore, the person is playing the
guitar."). Every label type needs the same views of them: lower-cased words with their
lemmas, where sentences and clauses start, which words sit under a negation, and a copy
with number words turned into digits. :class:`Answer` computes each view on first use,
so a ``yes_no`` label never pays for lemmatizing.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from functools import cached_property

# Work per answer is bounded by refusing longer answers in the guard (guards.py); real
# answers are a few hundred words, runaway generations are far longer.
MAX_ANSWER_CHARS = 20_000

_MARKDOWN = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "*": " ", "#": " ", "`": " ", "_": " "})
_TOKEN = re.compile(r"\d+(?:[.,:]\d+)*|[a-z]+(?:'[a-z]+)?|[.!?;:,\n]")
_SENTENCE_END = frozenset(".!?\n")
_CLAUSE_END = frozenset(",;:")
# Words that open a new clause: a negation before them does not reach past them.
_CLAUSE_OPENERS = frozenset(
    ["but", "however", "although", "though", "whereas", "while", "yet", "because", "since", "so"]
    + ["therefore", "thus", "hence", "which", "who", "whose", "where", "when"]
)
_SUBJECTS_AFTER_AND = frozenset(["he", "she", "they", "it", "then", "there", "we", "i", "you", "this", "that"])
NEGATORS = frozenset(["not", "no", "never", "nobody", "none", "nothing", "neither", "nor", "without", "cannot"])
# "not only X", "no doubt X", "without a doubt X", "nothing but X" assert X.
_NEGATION_EXEMPT_NEXT = frozenset(["only", "just", "merely", "doubt", "question", "matter"])
NEGATION_WINDOW = 8
_BE_DO = frozenset(["is", "are", "was", "were", "be", "does", "do", "did", "seems", "seem", "appears"])
_NEGATIVE_VERDICT_WORDS = frozenset(["incorrect", "wrong", "unlikely", "ruled", "eliminated", "excluded"])
_NUMBER_WORD = re.compile(
    r"\b(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
    r"fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|"
    r"ninety|hundred|thousand|million)\b"
)


def normalize(text: str) -> str:
    """Lower-case, straight quotes, no markdown emphasis.

    >>> normalize("**The Answer**: it’s B")
    "  the answer  : it's b"
    """
    return text.translate(_MARKDOWN).lower()


@functools.lru_cache(maxsize=1 << 16)
def word_keys(word: str) -> frozenset[str]:
    """The word and its lemmas, so "teeth" meets "tooth" and "played" meets "playing".

    >>> sorted(word_keys("teeth"))
    ['teeth', 'tooth']
    """
    from lemminflect import getAllLemmas, getAllLemmasOOV

    lemmas = getAllLemmas(word)
    if not lemmas and word.isalpha() and len(word) > 4 and word.endswith(("ing", "ed", "s")):
        lemmas = getAllLemmasOOV(word, "NOUN" if word.endswith("s") else "VERB")
    keys = {word}
    for forms in lemmas.values():
        keys.update(forms)
    return frozenset(keys)


def split_words(text: str) -> list[str]:
    """The words of a phrase as the answer analysis sees them (for labels)."""
    return [_strip_clitic(token) for token in _TOKEN.findall(normalize(text)) if token[0].isalnum()]


def _strip_clitic(token: str) -> str:
    if "'" in token and not token.endswith("n't"):
        return token.split("'", 1)[0]
    return token


def _is_negator(words: list[str], index: int) -> bool:
    word = words[index]
    if word not in NEGATORS and not word.endswith("n't"):
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

    @cached_property
    def _tokens(self) -> tuple[list[str], list[int], list[int], list[int], list[int], set[int]]:
        words: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        sentence_of: list[int] = []
        clause_of: list[int] = []
        questions: set[int] = set()
        sentence = clause = 0
        for match in _TOKEN.finditer(self.text):
            token = match.group()
            if token in _SENTENCE_END:
                if token == "?":
                    questions.add(sentence)
                sentence += 1
                clause += 1
                continue
            if token in _CLAUSE_END:
                clause += 1
                continue
            token = _strip_clitic(token)
            if token in _CLAUSE_OPENERS or (words and words[-1] == "and" and token in _SUBJECTS_AFTER_AND):
                clause += 1
            words.append(token)
            starts.append(match.start())
            ends.append(match.end())
            sentence_of.append(sentence)
            clause_of.append(clause)
        return words, starts, ends, sentence_of, clause_of, questions

    @property
    def words(self) -> list[str]:
        return self._tokens[0]

    @property
    def sentence_of(self) -> list[int]:
        return self._tokens[3]

    @property
    def clause_of(self) -> list[int]:
        return self._tokens[4]

    def in_question(self, index: int) -> bool:
        """True when word ``index`` is in a sentence ending with "?" (asked, not asserted)."""
        return self.sentence_of[index] in self._tokens[5]

    def span_text(self, first: int, last: int) -> str:
        """The answer text from word ``first`` to word ``last`` (inclusive)."""
        return self.text[self._tokens[1][first] : self._tokens[2][last]]

    def gap_text(self, first: int, last: int) -> str:
        """The text strictly between word ``first`` and word ``last``."""
        return self.text[self._tokens[2][first] : self._tokens[1][last]]

    @cached_property
    def index(self) -> dict[str, list[int]]:
        """Lemma or word -> positions of the words that have it."""
        positions: dict[str, list[int]] = defaultdict(list)
        for position, word in enumerate(self.words):
            for key in word_keys(word):
                positions[key].append(position)
        return positions

    @cached_property
    def _negator_positions(self) -> list[tuple[int, bool]]:
        """(position, reaches the whole clause) of each negating word.

        "instead of X" and "rather than X" negate X anywhere later in the clause; "not",
        "no one", "isn't", "never" negate within a few words.
        """
        words = self.words
        found = []
        for position, word in enumerate(words):
            if (word == "of" and position and words[position - 1] == "instead") or (
                word == "than" and position and words[position - 1] == "rather"
            ):
                found.append((position, True))
            elif _is_negator(words, position):
                found.append((position, False))
        return found

    def negated(self, first: int, last: int) -> str | None:
        """The negating words when the phrase at words ``first..last`` is negated in its clause."""
        clause = self.clause_of[first]
        for position, whole_clause in self._negator_positions:
            if position >= first:
                break
            if self.clause_of[position] == clause and (whole_clause or first - position <= NEGATION_WINDOW):
                return self.span_text(position, last)
        return self._negated_after(last)

    def _negated_after(self, last: int) -> str | None:
        """"swimming is not ...", "B is incorrect": a verdict right after the phrase."""
        words, clause = self.words, self.clause_of[last]
        after = [i for i in range(last + 1, min(last + 4, len(words))) if self.clause_of[i] == clause]
        if not after:
            return None
        next_words = [words[i] for i in after]
        if any(word in _NEGATIVE_VERDICT_WORDS for word in next_words):
            return self.span_text(last, after[-1])
        if next_words[0].endswith("n't") or (
            next_words[0] in _BE_DO and len(next_words) > 1 and next_words[1] in ("not", "never")
        ):
            return self.span_text(last, after[min(1, len(after) - 1)])
        return None

    @cached_property
    def digits(self) -> str:
        """The text with number words as digits ("seventy-five" -> "75"), for number parsers."""
        if not _NUMBER_WORD.search(self.text):
            return self.text
        from text_to_num import alpha2digit

        return alpha2digit(self.text, "en", threshold=0)
