"""YAML read from users is bounded (issue 27): alias bombs and deep nesting are ConfigErrors naming the file."""

from __future__ import annotations

import random

import pytest
import yaml

from llava_star.config import MAX_YAML_DEPTH, load_yaml, parse_override, read_yaml_mapping
from llava_star.datasets.generic import load_mapping
from llava_star.errors import ConfigError

# "billion laughs": each level refers to the one above ten times, 10**9 strings from 500 bytes
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + level)}: &{chr(98 + level)} [{', '.join([f'*{chr(97 + level)}'] * 10)}]\n" for level in range(8)
)


def test_an_alias_bomb_in_a_config_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "cycle.yaml"
    path.write_text(ALIAS_BOMB, encoding="utf-8")
    assert len(ALIAS_BOMB) < 600
    with pytest.raises(ConfigError, match=r"cycle\.yaml: not valid YAML: .*alias \*a is refused"):
        read_yaml_mapping(path)


def test_a_merge_key_is_an_alias_too(tmp_path):
    path = tmp_path / "cycle.yaml"
    path.write_text("base: &base {epochs: 1}\ntrain:\n  <<: *base\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"cycle\.yaml: .*alias \*base is refused"):
        read_yaml_mapping(path)


def test_an_anchor_without_alias_is_harmless():
    assert load_yaml("train: &t {epochs: 2}") == {"train": {"epochs": 2}}


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 20_000 + "]" * 20_000,  # 40 KB of flow nesting: a RecursionError before
        "".join(f"{'  ' * level}k{level}:\n" for level in range(MAX_YAML_DEPTH + 5)) + "  " * 70 + "v: 1\n",
    ],
)
def test_deep_nesting_is_a_config_error_naming_the_file(tmp_path, text):
    path = tmp_path / "deep.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"deep\.yaml: not valid YAML: .*nested deeper than {MAX_YAML_DEPTH}"):
        read_yaml_mapping(path)


def test_nesting_at_the_limit_is_read():
    text = "[" * (MAX_YAML_DEPTH - 1) + "1" + "]" * (MAX_YAML_DEPTH - 1)
    value = load_yaml(text)
    for _ in range(MAX_YAML_DEPTH - 1):
        value = value[0]
    assert value == 1


def test_an_override_with_an_alias_is_refused():
    with pytest.raises(ConfigError, match=r"train: cannot parse the value"):
        parse_override("train=[&a 1, *a]")


def test_a_column_mapping_alias_bomb_is_refused_naming_the_flag(tmp_path):
    path = tmp_path / "mapping.yaml"
    path.write_text(ALIAS_BOMB, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"--mapping .*mapping\.yaml: not valid YAML: .*alias"):
        load_mapping(path)


def test_random_small_documents_never_escape_as_other_errors():
    rng = random.Random(27)
    alphabet = list("[]{}:,-&*ab 1\n'\"!#|>")
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        try:
            load_yaml(text)
        except yaml.YAMLError:
            pass


def _yaml_readers(path):
    """(line, call) of every ``yaml.<reader>(...)`` call in a module."""
    import ast

    readers = {"safe_load", "load", "full_load", "unsafe_load", "safe_load_all", "load_all", "full_load_all"}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.lineno, node.func.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in readers
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "yaml"
    ]


def test_llava_star_has_one_yaml_reader():
    """Packaged data and configs are read by :func:`load_yaml` alone, so every YAML gets its bounds."""
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "llava_star"
    readers = {
        str(path.relative_to(package)): calls
        for path in sorted(package.rglob("*.py"))
        if path.name != "config.py" or path.parent != package
        for calls in [_yaml_readers(path)]
        if calls
    }
    assert readers == {}


def test_every_packaged_yaml_file_reads_as_safe_load_reads_it():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "llava_star").rglob("*.yaml")) + sorted((root / "configs").rglob("*.yaml"))
    assert files
    for path in files:
        text = path.read_text(encoding="utf-8")
        if "!function" in text:  # lmms-eval task files: lmms-eval's own loader reads them
            continue
        assert load_yaml(text) == yaml.safe_load(text), path
