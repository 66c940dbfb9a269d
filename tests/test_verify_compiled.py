"""The optional compiled verifier (setup.py, ``LLAVA_STAR_COMPILE=1``) gives the same verdicts.

mypyc builds C extensions from the verifier's sources in a copy of the project; the
verifier's own tests then run against that copy in a subprocess. Slow: about a minute of
gcc on two cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VERIFIER_TESTS = ["tests/test_verify.py", "tests/test_verify_cases.py"]


def _other_tests(directory: str, names: list[str]) -> list[str]:
    """Everything but the verifier's tests and the helpers of conftest.py."""
    keep = {Path(test).name for test in VERIFIER_TESTS}
    return [name for name in names if name == "__pycache__" or (name.startswith("test_") and name not in keep)]


def _build_compiled_copy(target: Path) -> None:
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    shutil.copytree(ROOT / "llava_star", target / "llava_star", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copytree(ROOT / "tests", target / "tests", ignore=_other_tests)
    env = dict(os.environ, LLAVA_STAR_COMPILE="1")
    done = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=target,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, f"mypyc build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _in_copy(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Python in the copy, whose compiled package comes first on the path."""
    env = dict(os.environ, PYTHONPATH=str(target))
    return subprocess.run(
        [sys.executable, *args], cwd=target, env=env, capture_output=True, text=True, timeout=900, check=False
    )


@pytest.mark.slow
def test_compiled_verifier_passes_the_verifier_tests(tmp_path: Path) -> None:
    pytest.importorskip("mypyc.build", reason="the compiled build needs mypy (test extra)")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    _build_compiled_copy(tmp_path)
    loaded = _in_copy(tmp_path, "-c", "import llava_star.verify as v; print(v.__file__); print(*v.compiled_modules())")
    assert loaded.returncode == 0, loaded.stderr
    where, compiled = loaded.stdout.splitlines()
    assert where.startswith(str(tmp_path)), f"the copy was not imported: {where}"
    assert {"llava_star.verify.answer", "llava_star.verify.rules", "llava_star.verify.guards"} <= set(compiled.split())
    tests = _in_copy(tmp_path, "-m", "pytest", "-q", "-p", "no:cacheprovider", *VERIFIER_TESTS)
    assert tests.returncode == 0, tests.stdout[-5000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout

    # An edit after the build is noticed: the old extension would run instead of it.
    edited = tmp_path / "llava_star" / "verify" / "rules.py"
    later = time.time() + 60
    os.utime(edited, (later, later))
    stale = _in_copy(tmp_path, "-c", "import llava_star.verify as v; print(*v.stale_compiled_modules())")
    assert stale.stdout.split() == ["llava_star.verify.rules"], stale.stderr
    refused = _in_copy(tmp_path, "-m", "pytest", "-q", "-p", "no:cacheprovider", VERIFIER_TESTS[0])
    assert refused.returncode != 0 and "llava_star.verify.rules: edited after `make compile`" in refused.stderr
