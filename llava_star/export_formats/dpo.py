"""Preference pairs from the verifier: a passing and a failing answer to the same question.

A generation line whose question got several answers (``generate --num-answers K``, or a
failed direct answer and its rationalization) lists them all in ``answers`` with their
verdicts. Each pair is one such line's

- prompt: the ORIGINAL question (never the hint) about the sample's video or clip;
- chosen: an answer that passed; rejected: an answer that failed, to the same question
  from the same model in the same cycle (both are in the one line).

Answers cut off at ``max_new_tokens`` are in neither side (a cut-off text is no complete
answer to prefer or reject), nor are empty ones; repeated texts count once. A line gives
up to ``max_pairs`` pairs: the i-th pair is the i-th distinct passing answer (cycling)
with the i-th distinct failing answer (cycling), so failed direct answers, listed first,
are the first negatives. Pairs are written in two forms:

- TRL's conversational preference form (``prompt``/``chosen``/``rejected`` message lists;
  the prompt's content is a video then the question's text, as TRL's vision datasets put
  an image), plus the sample's ``video``/``start``/``end`` relative to the video root,
  which ``llava-star train --objective dpo`` reads;
- LLaMA-Factory's ShareGPT ranking form (``conversations`` with the ``<video>`` human
  turn, ``chosen``/``rejected`` gpt messages, ``videos``), registered in
  ``dataset_info.json`` with ``"ranking": true``.

>>> answers = [
...     {"answer": "It is red.", "passed": False, "rationalized": False, "truncated": False, "checks": []},
...     {"answer": "It is blue.", "passed": True, "rationalized": True, "truncated": False, "checks": []},
... ]
>>> [(pair.chosen["answer"], pair.rejected["answer"]) for pair in answer_pairs(answers, max_pairs=1)]
[('It is blue.', 'It is red.')]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llava_star.label_types import label_type_names
from llava_star.llava_json import GPT, HUMAN, SYSTEM, video_turns
from llava_star.records import Generation

FORMAT = "dpo"
# the metadata of a pair record (fixed JSON types, so the file loads as an Arrow table)
PAIR_METADATA = ("source", "task", "label_types", "cycle", "model", "chosen_rationalized", "rejected_rationalized")
ORIGINAL_MEDIA = ("original_video", "original_start", "original_end")


@dataclass(frozen=True)
class AnswerPair:
    """A passing and a failing answer to one question (``records.ANSWER_FIELDS`` each)."""

    chosen: Mapping[str, Any]
    rejected: Mapping[str, Any]


def all_answers(generation: Generation) -> tuple[Mapping[str, Any], ...]:
    """Every answer a line holds: its ``answers``, or the one answer of a line without them."""
    if generation.answers is not None:
        return generation.answers
    only = {
        "answer": generation.answer,
        "rationalized": generation.rationalized,
        "passed": generation.passed,
        "checks": list(generation.checks),
        "truncated": generation.truncated,
    }
    return (only,)


def _distinct(answers: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Complete, non-empty answers, each text once, in the order given."""
    seen: set[str] = set()
    kept = []
    for answer in answers:
        text = answer["answer"].strip()
        if answer["truncated"] or not text or text in seen:
            continue
        seen.add(text)
        kept.append(answer)
    return kept


def answer_pairs(
    answers: Sequence[Mapping[str, Any]], *, max_pairs: int, direct_only: bool = False
) -> list[AnswerPair]:
    """Up to ``max_pairs`` (chosen, rejected) pairs of one question's answers (see the module).

    >>> row = lambda text, passed: {"answer": text, "passed": passed, "rationalized": False, "truncated": False}
    >>> pairs = answer_pairs([row("a", True), row("b", False), row("c", False), row("a", True)], max_pairs=3)
    >>> [(p.chosen["answer"], p.rejected["answer"]) for p in pairs]
    [('a', 'b'), ('a', 'c')]
    """
    chosen = _distinct(a for a in answers if a["passed"] and not (direct_only and a["rationalized"]))
    texts = {a["answer"].strip() for a in chosen}
    rejected = [a for a in _distinct(a for a in answers if not a["passed"]) if a["answer"].strip() not in texts]
    if not chosen or not rejected:
        return []
    count = min(max_pairs, max(len(chosen), len(rejected)))
    return [AnswerPair(chosen[i % len(chosen)], rejected[i % len(rejected)]) for i in range(count)]


@dataclass
class PairStats:
    """What the pairs are made of: per task, and how many chosen answers came from rationalization."""

    lines: int = 0
    lines_with_pairs: int = 0
    duplicates: int = 0
    dropped_ungrounded: int = 0
    pairs: Counter = field(default_factory=Counter)  # task -> pairs
    chosen_rationalized: Counter = field(default_factory=Counter)  # task -> pairs

    def to_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "lines_with_pairs": self.lines_with_pairs,
            "duplicate_ids_dropped": self.duplicates,
            "ungrounded_dropped": self.dropped_ungrounded,
            "pairs": sum(self.pairs.values()),
            "pairs_chosen_rationalized": sum(self.chosen_rationalized.values()),
            "by_task": {
                task: {"pairs": self.pairs[task], "chosen_rationalized": self.chosen_rationalized[task]}
                for task in sorted(self.pairs)
            },
        }


def pair_records(
    generations: Iterable[Generation],
    *,
    max_pairs: int,
    stats: PairStats,
    direct_only: bool = False,
    drop_ungrounded: bool = False,
) -> list[dict[str, Any]]:
    """The pairs of every line as LLaVA-form records (``conversations`` = question and chosen
    answer, ``rejected`` = the failing answer), the first line of an id kept."""
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for generation in generations:
        stats.lines += 1
        if generation.id in seen:
            stats.duplicates += 1
            continue
        seen.add(generation.id)
        if drop_ungrounded and generation.grounded is False:
            stats.dropped_ungrounded += 1
            continue
        pairs = answer_pairs(all_answers(generation), max_pairs=max_pairs, direct_only=direct_only)
        stats.lines_with_pairs += bool(pairs)
        for index, pair in enumerate(pairs):
            task = generation.sample.task
            stats.pairs[task] += 1
            stats.chosen_rationalized[task] += bool(pair.chosen["rationalized"])
            records.append(_llava_pair(generation, pair, index))
    return records


def _llava_pair(generation: Generation, pair: AnswerPair, index: int) -> dict[str, Any]:
    sample = generation.sample
    record: dict[str, Any] = {"id": sample.id, "pair": index, "video": sample.video}
    if sample.start is not None:
        record["start"] = sample.start
    if sample.end is not None:
        record["end"] = sample.end
    record["conversations"] = video_turns(sample.question, pair.chosen["answer"].strip())
    record["rejected"] = pair.rejected["answer"].strip()
    record.update(
        source=sample.source,
        task=sample.task,
        label_types=label_type_names(sample.labels),
        cycle=generation.cycle,
        model=generation.model,
        chosen_rationalized=bool(pair.chosen["rationalized"]),
        rejected_rationalized=bool(pair.rejected["rationalized"]),
    )
    return record


def question_of(record: Mapping[str, Any]) -> str:
    """The question of a LLaVA-form pair record (its human turn without the ``<video>`` line)."""
    return record["conversations"][0]["value"].split("\n", 1)[1]


def to_trl(record: Mapping[str, Any]) -> dict[str, Any]:
    """TRL's conversational preference form, with the video (relative to the video root) and clip.

    >>> pair = {"id": "a", "pair": 0, "video": "v.mp4", "conversations": video_turns("Why?", "Yes."), "rejected": "No."}
    >>> to_trl(pair)["prompt"]
    [{'role': 'user', 'content': [{'type': 'video'}, {'type': 'text', 'text': 'Why?'}]}]
    >>> to_trl(pair)["rejected"]
    [{'role': 'assistant', 'content': [{'type': 'text', 'text': 'No.'}]}]
    """
    out: dict[str, Any] = {"id": record["id"], "pair": record["pair"], "video": record["video"]}
    out.update((key, record[key]) for key in ("start", "end") if key in record)
    out["prompt"] = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question_of(record)}]}]
    for side, text in (("chosen", record["conversations"][1]["value"]), ("rejected", record["rejected"])):
        out[side] = [{"role": "assistant", "content": [{"type": "text", "text": text}]}]
    out.update((key, record[key]) for key in PAIR_METADATA if key in record)
    return out


def to_llama_factory_ranking(record: Mapping[str, Any]) -> dict[str, Any]:
    """LLaMA-Factory's ShareGPT preference record: the human turn, a chosen and a rejected gpt
    message, the video in ``videos`` (a record already pointing at its playable file)."""
    out: dict[str, Any] = {
        "id": record["id"],
        "pair": record["pair"],
        "conversations": [dict(record["conversations"][0])],
    }
    out["chosen"] = {"from": GPT, "value": record["conversations"][1]["value"]}
    out["rejected"] = {"from": GPT, "value": record["rejected"]}
    out["videos"] = [record["video"]]
    out.update((key, record[key]) for key in (*PAIR_METADATA, *ORIGINAL_MEDIA) if key in record)
    return out


def ranking_dataset_info_entry(file_name: str) -> dict[str, Any]:
    """The ``dataset_info.json`` entry of a ranking file (LLaMA-Factory ``data/README.md``,
    "Preference Dataset" of the sharegpt format, with its multimodal ``videos`` column).

    >>> ranking_dataset_info_entry("pairs.json")["columns"]
    {'messages': 'conversations', 'chosen': 'chosen', 'rejected': 'rejected', 'videos': 'videos'}
    """
    columns = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "videos": "videos"}
    tags = {"role_tag": "from", "content_tag": "value", "user_tag": HUMAN, "assistant_tag": GPT, "system_tag": SYSTEM}
    return {"file_name": file_name, "formatting": "sharegpt", "ranking": True, "columns": columns, "tags": tags}


def ranking_path(output: Path) -> Path:
    """Where the LLaMA-Factory ranking file of pairs exported to ``output`` goes.

    >>> ranking_path(Path("runs/pairs.json")).as_posix()
    'runs/pairs_ranking.json'
    """
    return output.with_name(output.stem + "_ranking.json")
