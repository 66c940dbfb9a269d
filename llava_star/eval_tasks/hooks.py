"""The functions lmms-eval calls for the project's tasks (``!function`` in the YAML files).

A doc is one line of the docs file written by :mod:`llava_star.eval_tasks.docs`: the
sample's fields with its labels as a JSON string (``labels_json``), because a column of
mixed label values (strings, numbers, ranges) cannot be an Arrow column.

Each task scores only the labels it is about (:data:`SCORED_LABELS`) and keeps only the
docs that have such labels, so one prepared test file can feed every task.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llava_star.errors import ConfigError
from llava_star.generation.protocol import evaluation_prompt
from llava_star.records import Label
from llava_star.verify import verify
from llava_star.verify.answer import Answer
from llava_star.verify.quantities import stated_number

VIDEO_DIR_VARIABLE = "LLAVA_STAR_VIDEO_DIR"
# where doc_to_visual writes the clip files of ranged and frame-folder docs (default: a
# hidden folder in the video root, so a clip is cut once and found by every later run)
CLIP_CACHE_VARIABLE = "LLAVA_STAR_CLIP_CACHE"
DEFAULT_CLIP_CACHE = ".llava_star_clips"


def _is_class(label: Label) -> bool:
    return label.type == "class"


def _is_choice(label: Label) -> bool:
    return label.type == "choice"


def _is_dive_number(label: Label) -> bool:
    return label.type == "number" and label.name in ("score", "difficulty")


def _any_label(label: Label) -> bool:
    return True


# task -> which labels of a doc the task scores; a doc without any is not in the task
SCORED_LABELS: Mapping[str, Callable[[Label], bool]] = {
    "llava_star_qa": _any_label,
    "kinetics700_qa": _is_class,
    "finediving_aqa": _is_dive_number,
    "star_qa": _is_choice,
}


def labels_of(doc: Mapping[str, Any]) -> tuple[Label, ...]:
    return tuple(Label.from_dict(label) for label in json.loads(doc["labels_json"]))


def scored_labels(task: str, doc: Mapping[str, Any]) -> tuple[Label, ...]:
    """The labels of ``doc`` that ``task`` scores (empty: the doc is not in the task)."""
    keep = SCORED_LABELS[task]
    return tuple(label for label in labels_of(doc) if keep(label))


def video_dir_variable(source: str) -> str:
    """The per-dataset override of the video folder: ``LLAVA_STAR_VIDEO_DIR_<SOURCE>``.

    >>> video_dir_variable("kinetics700")
    'LLAVA_STAR_VIDEO_DIR_KINETICS700'
    >>> video_dir_variable("fine-diving")
    'LLAVA_STAR_VIDEO_DIR_FINE_DIVING'
    """
    return f"{VIDEO_DIR_VARIABLE}_{re.sub(r'[^A-Za-z0-9]', '_', source).upper()}"


def video_root(source: str, environ: Mapping[str, str] = os.environ) -> str:
    """The folder the doc's ``video`` is relative to: the per-dataset variable, else the common one."""
    for variable in (video_dir_variable(source), VIDEO_DIR_VARIABLE):
        if environ.get(variable):
            return environ[variable]
    raise ConfigError(
        f"{VIDEO_DIR_VARIABLE}: set it (or {video_dir_variable(source)}) to the folder the "
        f"{source!r} samples' videos are relative to"
    )


# ---- hooks named in the YAML files ----------------------------------------------------


def is_project_doc(doc: Mapping[str, Any]) -> bool:
    """A doc of the project's tasks (written by :mod:`llava_star.eval_tasks.docs`)."""
    return all(key in doc for key in ("video", "source", "labels_json"))


def doc_source(doc: Mapping[str, Any]) -> tuple[Path, float | None, float | None]:
    """The doc's video (a file or a frame folder) under its root, and its clip range in seconds."""
    from llava_star.media.video import resolve_video_path

    start, end = doc.get("start"), doc.get("end")
    path = resolve_video_path(video_root(doc["source"]), doc["video"])
    return path, (None if start is None else float(start)), (None if end is None else float(end))


def clip_cache_dir(source: str, environ: Mapping[str, str] = os.environ) -> Path:
    """Where the clips of ``source``'s docs go: ``$LLAVA_STAR_CLIP_CACHE/KEY`` or
    ``VIDEO_ROOT/.llava_star_clips/KEY``, KEY naming the dataset and its resolved video root,
    so two roots holding the same relative paths never share a clip."""
    root = video_root(source, environ)
    digest = hashlib.sha1(str(Path(root).resolve()).encode("utf-8")).hexdigest()[:10]
    base = Path(environ.get(CLIP_CACHE_VARIABLE) or Path(root) / DEFAULT_CLIP_CACHE)
    return base / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', source)}-{digest}"


def doc_to_visual(doc: Mapping[str, Any]) -> list[str]:
    """A file holding exactly the doc's frames, which any lmms-eval model reads whole.

    A whole video is its own path; a clip range or a frame folder is cut once to an mp4
    (:func:`llava_star.media.clips.cached_clip`, under :func:`clip_cache_dir`). Built-in
    wrappers ignore ``start``/``end`` and skip folders, so handing them the source would
    answer about the wrong frames. The ``llava_star`` adapter reads ranges itself
    (:func:`doc_source`) and does not call this for the project's docs.
    """
    from llava_star.media.clips import cached_clip

    path, start, end = doc_source(doc)
    cache = clip_cache_dir(doc["source"])
    if path.is_dir() or start is not None or end is not None:
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # e.g. a read-only dataset folder
            raise ConfigError(
                f"{cache}: cannot write clip files there ({error}); set {CLIP_CACHE_VARIABLE} "
                "(llava-star eval --clip-cache) to a writable folder"
            ) from None
    return [str(cached_clip(path, doc["video"], start, end, cache))]


def doc_to_text(doc: Mapping[str, Any], lmms_eval_specific_kwargs: Mapping[str, str] | None = None) -> str:
    """The evaluation protocol's prompt (the cycle's held-out step asks the same), between
    the task's ``pre_prompt`` and ``post_prompt`` (empty in the project's tasks)."""

    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{evaluation_prompt(doc['question'])}{kwargs.get('post_prompt', '')}"


def doc_to_target(doc: Mapping[str, Any]) -> str:
    """The gold labels as text, for logs; scoring reads the labels themselves."""
    return doc["labels_json"]


def _docs_for(task: str) -> Callable[[Any], Any]:
    def process_docs(dataset: Any) -> Any:
        return dataset.filter(lambda doc: bool(scored_labels(task, doc)))

    process_docs.__name__ = f"{task}_docs"
    return process_docs


llava_star_qa_docs = _docs_for("llava_star_qa")
kinetics700_qa_docs = _docs_for("kinetics700_qa")
finediving_aqa_docs = _docs_for("finediving_aqa")
star_qa_docs = _docs_for("star_qa")


def _answer(results: Sequence[str]) -> str:
    return results[0] if results else ""


def _verified_accuracy(task: str) -> Callable[[Mapping[str, Any], Sequence[str]], dict[str, float]]:
    def process_results(doc: Mapping[str, Any], results: Sequence[str]) -> dict[str, float]:

        return {"accuracy": float(verify(_answer(results), scored_labels(task, doc)).passed)}

    process_results.__name__ = f"{task}_results"
    return process_results


llava_star_qa_results = _verified_accuracy("llava_star_qa")
kinetics700_qa_results = _verified_accuracy("kinetics700_qa")
star_qa_results = _verified_accuracy("star_qa")


def asserted_number(answer: str, label: Label) -> float | None:
    """The value the answer states for the label's ``name``, read by the verifier's number
    parser without its last-resort guesses: "one diver jumps" states no score (it read 1.0),
    so ``parse_rate`` and the rank metrics count only answers that gave a score.

    >>> asserted_number("One diver jumps.", Label("number", 80.0, name="score")) is None
    True
    >>> asserted_number("I would give this dive a score of 81.", Label("number", 80.0, name="score"))
    81.0
    """

    return stated_number(Answer(answer).digits, label.name, last_resort=False)


def _dive_number_passed(answer: str, label: Label | None) -> float | None:
    """Within tolerance, and stated for the label's name (the verifier alone would also
    take a stray last number), so the accuracy agrees with what the rank metrics read."""

    if label is None:
        return None
    return float(asserted_number(answer, label) is not None and verify(answer, [label]).passed)


def finediving_aqa_results(doc: Mapping[str, Any], results: Sequence[str]) -> dict[str, Any]:
    """Per answer: within-tolerance flags, and the score read next to the gold score.

    ``llava-star prepare finediving`` asks for the score and the difficulty in separate
    samples, so a doc may have either; a metric about the missing one gets ``None``,
    which the aggregations leave out.
    """
    answer = _answer(results)
    labels = scored_labels("finediving_aqa", doc)
    by_name = {label.name: label for label in labels}
    score, difficulty = by_name.get("score"), by_name.get("difficulty")
    pair = None if score is None else {"prediction": asserted_number(answer, score), "gold": score.value}
    passed = [_dive_number_passed(answer, label) for label in labels]
    return {
        "accuracy": float(all(passed)),
        "score_accuracy": _dive_number_passed(answer, score),
        "difficulty_accuracy": _dive_number_passed(answer, difficulty),
        "score_spearman": pair,
        "score_relative_l2": pair,
        "parse_rate": pair,
    }
