"""scripts/soak.py: kill -9 a cycle inside its stages, rerun, nothing lost or doubled."""

import collections
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import soak


def test_compare_counts_lost_and_duplicated_ids():
    reference = {
        "generations": collections.Counter("abc"),
        "eval_generations": collections.Counter("x"),
        "train_ids": collections.Counter("ab"),
        "held_out": {"accuracy": 0.5},
        "lmms_eval": None,
    }
    found = {**reference, "generations": collections.Counter("abbd"), "held_out": {"accuracy": 0.25}}
    assert soak.compare(reference, found) == (1, 1, ["held_out"])
    assert soak.compare(reference, reference) == (0, 0, [])


@pytest.mark.slow
def test_a_few_kills_lose_and_duplicate_nothing(tmp_path, capsys):
    assert soak.main(["--rounds", "3", "--no-lmms-eval", "--workdir", str(tmp_path)]) == 0
    assert re.search(r"^kills: [1-3], lost: 0, duplicated: 0$", capsys.readouterr().out, re.MULTILINE)
