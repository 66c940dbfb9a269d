"""The two prompts of Video-STaR, and how a gold label is written into the hint.

The wording is the paper's (and its code's, ``videostar/data_generation.py``): the model
is asked to reason step by step; for rationalization the gold answer is given as a hint
("Question: q / Answer: a.") and the model explains how one arrives at it. Only the prompt
carries the hint: the training sample keeps the original question, so the fine-tuned
model learns to reason without being told the answer.

Changing a prompt changes what the model is trained on; the tests snapshot them.
"""

from __future__ import annotations

from collections.abc import Sequence

from llava_star.label_types import LABEL_TYPES
from llava_star.records import Label

REASONING_REQUEST = "Can you explain step-by-step how one can arrive at this conclusion?"


def direct_prompt(question: str) -> str:
    """The question as asked in generation: answer with step-by-step reasoning.

    >>> print(direct_prompt("What colour is the shape?"))
    Question: What colour is the shape?
    Can you explain step-by-step how one can arrive at this conclusion?
    """
    return f"Question: {question.strip()}\n{REASONING_REQUEST}"


def hint_prompt(question: str, labels: Sequence[Label]) -> str:
    """The rationalization prompt: the gold labels are given, the reasoning is asked for.

    >>> print(hint_prompt("What colour is the shape?", [Label("class", "red")]))
    Question: What colour is the shape?
    Answer: red.
    Can you explain step-by-step how one can arrive at this conclusion?
    """
    answer = "; ".join(render_label(label) for label in labels)
    return f"Question: {question.strip()}\nAnswer: {answer.rstrip('.')}.\n{REASONING_REQUEST}"


def render_label(label: Label) -> str:
    """A gold label in words the verifier reads back as that label (its type's ``render``).

    >>> render_label(Label("number", 85.5, name="score"))
    'score 85.5'
    >>> render_label(Label("time_range", [1.5, 3.0]))
    'from 1.5 seconds to 3 seconds'
    >>> render_label(Label("choice", "B", options={"A": "a cat", "B": "a dog"}))
    '(B) a dog'
    """
    return LABEL_TYPES[label.type].render(label)
