"""Verifier speed: answers/s for the rule-based label types, next to a naive baseline.

The baseline is what a "does the answer contain the label" verifier costs: one
lower-cased substring test per label. Both run in the same process on the same
answers, on one core, so the ratio is stable across machines.

    python benchmarks/verifier.py [--answers 4000] [--repeats 5] [--seed 0]

Prints one line per label type and a total line with answers/s for both.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llava_star.datasets.vocabularies import load_vocabulary
from llava_star.records import Label
from llava_star.verify import verify

OPENINGS = (
    "The video shows a person in an indoor setting with good lighting.",
    "Let me describe the video step by step before answering.",
    "In the first few frames, the camera is steady and the scene is clearly visible.",
    "Step 1: I look at the setting. Step 2: I look at what the person does with their hands.",
)
MIDDLES = (
    "The person moves deliberately, and the background stays mostly unchanged.",
    "Several objects are visible nearby, including a table, a chair and a window.",
    "Looking closely at the movements of the arms and legs helps to identify the activity.",
    "The motion is repeated a few times, which is typical for this kind of action.",
)
OPTIONS = {
    "A": "The man jumps into the pool",
    "B": "The man walks away",
    "C": "The man sits down",
    "D": "The man swims laps",
}


def _chatty(rng: random.Random, conclusion: str) -> str:
    return " ".join([rng.choice(OPENINGS), rng.choice(MIDDLES), rng.choice(MIDDLES), conclusion])


def build_answers(count: int, seed: int) -> list[tuple[str, list[Label]]]:
    """Chatty answers for every rule-based type, about half of them right."""
    rng = random.Random(seed)
    kinetics = load_vocabulary("kinetics700")

    def action() -> tuple[str, list[Label]]:
        said = rng.choice(kinetics)
        gold = rng.choice([said, rng.choice(kinetics)])
        return _chatty(rng, f"Therefore, the person is {said}."), [Label("class", gold, vocabulary="kinetics700")]

    def score() -> tuple[str, list[Label]]:
        said = f"I would give it a score of {rng.randint(50, 95)}.5 out of 100."
        return _chatty(rng, said), [Label("number", 75.5, name="score", tolerance=2)]

    def moment() -> tuple[str, list[Label]]:
        said = f"The jump happens at around {rng.randint(1, 20)} seconds into the video."
        return _chatty(rng, said), [Label("timestamp", 8.0)]

    def span() -> tuple[str, list[Label]]:
        said = f"The action lasts from {rng.randint(0, 5)} to {rng.randint(6, 12)} seconds."
        return _chatty(rng, said), [Label("time_range", [3, 9])]

    def where() -> tuple[str, list[Label]]:
        said = f"The cup is at [0.{rng.randint(1, 3)}, 0.2, 0.6, 0.{rng.randint(5, 9)}] in the frame."
        return _chatty(rng, said), [Label("box", [0.2, 0.2, 0.6, 0.7])]

    def yes_no() -> tuple[str, list[Label]]:
        return rng.choice(["Yes, ", "No, "]) + _chatty(rng, "So the answer is clear."), [Label("yes_no", True)]

    def choice() -> tuple[str, list[Label]]:
        said = f"The correct answer is {rng.choice('ABCD')}."
        return _chatty(rng, said), [Label("choice", "B", options=OPTIONS)]

    def steps() -> tuple[str, list[Label]]:
        said = "First he picks up the knife, then he cuts the onion and puts it in the pan."
        return _chatty(rng, said), [Label("sequence", ["pick up knife", "cut onion", "put in pan"])]

    makers = [action, score, moment, span, where, yes_no, choice, steps]
    return [makers[i % len(makers)]() for i in range(count)]


def naive_substring(answer: str, labels: list[Label]) -> bool:
    """The baseline: the label's value (as text) appears somewhere in the answer."""
    text = answer.lower()
    return all(
        str(label.value if not isinstance(label.value, tuple) else label.value[0]).lower() in text for label in labels
    )


def answers_per_second(
    check: Callable[[str, list[Label]], object], answers: list[tuple[str, list[Label]]], repeats: int
) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for answer, labels in answers:
            check(answer, labels)
        best = min(best, time.process_time() - start)
    return len(answers) / best


def paired_rates(answers: list[tuple[str, list[Label]]], repeats: int) -> tuple[float, float]:
    """Best answers/s of verify and of the baseline, their runs interleaved: a machine whose
    speed drifts during the benchmark slows both alike, so their ratio stays put."""
    rates = [
        (answers_per_second(verify, answers, 1), answers_per_second(naive_substring, answers, 1))
        for _ in range(repeats)
    ]
    return max(rate for rate, _ in rates), max(baseline for _, baseline in rates)


def python_loop_seconds() -> float:
    """CPU seconds for a million-step Python loop: the machine's speed, to compare runs."""
    start = time.process_time()
    total = 0
    for step in range(1_000_000):
        total += step
    return time.process_time() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=4000)
    parser.add_argument(
        "--repeats", type=int, default=5, help="the best of this many runs is reported (noisy machines)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    answers = build_answers(args.answers, args.seed)
    for answer, labels in answers:  # warm the caches (lemmas, vocabulary index) as a long run would
        verify(answer, labels)
    by_type: dict[str, list[tuple[str, list[Label]]]] = {}
    for item in answers:
        by_type.setdefault(item[1][0].type, []).append(item)
    for label_type, items in by_type.items():
        rate = answers_per_second(verify, items, args.repeats)
        print(f"{label_type:<11} verify: {rate:>10,.0f} answers/s")
    rate, baseline = paired_rates(answers, args.repeats)
    passed = sum(verify(a, labels).passed for a, labels in answers)
    print(f"{'all':<11} verify: {rate:>10,.0f} answers/s  ({passed}/{len(answers)} passed)")
    print(f"{'all':<11} naive substring baseline: {baseline:>10,.0f} answers/s")
    print(f"machine: a 1M-step Python loop takes {python_loop_seconds():.3f} s of CPU")
    print(
        f"verify costs {baseline / rate:.1f}x the baseline; target >= 20,000 answers/s: {'met' if rate >= 20_000 else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
