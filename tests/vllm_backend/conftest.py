"""The vLLM backend's tests: they run in the vLLM test environment (``make test-vllm``).

In the main environment, where vllm is not installed, every module here is skipped;
``make test-vllm`` sets LLAVA_STAR_REQUIRE_VLLM=1, under which a missing vllm is an error
instead, so the vLLM suite cannot pass by skipping. vLLM on a CPU needs its engine in
this process, a small KV cache and loopback messaging (the backend sets those defaults);
the tests also give each engine one thread, on a machine shared with other jobs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llava_star.optional import is_available

HERE = Path(__file__).resolve().parent
if not is_available("vllm") and os.environ.get("LLAVA_STAR_REQUIRE_VLLM") == "1":
    raise pytest.UsageError("LLAVA_STAR_REQUIRE_VLLM=1 but vllm is not importable: run `make vllm-env`")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if is_available("vllm"):
        return
    skip = pytest.mark.skip(reason="vllm is not installed: `make test-vllm` runs these")
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(skip)


# one OpenMP thread per engine, not bound to cores other jobs use
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
