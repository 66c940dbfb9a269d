"""FineDiving: score, difficulty and sub-action sequence samples per dive.

The annotations are Python pickles, read here through :class:`RestrictedUnpickler`,
which admits plain builtins and numpy arrays only: a pickle can run any code on load,
and these files come from a download. A real entry of
``FineDiving_fine-grained_annotation.pkl`` (key ``(competition, index)``; values from the
label printed in the Video-STaR paper, Fig. 5)::

    ("FINADivingWorldCup2021_Men3m_final_r1", 0): {
        "action_type": "307C", "dive_score": 85.78, "difficulty": 3.5,
        "sub-action_types": {3: "Reverse", 25: "3.5 Soms.Tuck", 36: "Entry"},
        "frames_labels": array([3, 3, ..., 25, 25, ..., 36, 36]), "judge_scores": [...],
        "steps_transit_frames": array([30, 80]), "start_frame": 489, "end_frame": 592}

becomes three samples on the frame folder ``FINADivingWorldCup2021_Men3m_final_r1/0``::

    {"id": "FINADivingWorldCup2021_Men3m_final_r1_0:score", "task": "score",
     "labels": [{"type": "number", "value": 85.78, "name": "score", "rel_tolerance": 0.05}], ...}
    {"id": "..._0:difficulty", "task": "difficulty",
     "labels": [{"type": "number", "value": 3.5, "name": "difficulty", "tolerance": 0.05}], ...}
    {"id": "..._0:steps", "task": "step_sequence",
     "labels": [{"type": "sequence", "value": ["Reverse", "3.5 Soms.Tuck", "Entry"], "name": "sub-actions"}], ...}

The sequence is in first-occurrence order of ``frames_labels`` (sorting the ids, as
Video-STaR did, misplaces ``0.5 Som.Pike`` = 37). The AQA pickle
(``fine-grained_annotation_aqa.pkl``: ``[dive number, score, difficulty, ?, frames_labels]``)
is read too, with names from ``Sub_action_Types_Table.pkl`` next to it. No time labels:
the frame rate of the frame folders is not part of the release.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava_star.datasets.adapter import Found, PrepareRequest, Skipped, located
from llava_star.datasets.questions import make_question
from llava_star.errors import AnnotationError
from llava_star.records import Label, Sample

logger = logging.getLogger(__name__)

FINE_GRAINED_FILE = "FineDiving_fine-grained_annotation.pkl"
AQA_FILE = "fine-grained_annotation_aqa.pkl"
SUB_ACTION_TABLE_FILE = "Sub_action_Types_Table.pkl"
SPLIT_FOLDERS = (".", "train_test_split", "../train_test_split", "Annotations", "../Annotations")
SCORE_REL_TOLERANCE = 0.05  # the paper accepts answers within a 5% margin of the final score
DIFFICULTY_TOLERANCE = 0.05  # degrees of difficulty are multiples of 0.1

_SAFE_BUILTINS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes", "bytearray", "bool"}
)
# what numpy arrays and scalars pickle into, under numpy 1.x and 2.x module names
_NUMPY_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # protocol-2 pickles store bytes through it
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global except plain builtins and numpy arrays.

    ``os.system`` or ``builtins.eval`` in a pickle raises instead of running.
    """

    def __init__(self, data: bytes, source: str) -> None:
        super().__init__(io.BytesIO(data))
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        # protocol-2 pickles name builtins by their Python 2 module, __builtin__
        if (module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS) or (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise AnnotationError(f"{self.source}: refusing to unpickle {module}.{name}: only plain data is allowed")


# FineDiving's largest pickle holds ~3,000 dives of ~20 values; a pickle's memo lets one list
# be referenced twice at each of 40 levels, 2**40 values from 539 bytes, which the adapter
# then expanded until memory ran out (129 s). Values are counted as the adapter would see
# them, shared references as often as they are reached, without expanding anything.
MAX_PICKLE_VALUES = 5_000_000


def load_pickle(path: Path) -> Any:
    """Unpickle a file of plain data (dicts, lists, numbers, strings, numpy arrays).

    Refuses globals other than those (:class:`RestrictedUnpickler`), and data that would
    expand to more than :data:`MAX_PICKLE_VALUES` values or refers to itself.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise AnnotationError(f"{path}: cannot read: {error.strerror}") from None
    try:
        value = RestrictedUnpickler(data, str(path)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, MemoryError) as error:
        raise AnnotationError(f"{path}: not a readable pickle: {error}") from None
    _check_expanded_size(value, path)
    return value


def _children(value: Any) -> tuple[Any, ...] | None:
    if isinstance(value, dict):
        return (*value.keys(), *value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(value)
    return None


def _check_expanded_size(value: Any, path: Path) -> None:
    """Count the values of ``value`` as a traversal would reach them, in time linear in its
    distinct containers (each container's count is kept by identity); refuse cycles."""
    counts: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        node, finished = stack.pop()
        children = _children(node)
        if children is None:
            continue
        key = id(node)
        if finished:
            on_path.discard(key)
            counts[key] = 1 + sum(counts.get(id(child), getattr(child, "size", 1)) for child in children)
            if counts[key] > MAX_PICKLE_VALUES:
                raise AnnotationError(
                    f"{path}: expands to more than {MAX_PICKLE_VALUES:,} values through shared references; "
                    "not a FineDiving annotation"
                )
        elif key in on_path:
            raise AnnotationError(f"{path}: a container that contains itself; not a FineDiving annotation")
        elif key not in counts:
            on_path.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in children)


def _plain(value: Any) -> Any:
    """numpy arrays and scalars (also inside lists) as lists and Python numbers, for JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True)
class Dive:
    competition: str
    index: int
    dive_number: str | None
    score: float
    difficulty: float
    frames_labels: tuple[int, ...]
    sub_action_names: Mapping[int, str]
    meta: Mapping[str, Any]

    @property
    def video_id(self) -> str:
        return f"{self.competition}_{self.index}"


def _number(value: Any, where: str, what: str) -> float:
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AnnotationError(f"{where}: {what}: expected a number, got {value!r}")
    return float(value)


def _frames_labels(value: Any, where: str) -> tuple[int, ...]:
    value = _plain(value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise AnnotationError(f"{where}: frames_labels: expected a list of integer sub-action ids")
    return tuple(value)


def _key(key: Any, where: str) -> tuple[str, int]:
    key = tuple(_plain(key)) if isinstance(key, (list, tuple)) else key
    if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], (str, int)) and isinstance(key[1], int)):
        raise AnnotationError(f"{where}: key {key!r}: expected (competition, index)")
    return str(key[0]), int(key[1])


def sub_action_names(table: Any, where: str) -> dict[int, str]:
    """id -> name from a Sub_action_Types_Table in either orientation (seen both ways)."""
    if not isinstance(table, dict):
        raise AnnotationError(f"{where}: expected a dict of sub-action types, got {type(table).__name__}")
    names: dict[int, str] = {}
    for key, value in table.items():
        key, value = _plain(key), _plain(value)
        if isinstance(key, int) and isinstance(value, str):
            names[key] = value
        elif isinstance(key, str) and isinstance(value, int):
            names[value] = key
        else:
            raise AnnotationError(f"{where}: entry {key!r}: {value!r}: expected id -> name or name -> id")
    return names


def _dive(key: Any, value: Any, path: Path, table: Mapping[int, str]) -> Dive:
    competition, index = _key(key, f"{path}")
    where = f"{path}: key ({competition!r}, {index})"
    if isinstance(value, dict):
        names = dict(table)
        if "sub-action_types" in value:
            names.update(sub_action_names(value["sub-action_types"], f"{where}: sub-action_types"))
        for required in ("dive_score", "difficulty", "frames_labels"):
            if required not in value:
                raise AnnotationError(f"{where}: missing field {required!r}")
        meta = {
            name: _plain(value[name])
            for name in ("judge_scores", "start_frame", "end_frame", "steps_transit_frames")
            if name in value
        }
        return Dive(
            competition,
            index,
            _plain(value.get("action_type")),
            _number(value["dive_score"], where, "dive_score"),
            _number(value["difficulty"], where, "difficulty"),
            _frames_labels(value["frames_labels"], where),
            names,
            meta,
        )
    if isinstance(value, (list, tuple)) and len(value) >= 5:  # the AQA layout
        return Dive(
            competition,
            index,
            _plain(value[0]),
            _number(value[1], where, "[1] final score"),
            _number(value[2], where, "[2] difficulty"),
            _frames_labels(value[4], where),
            dict(table),
            {},
        )
    raise AnnotationError(f"{where}: expected a dict of fields or the AQA list [number, score, difficulty, ?, frames]")


def step_names(dive: Dive) -> tuple[str, ...] | int:
    """Sub-action names in first-occurrence order, or the first id that has no name."""
    steps: list[str] = []
    for sub_action in dict.fromkeys(dive.frames_labels):
        if sub_action not in dive.sub_action_names:
            return sub_action
        steps.append(dive.sub_action_names[sub_action])
    return tuple(steps)


# The sub-action names abbreviate; answers spell them out ("2.5 Soms.Pike": "two and a half
# somersaults in the pike position"). The verifier reads number words and inflections
# itself; these are the diving words it cannot know.
_SOMERSAULTS = re.compile(r"^(?P<count>\d+(?:\.\d+)?) Soms?\.(?P<position>Pike|Tuck)$")
_POSITION_ADJECTIVES = {"Pike": "piked", "Tuck": "tucked"}
_TAKEOFF_SYNONYMS = {
    "Back": ["backward"],
    "Arm.Forward": ["armstand forward"],
    "Arm.Back": ["armstand back", "armstand backward"],
    "Arm.Reverse": ["armstand reverse"],
}
_ENTRY_SYNONYMS = ["enter water", "enter pool", "entry water"]


def step_synonyms(steps: tuple[str, ...]) -> dict[str, list[str]]:
    """Plain-word names of the sub-actions, for the sequence label's ``synonyms``.

    >>> step_synonyms(("Reverse", "3.5 Soms.Tuck", "Entry"))["3.5 Soms.Tuck"]
    ['3.5 somersaults tuck', '3.5 somersaults tucked']
    """
    synonyms: dict[str, list[str]] = {}
    for step in steps:
        somersaults = _SOMERSAULTS.match(step)
        if somersaults:
            count, position = somersaults["count"], somersaults["position"]
            names = [f"{count} somersaults {position.lower()}", f"{count} somersaults {_POSITION_ADJECTIVES[position]}"]
        elif step == "Entry":
            names = _ENTRY_SYNONYMS
        else:
            names = _TAKEOFF_SYNONYMS.get(step, [])
        if names:
            synonyms[step] = list(names)
    return synonyms


def _annotation_file(path: Path) -> Path:
    if path.is_dir():
        for name in (FINE_GRAINED_FILE, AQA_FILE):
            if (path / name).is_file():
                return path / name
        raise AnnotationError(f"--annotations {path}: no {FINE_GRAINED_FILE} or {AQA_FILE} in this folder")
    return path


def _split_keys(annotation_file: Path, split: str) -> set[tuple[str, int]]:
    name = f"{split}_split.pkl"
    for folder in SPLIT_FOLDERS:
        candidate = annotation_file.parent / folder / name
        if candidate.is_file():
            keys = load_pickle(candidate)
            if not isinstance(keys, (list, tuple, set)):
                raise AnnotationError(f"{candidate}: expected a list of (competition, index) keys")
            return {_key(key, str(candidate)) for key in keys}
    looked = ", ".join(str((annotation_file.parent / folder).resolve()) for folder in SPLIT_FOLDERS)
    raise AnnotationError(f"--split {split}: no {name} in {looked}")


def _video(video_root: Path, dive: Dive) -> str:
    """The frame folder ``competition/index``, or a re-encoded ``competition_index.mp4``."""
    folder = f"{dive.competition}/{dive.index}"
    if not (video_root / folder).is_dir() and (video_root / f"{dive.video_id}.mp4").is_file():
        return f"{dive.video_id}.mp4"
    return folder


def read_dives(annotation_file: Path, split: str | None = None) -> list[Dive]:
    annotations = load_pickle(annotation_file)
    if not isinstance(annotations, dict):
        raise AnnotationError(f"{annotation_file}: expected a dict keyed by (competition, index)")
    table_file = annotation_file.parent / SUB_ACTION_TABLE_FILE
    table = sub_action_names(load_pickle(table_file), str(table_file)) if table_file.is_file() else {}
    dives = [_dive(key, value, annotation_file, table) for key, value in annotations.items()]
    if split:
        keep = _split_keys(annotation_file, split)
        dives = [dive for dive in dives if (dive.competition, dive.index) in keep]
    return sorted(dives, key=lambda dive: (dive.competition, dive.index))


def _sample(dive: Dive, video: str, task: str, label: Label, rng: random.Random) -> Sample:
    suffix = {"step_sequence": "steps"}.get(task, task)
    meta = {"competition": dive.competition, "index": dive.index, "dive_number": dive.dive_number, **dive.meta}
    return Sample(f"{dive.video_id}:{suffix}", video, make_question(task, rng), (label,), "finediving", task, meta=meta)


def adapt(request: PrepareRequest) -> Iterator[Found | Skipped]:
    annotation_file = _annotation_file(request.annotations)
    for dive in read_dives(annotation_file, request.split):
        where = f"{annotation_file}: key ({dive.competition!r}, {dive.index})"
        video = _video(request.video_root, dive)
        with located(where):
            score = Label("number", dive.score, name="score", rel_tolerance=SCORE_REL_TOLERANCE)
            yield Found(_sample(dive, video, "score", score, request.rng), where)
            difficulty = Label("number", dive.difficulty, name="difficulty", tolerance=DIFFICULTY_TOLERANCE)
            yield Found(_sample(dive, video, "difficulty", difficulty, request.rng), where)
            steps = step_names(dive)
            if isinstance(steps, int):
                yield Skipped(f"sub-action id {steps} has no name", where)
            elif not steps:
                yield Skipped("no frames_labels", where)
            else:
                sequence = Label("sequence", steps, name="sub-actions", synonyms=step_synonyms(steps))
                yield Found(_sample(dive, video, "step_sequence", sequence, request.rng), where)
