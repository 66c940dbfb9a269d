"""The lmms-eval tasks: metrics on tables of answers, doc selection, binding, loading."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from llava_star.errors import ConfigError, RecordError
from llava_star.eval_tasks import GROUP_NAME, TASK_NAMES, group_tasks, hooks, metrics, tasks_dir
from llava_star.eval_tasks.docs import bind_tasks, count_docs, sample_to_doc
from llava_star.eval_tasks.hooks import doc_to_text, scored_labels, video_dir_variable, video_root
from llava_star.generation.prompts import direct_prompt
from llava_star.records import Sample

REPO_ROOT = Path(__file__).resolve().parents[1]

KINETICS = {
    "id": "k700-1",
    "video": "abseiling/a.mp4",
    "question": "What is happening in this video?",
    "labels": [{"type": "class", "value": "abseiling", "vocabulary": "kinetics700"}],
    "source": "kinetics700",
    "task": "action_recognition",
}
DIVE = {
    "id": "fd-1",
    "video": "FINADiving_MTL_256s/17/8",
    "question": "What score did this dive get, and its difficulty?",
    "labels": [
        {"type": "number", "value": 75.6, "name": "score", "rel_tolerance": 0.05},
        {"type": "number", "value": 3.2, "name": "difficulty", "tolerance": 0.05},
        {"type": "sequence", "value": ["Forward", "Pike", "Entry"]},
    ],
    "source": "finediving",
    "task": "score",
}
STAR = {
    "id": "star-1",
    "video": "6H78U.mp4",
    "start": 11.1,
    "end": 19.6,
    "question": "Which object was tidied up by the person?\n(A) The blanket. (B) The clothes.",
    "labels": [
        {"type": "choice", "value": "B", "options": {"A": "The blanket.", "B": "The clothes."}},
        {"type": "time_range", "value": [11.1, 19.6]},
    ],
    "source": "star",
    "task": "multiple_choice",
    "meta": {"question_id": "Interaction_T1_13"},
}
SYNTHETIC = {
    "id": "syn-1",
    "video": "videos/0001.mp4",
    "question": "How many squares are there?",
    "labels": [{"type": "number", "value": 3, "name": "count"}],
    "source": "synthetic",
    "task": "counting",
}


def _write_samples(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "items, expected",
    [
        ([1.0, 0.0, 1.0, 1.0], 0.75),
        ([1.0, None, 0.0], 0.5),
        ([True, False], 0.5),
        ([None, None], math.nan),
        ([], math.nan),
    ],
)
def test_mean_of_known(items, expected):
    assert metrics.mean_of_known(items) == pytest.approx(expected, nan_ok=True)


def _pairs(predictions, golds):
    return [{"prediction": p, "gold": g} for p, g in zip(predictions, golds)]


@pytest.mark.parametrize(
    "items, expected",
    [
        (_pairs([1, 2, 3, 4], [10, 20, 30, 40]), 1.0),  # same order
        (_pairs([4, 3, 2, 1], [10, 20, 30, 40]), -1.0),  # reversed
        (_pairs([10, 20, 30, 40], [10, 20, 40, 30]), 0.8),  # one swap: 1 - 6*2/(4*15)
        (_pairs([1, 1, 2], [1, 2, 3]), math.sqrt(3) / 2),  # a tie gets the mean rank 1.5
        (_pairs([1, None, 2, 3], [5, 1, 6, 7]), 1.0),  # unparsed answers are left out
        (_pairs([1], [5]), math.nan),  # one pair: undefined
        (_pairs([2, 2, 2], [1, 2, 3]), math.nan),  # constant predictions: undefined
        ([None, None], math.nan),
    ],
)
def test_spearman(items, expected):
    assert metrics.spearman(items) == pytest.approx(expected, nan_ok=True)


@pytest.mark.parametrize(
    "items, expected",
    [
        (_pairs([50, 100], [50, 100]), 0.0),
        (_pairs([60, 100], [50, 100]), ((10 / 50) ** 2 + 0) / 2),
        (_pairs([0, 150], [50, 100]), 1.0),  # off by the whole gold range both times
        (_pairs([None, 70, 90], [10, 50, 100]), ((20 / 50) ** 2 + (10 / 50) ** 2) / 2),  # range over parsed
        (_pairs([80, 90], [70, 70]), math.nan),  # no gold spread
        ([], math.nan),
    ],
)
def test_relative_l2(items, expected):
    assert metrics.relative_l2(items) == pytest.approx(expected, nan_ok=True)


@pytest.mark.parametrize(
    "items, expected",
    [
        (_pairs([1, None, 3, None], [1, 2, 3, 4]), 0.5),
        (_pairs([1, 2], [1, 2]) + [None], 1.0),  # None: a doc without that gold value
        ([None], math.nan),
    ],
)
def test_parse_rate(items, expected):
    assert metrics.parse_rate(items) == pytest.approx(expected, nan_ok=True)


def test_average_ranks_share_ties():
    assert metrics.average_ranks([3.0, 1.0, 3.0, 2.0, 3.0]) == [4.0, 1.0, 4.0, 2.0, 4.0]


def _doc(row: dict) -> dict:
    return sample_to_doc(Sample.from_dict(row))


def test_doc_columns_have_one_type_whatever_the_labels():
    docs = [_doc(row) for row in (KINETICS, DIVE, STAR, SYNTHETIC)]
    assert {tuple(doc) for doc in docs} == {
        ("id", "video", "start", "end", "question", "source", "task", "labels_json")
    }
    assert all(isinstance(doc["labels_json"], str) for doc in docs)
    assert json.loads(_doc(STAR)["labels_json"])[0]["options"] == {"A": "The blanket.", "B": "The clothes."}
    assert (_doc(STAR)["start"], _doc(STAR)["end"]) == (11.1, 19.6)


@pytest.mark.parametrize(
    "task, row, scored_types",
    [
        ("kinetics700_qa", KINETICS, ["class"]),
        ("kinetics700_qa", DIVE, []),
        ("finediving_aqa", DIVE, ["number", "number"]),
        ("finediving_aqa", SYNTHETIC, []),  # a number, but not a dive's score
        ("star_qa", STAR, ["choice"]),
        ("star_qa", KINETICS, []),
        ("llava_star_qa", DIVE, ["number", "number", "sequence"]),
        ("llava_star_qa", SYNTHETIC, ["number"]),
    ],
)
def test_each_task_scores_only_its_labels(task, row, scored_types):
    assert [label.type for label in scored_labels(task, _doc(row))] == scored_types


def test_a_difficulty_alone_is_a_dive_doc():
    """``prepare finediving`` asks for the score and the difficulty in separate samples."""
    row = dict(DIVE, labels=[{"type": "number", "value": 3.2, "name": "difficulty", "tolerance": 0.05}])
    assert [label.name for label in scored_labels("finediving_aqa", _doc(row))] == ["difficulty"]


def test_count_docs():
    docs = [_doc(row) for row in (KINETICS, DIVE, STAR, SYNTHETIC, KINETICS)]
    assert count_docs(docs) == {"llava_star_qa": 5, "kinetics700_qa": 2, "finediving_aqa": 1, "star_qa": 1}


def test_doc_to_text_adds_the_task_prompts():
    doc = _doc(STAR)
    assert doc_to_text(doc) == direct_prompt(STAR["question"])
    assert doc_to_text(doc, {"pre_prompt": "Q: ", "post_prompt": "\nA:"}) == f"Q: {direct_prompt(STAR['question'])}\nA:"


def _task_yaml(path: Path) -> dict:
    """A task file with its ``include`` merged in (``!function`` tags read as their names)."""
    import yaml

    class _TaggedLoader(yaml.SafeLoader):
        pass

    _TaggedLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    config = yaml.load(path.read_text(), Loader=_TaggedLoader)
    if "include" in config:
        config = {**_task_yaml(path.parent / config.pop("include")), **config}
    return config


@pytest.mark.parametrize("task", TASK_NAMES)
def test_each_task_asks_what_the_held_out_step_asks(task):
    """The evaluation protocol (docs/evaluate.md): the generate stage's direct prompt, and no
    token budget of the task's own, so the adapter's (GenerationOptions') applies; the
    end-to-end comparison with the cycle is tests/test_eval_protocol.py."""
    config = _task_yaml(tasks_dir() / f"{task}.yaml")
    prompts = config["lmms_eval_specific_kwargs"]["default"]
    for row in (KINETICS, DIVE, STAR, SYNTHETIC):
        assert doc_to_text(_doc(row), prompts) == direct_prompt(row["question"])
    assert "max_new_tokens" not in config["generation_kwargs"]
    assert config["generation_kwargs"]["temperature"] == 0


def test_video_root_per_dataset_override_wins():
    environ = {"LLAVA_STAR_VIDEO_DIR": "/videos", "LLAVA_STAR_VIDEO_DIR_FINEDIVING": "/frames"}
    assert video_root("finediving", environ) == "/frames"
    assert video_root("kinetics700", environ) == "/videos"
    assert video_dir_variable("STAR-benchmark") == "LLAVA_STAR_VIDEO_DIR_STAR_BENCHMARK"


def test_video_root_unset_names_the_variables():
    with pytest.raises(ConfigError, match="LLAVA_STAR_VIDEO_DIR.*LLAVA_STAR_VIDEO_DIR_STAR"):
        video_root("star", {})


def test_the_task_table_and_the_yaml_files_agree():
    """A task is a YAML file and an entry in hooks.SCORED_LABELS: neither without the other."""
    import yaml

    class _TaggedLoader(yaml.SafeLoader):
        pass

    _TaggedLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    tasks = set()
    for path in tasks_dir().glob("*.yaml"):
        config = yaml.load(path.read_text(), Loader=_TaggedLoader)  # SafeLoader plus the !function tag
        if isinstance(config.get("task"), str):
            tasks.add(config["task"])
            for key in ("process_docs", "process_results"):
                assert getattr(hooks, config[key].rsplit(".", 1)[1]), f"{path.name}: {key} names no hook"
    assert tasks == set(TASK_NAMES)
    assert set(group_tasks()) <= tasks


def test_bind_tasks_writes_docs_and_task_files(tmp_path):
    samples = _write_samples(tmp_path / "test.jsonl", [KINETICS, DIVE, STAR])
    folder, counts = bind_tasks(samples, tmp_path / "tasks")
    assert counts == {"llava_star_qa": 3, "kinetics700_qa": 1, "finediving_aqa": 1, "star_qa": 1}
    assert sorted(path.name for path in folder.glob("*.yaml")) == sorted(
        [f"{task}.yaml" for task in TASK_NAMES] + [f"{GROUP_NAME}.yaml"]
    )
    assert len((folder / "docs.jsonl").read_text().splitlines()) == 3


def test_bind_tasks_rejects_a_bad_sample_with_its_line(tmp_path):
    bad = dict(KINETICS, labels=[{"type": "colour", "value": "red"}])
    samples = _write_samples(tmp_path / "test.jsonl", [KINETICS, bad])
    with pytest.raises(RecordError, match=r"test.jsonl:2: .*colour"):
        bind_tasks(samples, tmp_path / "tasks")


def test_module_prints_the_tasks_folder(tmp_path):
    shipped = subprocess.run(
        [sys.executable, "-m", "llava_star.eval_tasks"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert Path(shipped.stdout.strip()) == tasks_dir()
    samples = _write_samples(tmp_path / "test.jsonl", [KINETICS])
    bound = subprocess.run(
        [sys.executable, "-m", "llava_star.eval_tasks", "--samples", str(samples), "-o", str(tmp_path / "bound")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(bound.stdout.strip()) == (tmp_path / "bound").resolve()


def test_top_level_eval_tasks_is_the_packaged_folder():
    assert (REPO_ROOT / "eval_tasks").resolve() == tasks_dir()


@pytest.fixture(scope="module")
def bound_task_manager(tmp_path_factory):
    pytest.importorskip("lmms_eval", reason="the eval extra is not installed")
    from lmms_eval.tasks import TaskManager

    tmp_path = tmp_path_factory.mktemp("bound")
    samples = _write_samples(tmp_path / "test.jsonl", [KINETICS, DIVE, STAR, SYNTHETIC])
    folder, _ = bind_tasks(samples, tmp_path / "tasks")
    return TaskManager(include_path=str(folder), include_defaults=False)


@pytest.mark.slow  # importing lmms_eval.tasks takes ~20 s
def test_every_task_loads_its_docs_through_lmms_eval(bound_task_manager, monkeypatch, tmp_path):
    from lmms_eval.tasks import get_task_dict

    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "cache"))
    loaded = get_task_dict([*TASK_NAMES], bound_task_manager)
    ids = {name: [doc["id"] for doc in task.test_docs()] for name, task in loaded.items()}
    assert ids == {
        "llava_star_qa": ["k700-1", "fd-1", "star-1", "syn-1"],
        "kinetics700_qa": ["k700-1"],
        "finediving_aqa": ["fd-1"],
        "star_qa": ["star-1"],
    }
    metrics_of = {name: sorted(task.aggregation()) for name, task in loaded.items()}
    assert metrics_of["finediving_aqa"] == sorted(
        ["accuracy", "score_accuracy", "difficulty_accuracy", "score_spearman", "score_relative_l2", "parse_rate"]
    )
    assert loaded["finediving_aqa"].aggregation()["score_spearman"] is metrics.spearman


@pytest.mark.slow
def test_the_group_holds_the_papers_three_tasks(bound_task_manager, monkeypatch, tmp_path):
    from lmms_eval.tasks import get_task_dict

    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "cache"))
    ((group, subtasks),) = get_task_dict([GROUP_NAME], bound_task_manager).items()
    assert group.group == GROUP_NAME
    assert sorted(subtasks) == sorted(group_tasks())


@pytest.mark.slow
def test_our_task_names_win_over_lmms_eval_built_ins():
    """lmms-eval keeps a built-in task when an included one has its name: ours must be ours."""
    pytest.importorskip("lmms_eval", reason="the eval extra is not installed")
    from lmms_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(REPO_ROOT / "eval_tasks"))
    for name in (*TASK_NAMES, GROUP_NAME):
        assert Path(manager.task_index[name]["yaml_path"]).resolve().parent == tasks_dir(), name


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("The person is abseiling down a cliff face.", 1.0),
        ("The person is not abseiling; they are walking.", 0.0),
        ("It could be abseiling or yoga.", 0.0),  # hedged between two classes
        ("", 0.0),
    ],
)
def test_kinetics700_qa_results(answer, expected):
    assert hooks.kinetics700_qa_results(_doc(KINETICS), [answer]) == {"accuracy": expected}


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("B", 1.0),
        ("The answer is (B) The clothes.", 1.0),
        ("The person tidied up the clothes.", 1.0),
        ("A", 0.0),
        ("Either A or B.", 0.0),
    ],
)
def test_star_qa_results(answer, expected):
    assert hooks.star_qa_results(_doc(STAR), [answer]) == {"accuracy": expected}


def test_llava_star_qa_scores_every_label():
    doc = _doc(DIVE)  # score, difficulty and the sub-action sequence
    right_numbers = "The dive scored 76 points with a difficulty of 3.2."
    assert hooks.llava_star_qa_results(doc, [right_numbers]) == {"accuracy": 0.0}
    steps = " First Forward, then a Pike, then the Entry."
    assert hooks.llava_star_qa_results(doc, [right_numbers + steps]) == {"accuracy": 1.0}


# answer -> (accuracy, score_accuracy, difficulty_accuracy, score read); gold: 75.6 ±5%, 3.2 ±0.05
FINEDIVING_TABLE = [
    ("The dive scored 76 points with a difficulty of 3.2.", (1.0, 1.0, 1.0, 76.0)),
    ("Score: 60. Difficulty: 3.2", (0.0, 0.0, 1.0, 60.0)),
    ("The difficulty is 3.5 and the score 79.", (0.0, 1.0, 0.0, 79.0)),
    ("I cannot tell from this video.", (0.0, 0.0, 0.0, None)),
    ("One diver jumps into the pool.", (0.0, 0.0, 0.0, None)),  # "one" is no score (it read 1.0)
    (
        "The diver spins 3.2 times and enters 76 cm from the board.",
        (0.0, 0.0, 0.0, None),
    ),  # stray numbers state neither
    ("There is no splash at the entry.", (0.0, 0.0, 0.0, None)),  # "no splash" is no score of 0
    ("76", (0.0, 1.0, 0.0, 76.0)),  # an answer that is only a number states it
    ("So the final answer is 76.", (0.0, 1.0, 0.0, 76.0)),  # a conclusion states it
]


@pytest.mark.parametrize("answer, expected", FINEDIVING_TABLE)
def test_finediving_aqa_results(answer, expected):
    result = hooks.finediving_aqa_results(_doc(DIVE), [answer])
    accuracy, score_accuracy, difficulty_accuracy, read = expected
    assert (result["accuracy"], result["score_accuracy"], result["difficulty_accuracy"]) == (
        accuracy,
        score_accuracy,
        difficulty_accuracy,
    )
    assert result["score_spearman"] == result["parse_rate"] == {"prediction": read, "gold": 75.6}


def test_finediving_aqa_aggregates_a_table_of_answers():
    """Four dives, each answered as in FINEDIVING_TABLE, through process_results and the aggregations."""
    golds = [75.6, 48.0, 90.1, 60.0]
    answers = [
        "Score 70, difficulty 3.2.",
        "Score 50, difficulty 3.2.",
        "Score 94, difficulty 3.2.",
        "No idea.",
    ]
    items = []
    for gold, answer in zip(golds, answers):
        row = dict(DIVE, labels=[dict(DIVE["labels"][0], value=gold), DIVE["labels"][1]])
        items.append(hooks.finediving_aqa_results(_doc(row), [answer]))
    pairs = [item["score_spearman"] for item in items]
    assert metrics.spearman(pairs) == pytest.approx(1.0)  # the three read scores rank like their golds
    spread = 90.1 - 48.0
    assert metrics.relative_l2(pairs) == pytest.approx(
        ((5.6 / spread) ** 2 + (2 / spread) ** 2 + (3.9 / spread) ** 2) / 3
    )
    assert metrics.parse_rate(pairs) == 0.75
    assert (
        metrics.mean_of_known([item["score_accuracy"] for item in items]) == 0.5
    )  # 50 ~ 48 and 94 ~ 90.1 are within 5%
    assert metrics.mean_of_known([item["difficulty_accuracy"] for item in items]) == 0.75


def test_difficulty_only_docs_leave_the_score_metrics_out():
    row = dict(DIVE, labels=[DIVE["labels"][1]])
    result = hooks.finediving_aqa_results(_doc(row), ["The difficulty is 3.2."])
    assert result["accuracy"] == result["difficulty_accuracy"] == 1.0
    assert result["score_accuracy"] is None and result["score_spearman"] is None
