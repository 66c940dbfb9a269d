"""A child started with die_with_parent (the lmms-eval child of ``eval``, generate's decoding
workers) is killed by the kernel when its parent dies, kill -9 included (issue 27)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

PARENT = """
import functools, os, subprocess, sys, time
from llava_star.distributed import die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                         preexec_fn=functools.partial(die_with_parent, os.getpid()))
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_dies_when_its_parent_is_killed(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env=env)
    child_pid = int(parent.stdout.readline())
    child = psutil.Process(child_pid)
    try:
        time.sleep(0.3)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        child.wait(timeout=5)  # raises TimeoutExpired if it outlived its parent
    finally:
        parent.kill()
        if child.is_running():
            child.kill()
