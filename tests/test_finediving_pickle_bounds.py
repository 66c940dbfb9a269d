"""FineDiving pickles are bounded (issue 27): a shared-reference bomb or a self-containing
list is an AnnotationError naming the file, found without expanding anything."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

from llava_star.datasets.finediving import MAX_PICKLE_VALUES, load_pickle
from llava_star.errors import AnnotationError


def test_a_shared_reference_bomb_is_refused_quickly(tmp_path):
    bomb = [0]
    for _ in range(40):  # 2**40 values once expanded
        bomb = [bomb, bomb]
    path = tmp_path / "FineDiving_fine-grained_annotation.pkl"
    path.write_bytes(pickle.dumps({("x", 1): bomb}, protocol=2))
    assert path.stat().st_size < 1_000
    started = time.monotonic()
    with pytest.raises(AnnotationError, match=r"annotation\.pkl: expands to more than .* shared references"):
        load_pickle(path)
    assert time.monotonic() - started < 2


def test_a_list_that_contains_itself_is_refused(tmp_path):
    loop: list = [1]
    loop.append(loop)
    path = tmp_path / "loop.pkl"
    path.write_bytes(pickle.dumps(loop))
    with pytest.raises(AnnotationError, match=r"loop\.pkl: a container that contains itself"):
        load_pickle(path)


def test_plain_annotations_with_shared_values_and_arrays_are_read(tmp_path):
    shared = ["Arm.Back", "Entry"]
    data = {(f"comp{i}", i): {"steps": shared, "frames": np.zeros(96, np.int64)} for i in range(3000)}
    path = tmp_path / "fine.pkl"
    path.write_bytes(pickle.dumps(data))
    assert len(load_pickle(path)) == 3000
    big = tmp_path / "big.pkl"
    big.write_bytes(pickle.dumps([np.zeros(MAX_PICKLE_VALUES, np.uint8)]))
    with pytest.raises(AnnotationError, match="expands to more than"):
        load_pickle(big)
