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

_REFUSAL = re.compile(
    r"\bi (?:cannot|can't|can not|am unable to|'m unable to|am not able to|'m not able to|do not|don't)"
    r" (?:determine|tell|say|identify|see|answer|provide|watch|view|access|know|be sure)\b"
    r"|\bi'?m sorry\b|\bi am sorry\b|\bas an ai\b|\bas a language model\b"
    r"|\b(?:cannot|can't|can not) be (?:determined|identified|answered|told)\b"
    r"|\b(?:not possible|impossible|no way) to (?:determine|tell|say|identify|know)\b"
    r"|\b(?:not enough|insufficient) (?:information|visual information|context|details)\b"
    r"|\bunable to (?:determine|tell|identify|answer)\b|\bno video (?:was|is|has been) (?:provided|given|shown)\b"
)
_HINT_LEAK = re.compile(
    r"\b(?:given|provided|supplied|suggested|expected|stated|hinted) (?:answer|label|hint|solution)\b"
    r"|\bthe (?:answer|hint|label) (?:says|said|states|stated|indicates|given|provided|tells us)\b"
    r"|\bas (?:stated|given|indicated|mentioned|provided|suggested)(?: (?:in|by) the (?:answer|hint|label|question))?\b"
    r"|\bthe hint\b|\bground[- ]truth\b|\baccording to the (?:answer|label|hint)\b|\bwe are told\b"
)
_SENTENCE = re.compile(r"[^.!?\n]+")
# Loops: a phrase of up to this many words repeated back to back...
_MAX_LOOP_WORDS = 12
# ...at least this many times (single words need more: "very very" is English).
_MIN_LOOP_REPEATS = 4
_MIN_WORD_REPEATS = 8
# A sentence of 4+ words said this many times, or 4-grams this repetitive, is degenerate.
_MIN_SENTENCE_REPEATS = 3
_MIN_DISTINCT_NGRAM_FRACTION = 0.4


def check_answer(answer: Answer, *, rationalized: bool) -> Check:
    """The ``answer`` check: why the whole answer is unusable, or that it is fine."""
    if len(answer.raw) > MAX_ANSWER_CHARS:
        return Check(ANSWER_CHECK, False, f"too long: {len(answer.raw)} characters > {MAX_ANSWER_CHARS}")
    if not answer.words:
        return Check(ANSWER_CHECK, False, "empty")
    refusal = _REFUSAL.search(answer.text)
    if refusal:
        return Check(ANSWER_CHECK, False, f"refusal: {refusal.group()!r}")
    loop = degenerate_repetition(answer)
    if loop:
        return Check(ANSWER_CHECK, False, f"degenerate: {loop}")
    if rationalized:
        leak = _HINT_LEAK.search(answer.text)
        if leak:
            return Check(ANSWER_CHECK, False, f"refers to the hint: {leak.group()!r}")
    return Check(ANSWER_CHECK, True, "usable answer")


def degenerate_repetition(answer: Answer) -> str | None:
    """Describe the repetition that makes an answer degenerate, or None.

    >>> degenerate_repetition(Answer("The man is running. " * 4))
    "'the man is running' said 4 times"
    """
    words = answer.words
    sentences = Counter(
        " ".join(sentence.split()) for sentence in _SENTENCE.findall(answer.text) if len(sentence.split()) >= 4
    )
    if sentences:
        sentence, count = sentences.most_common(1)[0]
        if count >= _MIN_SENTENCE_REPEATS:
            return f"{sentence[:60]!r} said {count} times"
    loop = _back_to_back_loop(words)
    if loop:
        return loop
    if len(words) >= 40:
        grams = list(zip(words, words[1:], words[2:], words[3:]))
        distinct = len(set(grams)) / len(grams)
        if distinct < _MIN_DISTINCT_NGRAM_FRACTION:
            return f"only {distinct:.0%} of its 4-word phrases are distinct"
    return None


def _back_to_back_loop(words: list[str]) -> str | None:
    """A phrase repeated back to back ("and then and then and then and then")."""
    count = len(words)
    # Such a loop repeats each of its word pairs 3+ times; most answers repeat none.
    pairs = Counter(itertools.pairwise(words))
    if not pairs or pairs.most_common(1)[0][1] < _MIN_LOOP_REPEATS - 1:
        return None
    for size in range(1, _MAX_LOOP_WORDS + 1):
        needed = _MIN_WORD_REPEATS if size == 1 else _MIN_LOOP_REPEATS
        if size * needed > count:
            break
        run = 0
        for i in range(size, count):
            run = run + 1 if words[i] == words[i - size] else 0
            if run >= size * (needed - 1):
                return f"{' '.join(words[i - size + 1 : i + 1])!r} repeated {needed}+ times"
    return None
