"""Question templates: how a label of a given task is asked about.

Video-STaR turns labels into questions by drawing one of many paraphrases per task, so
the fine-tuned model learns the task rather than one sentence. Each template may hold
``{slot}`` fields (the thing to count, the event to localize, ...) but never the answer:
the gold label is what the model must produce. ``make_question`` also refuses to return
a question that contains any string passed as ``avoid`` (e.g. the class name), trying
the other paraphrases first.

Randomness comes from the ``random.Random`` passed in, so a seeded ``prepare`` run
writes the same questions every time.
"""

from __future__ import annotations

import functools
import random
import string
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from types import MappingProxyType

TEMPLATES_FILE = "data/question_templates.yaml"


@functools.lru_cache(maxsize=1)
def question_templates() -> Mapping[str, tuple[str, ...]]:
    """Task -> its paraphrases, from the packaged YAML file (data, not code).

    >>> "What is happening in this video?" in question_templates()["action_recognition"]
    True
    """
    from llava_star.config import load_yaml  # the one YAML reader: no aliases, bounded depth

    text = resources.files("llava_star").joinpath(TEMPLATES_FILE).read_text(encoding="utf-8")
    return MappingProxyType({task: tuple(templates) for task, templates in load_yaml(text).items()})


@functools.lru_cache(maxsize=4096)
def template_slots(template: str) -> frozenset[str]:
    """The ``{slot}`` names a template needs.

    >>> sorted(template_slots("How many {thing} are in {place}?"))
    ['place', 'thing']
    """
    return frozenset(name for _, name, _, _ in string.Formatter().parse(template) if name)


def task_slots(task: str) -> frozenset[str]:
    """The slots every template of ``task`` needs (the same set for all its paraphrases)."""
    return template_slots(_templates(task)[0])


def format_options(options: Mapping[str, str]) -> str:
    """Lay out multiple-choice options one a line, in key order.

    >>> format_options({"B": "The door.", "A": "The towel."})
    '(A) The towel.\\n(B) The door.'
    """
    return "\n".join(f"({key}) {text}" for key, text in sorted(options.items()))


def event_phrase(text: str, *, quote: bool = False) -> str:
    """A class name or caption as it reads inside "When does ... happen?".

    Class names start lower-case ("Someone is" dropped, as in Charades); whole sentences
    read better quoted.

    >>> event_phrase("Someone is cooking something"), event_phrase("A man sings.", quote=True)
    ('cooking something', '"a man sings"')
    """
    phrase = text.strip().rstrip(".").strip().removeprefix("Someone is ")
    if phrase[:1].isupper() and not phrase[1:2].isupper():
        phrase = phrase[:1].lower() + phrase[1:]
    return f'"{phrase}"' if quote else phrase


def _templates(task: str) -> tuple[str, ...]:
    try:
        return question_templates()[task]
    except KeyError:
        raise ValueError(f"unknown question task {task!r}; known tasks: {', '.join(question_templates())}") from None


def _contains_phrase(text: str, phrase: str) -> bool:
    """Whole-word, case-insensitive containment ("run" is not in "running late").

    >>> _contains_phrase("What is the Runner doing?", "runner"), _contains_phrase("running late", "run")
    (True, False)
    """
    text, phrase = text.casefold(), phrase.strip().casefold()
    if not phrase:
        return False
    start = text.find(phrase)
    while start >= 0:
        end = start + len(phrase)
        before_ok = start == 0 or not (text[start - 1].isalnum() or text[start - 1] == "_")
        after_ok = end == len(text) or not (text[end].isalnum() or text[end] == "_")
        if before_ok and after_ok:
            return True
        start = text.find(phrase, start + 1)
    return False


def fill_template(
    templates: Sequence[str], rng: random.Random, *, avoid: Iterable[str] = (), label: str = "question", **slots: str
) -> str:
    """Draw one of ``templates`` with ``rng``, fill its slots, and keep ``avoid`` out.

    The engine behind :func:`make_question`, also used for the templates a generic
    dataset mapping brings along. ``label`` names the template set in error messages.

    >>> fill_template(["Where is the {thing}?"], random.Random(0), thing="cup")
    'Where is the cup?'
    """
    if not templates:
        raise ValueError(f"{label}: no question templates")
    needed = frozenset().union(*(template_slots(template) for template in templates))
    missing, unknown = needed - set(slots), set(slots) - needed
    if missing or unknown:
        raise ValueError(
            f"{label} needs slot(s) {sorted(needed)}; missing {sorted(missing)}, unexpected {sorted(unknown)}"
        )
    empty = sorted(name for name, value in slots.items() if not isinstance(value, str) or not value.strip())
    if empty:
        raise ValueError(f"{label}: slot(s) {empty} must be non-empty strings")
    avoid = [phrase for phrase in avoid if phrase and phrase.strip()]
    order = list(range(len(templates)))
    rng.shuffle(order)
    for index in order:
        question = templates[index].format(**{name: value.strip() for name, value in slots.items()})
        if not any(_contains_phrase(question, phrase) for phrase in avoid):
            return question
    raise ValueError(f"every {label} paraphrase would contain the answer ({avoid!r}); check the slots")


def make_question(task: str, rng: random.Random, *, avoid: Iterable[str] = (), **slots: str) -> str:
    """Draw a paraphrase for ``task`` with ``rng`` and fill its slots.

    ``avoid`` lists strings the question must not contain (the answer and its synonyms);
    paraphrases that would contain one are skipped, and if all would, ValueError.

    >>> make_question("counting", random.Random(0), thing="red squares").count("red squares")
    1
    """
    return fill_template(_templates(task), rng, avoid=avoid, label=f"question task {task!r}", **slots)
