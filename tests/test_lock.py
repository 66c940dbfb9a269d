"""The lock (requirements/lock.txt) agrees with setup.cfg and with the environment under test.

A lock that misses a direct requirement, or pins it outside its declared range, would install
something the tests never saw; an environment that differs from the lock means this run does
not test what a fresh machine installs (`make lock` without `make install`, or a hand install).
"""

from __future__ import annotations

import configparser
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
# The extras the lock is made with (Makefile EXTRAS); `gpu` (flash-attn) needs CUDA to build.
LOCKED_EXTRAS = ("test", "train", "eval", "text")
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;#]+)$")


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """{canonical name: version} of a constraints file of `name==version` lines."""
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"{path.name}:{number}: not a `name==version` pin: {line!r}"
        name = canonicalize_name(match["name"])
        assert name not in pins, f"{path.name}:{number}: {name} pinned twice"
        pins[name] = match["version"]
    return pins


def declared_requirements() -> list[tuple[str, Requirement]]:
    """(where, requirement) for install_requires and every locked extra of setup.cfg."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    sections = [("install_requires", config["options"]["install_requires"])]
    sections += [(f"extra {extra}", config["options.extras_require"][extra]) for extra in LOCKED_EXTRAS]
    found = []
    for where, text in sections:
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                found.append((where, Requirement(line)))
    return found


def test_lock_pins_every_declared_requirement_within_its_range():
    pins = read_lock()
    problems = []
    for where, requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement} ({where}) is not in the lock")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement} ({where}): the lock pins {pins[name]}")
    assert not problems, "run `make lock`: " + "; ".join(problems)


def test_environment_under_test_is_the_lock():
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differs = [
        f"{name} {installed.get(name, 'missing')} (lock: {version})"
        for name, version in read_lock().items()
        if installed.get(name) != version
    ]
    assert not differs, "this environment is not the lock (`make install`): " + ", ".join(differs)


def test_declared_python_is_the_linted_and_running_python():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    python_requires = SpecifierSet(config["options"]["python_requires"])
    ruff_target = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]["target-version"]
    oldest = re.fullmatch(r"py3(\d+)", ruff_target)
    assert oldest, ruff_target
    assert f"3.{oldest[1]}" in python_requires and f"3.{int(oldest[1]) - 1}" not in python_requires
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in python_requires


@pytest.mark.parametrize(
    ("text", "message"),
    [("torch>=2.4\n", "not a `name==version` pin"), ("torch==2.14.1\nTorch==2.14.1\n", "pinned twice")],
)
def test_read_lock_refuses_what_is_not_a_lock(tmp_path, text, message):
    path = tmp_path / "lock.txt"
    path.write_text(text)
    with pytest.raises(AssertionError, match=message):
        read_lock(path)
