"""Write the lock of the tested environment: every package and version `make install` puts in .venv.

pip resolves the project's requirements (setup.cfg, with the extras the test suite needs, and
the CPU machine's torch pins) without installing anything (`pip install --dry-run --report`),
and this script turns that report into a constraints file, one `name==version` a line.
`make install` then installs with `-c requirements/lock.txt`, so a fresh machine gets exactly
what the tests passed with instead of whatever PyPI serves that day.

    python scripts/lock.py                      # what `make lock` runs, in .venv
    python scripts/lock.py --extras test,train  # a narrower environment

Run it with the pip that `make install` uses (the Makefile's PIP_VERSION): the resolver's
version is part of the result.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LOCK = REPO / "requirements" / "lock.txt"
DEFAULT_EXTRAS = "test,train,eval,text"
# The CPU machines of this project serve these two releases from local disk; any other
# torch release is a download of several GB.
DEFAULT_TORCH_PINS = ("torch==2.14.1", "torchvision==0.29.1")
PROJECT_NAME = "llava-star"

log = logging.getLogger("lock")


def resolve(extras: str, pins: tuple[str, ...]) -> list[dict]:
    """Let pip resolve the project from scratch and return its report's `install` entries."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            *pins,
            "-e",
            f"{REPO}[{extras}]",
        ]
        log.info("resolving: %s", " ".join(command))
        subprocess.run(command, check=True)
        return json.loads(report.read_text())["install"]


def lock_lines(installs: list[dict]) -> list[str]:
    """`name==version` for every resolved package but the project itself, sorted by name."""
    pinned = {
        entry["metadata"]["name"]: entry["metadata"]["version"]
        for entry in installs
        if entry["metadata"]["name"] != PROJECT_NAME
    }
    return [f"{name}=={pinned[name]}" for name in sorted(pinned, key=str.lower)]


def pip_version() -> str:
    import pip

    return pip.__version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_LOCK)
    parser.add_argument("--extras", default=DEFAULT_EXTRAS)
    parser.add_argument("--make-target", default="lock", help="the make target that writes this lock")
    parser.add_argument("--install-target", default="install", help="the make target that installs from it")
    parser.add_argument("--pin", action="append", default=None, help="extra top-level pins (default: torch)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    pins = tuple(args.pin) if args.pin else DEFAULT_TORCH_PINS
    lines = lock_lines(resolve(args.extras, pins))
    install = f"pip install -c {os.path.relpath(args.output, REPO)} -e '.[...]'"
    header = [
        f"# The lock of the tested environment; regenerate with `make {args.make_target}`, never edit by hand.",
        f"# Resolved by pip {pip_version()} (python {sys.version_info.major}.{sys.version_info.minor}) from setup.cfg",
        f"# with extras [{args.extras}] and {' '.join(pins)}.",
        f"# `make {args.install_target}` uses it as a constraints file: {install}",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(header + lines) + "\n")
    log.info("wrote %s: %d packages pinned", args.output, len(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
