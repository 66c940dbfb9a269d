"""Whole-answer guards: answers no label check should even look at.

An empty answer, a refusal ("I cannot determine ..."), a degenerate loop of one phrase,
or a runaway generation teaches the model nothing good whatever its labels say. A
rationalized answer (generated with the label as a hint) must also not lean on the
hint: "as the given answer says, ..." would be trained without the hint in the prompt.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter

from llava_star.verify.answer import MAX_ANSWER_CHARS, Answer
from llava_star.verify.verdict import ANSWER_CHECK, Check

# Matched on normalized text, where "I'm" has become "i" (answer.normalize drops clitics).
_REFUSAL = re.compile(
    r"\bi (?:am )?(?:cannot|can't|can not|unable to|not able to|do not|don't)"
    r" (?:determine|tell|say|identify|see|answer|provide|watch|view|access|know|be sure)\b"
    r"|\bi (?:am )?sorry\b|\bas an ai\b|\bas a language model\b"
    r"|\b(?:cannot|can't|can not) be (?:determined|identified|answered|told)\b"
    r"|\b(?:not possible|impossible|no way) to (?:determine|tell|say|identify|know)\b"
    r"|\b(?:not enough|insufficient) (?:information|visual information|context|details)\b"
    r"|\b(?:unable|not able) to (?:determine|tell|identify|answer)\b"
    r"|\bno video (?:was|is|has been) (?:provided|given|shown)\b"
)
_HINT_LEAK = re.compile(
    r"\b(?:given|provided|supplied|suggested|expected|stated|hinted) (?:answer|label|hint|solution)\b"
    r"|\bthe (?:answer|hint|label) (?:says|said|states|stated|indicates|given|provided|tells us)\b"
    r"|\bas (?:stated|given|indicated|mentioned|provided|suggested)(?: (?:in|by) the (?:answer|hint|label|question))?\b"
    r"|\bthe hint\b|\bground[- ]truth\b|\baccording to the (?:answer|label|hint)\b|\bwe are told\b"
)
_SENTENCE = re.compile(r"[^.!?\n]+")
_HINT_WORDS = (
    "given",
    "provided",
    "supplied",
    "suggested",
    "expected",
    "stated",
    "hinted",
    "answer",
    "hint",
    "label",
    "as ",
    "truth",
    "told",
)
# Loops: a phrase of up to this many words repeated back to back...
_MAX_LOOP_WORDS = 12
# ...at least this many times (single words need more: "very very" is English).
_MIN_LOOP_REPEATS = 4
_MIN_WORD_REPEATS = 8
# A sentence of 4+ words said this many times, or 4-grams this repetitive, is degenerate.
_MIN_SENTENCE_REPEATS = 3
_MIN_DISTINCT_NGRAM_FRACTION = 0.4
# Every kind of repetition above repeats at least this many word pairs; most answers don't.
_MIN_REPEATED_PAIRS = 5
TRUNCATED_REASON = "cut off at max_new_tokens: the answer never ended"


def check_answer(answer: Answer, *, rationalized: bool, truncated: bool = False) -> Check:
    """The ``answer`` check: why the whole answer is unusable, or that it is fine.

    A ``truncated`` answer (generation stopped at the token limit, not at an end token)
    is unusable whatever it says: trained with a stop token after it, it would teach the
    model to stop mid-sentence.
    """
    if truncated:
        return Check(ANSWER_CHECK, False, TRUNCATED_REASON)
    if len(answer.raw) > MAX_ANSWER_CHARS:
        return Check(ANSWER_CHECK, False, f"too long: {len(answer.raw)} characters > {MAX_ANSWER_CHARS}")
    if not answer.has_content:
        return Check(ANSWER_CHECK, False, "empty")
    text = answer.text
    refusal = _REFUSAL.search(text)
    if refusal:
        return Check(ANSWER_CHECK, False, f"refusal: {refusal.group()!r}")
    loop = degenerate_repetition(answer)
    if loop:
        return Check(ANSWER_CHECK, False, f"degenerate: {loop}")
    if rationalized and any(map(text.__contains__, _HINT_WORDS)):
        leak = _HINT_LEAK.search(text)
        if leak:
            return Check(ANSWER_CHECK, False, f"refers to the hint: {leak.group()!r}")
    return Check(ANSWER_CHECK, True, "usable answer")


def degenerate_repetition(answer: Answer) -> str | None:
    """Describe the repetition that makes an answer degenerate, or None.

    >>> degenerate_repetition(Answer("The man is running. " * 4))
    "'the man is running' said 4 times"
    >>> degenerate_repetition(Answer("He runs and then and then and then and then"))
    "'and then' repeated 4+ times"
    """
    # Whitespace-separated words (punctuation attached) are enough to see repetition, and
    # cheaper than the tokens, which answers with only number or yes/no labels never need.
    words = answer.text.split()
    if len(words) < _MIN_REPEATED_PAIRS + 2:  # too few word pairs to repeat that many
        return None
    repeated = len(words) - 1 - len(set(itertools.pairwise(words)))
    if repeated < _MIN_REPEATED_PAIRS:
        return None
    pairs = list(itertools.pairwise(words))
    counts = Counter(pairs)
    if max(counts.values()) < _MIN_SENTENCE_REPEATS:  # every kind of repetition below repeats some pair 3+ times
        return None
    frequent = [pair for pair, count in counts.items() if count >= _MIN_SENTENCE_REPEATS]
    sentences = Counter(" ".join(s.split()) for s in _SENTENCE.findall(answer.text))
    sentence, count = sentences.most_common(1)[0]
    if count >= _MIN_SENTENCE_REPEATS and sentence.count(" ") >= 3:
        return f"{sentence[:60]!r} said {count} times"
    loop = _back_to_back_loop(words, pairs, frequent)
    if loop:
        return loop
    if len(words) >= 40 and repeated >= len(pairs) / 2:
        grams = list(zip(words, words[1:], words[2:], words[3:]))
        distinct = len(set(grams)) / len(grams)
        if distinct < _MIN_DISTINCT_NGRAM_FRACTION:
            return f"only {distinct:.0%} of its 4-word phrases are distinct"
    return None


def _back_to_back_loop(words: list[str], pairs: list[tuple[str, str]], frequent: list[tuple[str, str]]) -> str | None:
    """A phrase repeated back to back ("and then and then and then and then").

    Such a loop repeats its first word pair at a fixed stride, so only the ``frequent``
    pairs (seen 3+ times) are followed up.
    """
    for candidate in frequent:
        found = [position for position, pair in enumerate(pairs) if pair == candidate]
        for start, following in itertools.pairwise(found):
            size = following - start
            needed = _MIN_WORD_REPEATS if size == 1 else _MIN_LOOP_REPEATS
            if size > _MAX_LOOP_WORDS or start + size * needed > len(words):
                continue
            phrase = words[start : start + size]
            if all(words[start + size * k : start + size * (k + 1)] == phrase for k in range(1, needed)):
                return f"{' '.join(phrase)!r} repeated {needed}+ times"
    return None
