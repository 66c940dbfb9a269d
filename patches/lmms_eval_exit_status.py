"""lmms-eval 0.7.3 exits 0 when an evaluation crashed.

Upstream bug: ``lmms_eval.__main__.cli_evaluate`` catches any exception of
``cli_evaluate_single`` (a model wrapper's crash, a task that cannot load), logs "Error
during evaluation" and returns normally, so ``lmms-eval`` exits 0 and a script or CI job
sees a success with no results. Fix: remember the failure and exit 1 after lmms-eval has
logged it and printed the other runs' tables.

Delete when lmms-eval's CLI exits non-zero after a failed evaluation (check: run a task
whose doc_to_visual raises; ``echo $?``).
"""

from __future__ import annotations

import functools
import sys

from patches import Patch

_MARK = "_llava_star_exit_status"


def apply() -> None:
    import lmms_eval.__main__ as cli

    if getattr(cli.cli_evaluate, _MARK, False):
        return
    evaluate_single, evaluate = cli.cli_evaluate_single, cli.cli_evaluate
    failures: list[BaseException] = []

    @functools.wraps(evaluate_single)
    def remembering_failures(*args, **kwargs):
        try:
            return evaluate_single(*args, **kwargs)
        except Exception as error:
            failures.append(error)
            raise

    @functools.wraps(evaluate)
    def exiting_on_failure(*args, **kwargs):
        failures.clear()
        result = evaluate(*args, **kwargs)
        if failures:
            print(f"lmms-eval: {len(failures)} evaluation(s) failed: {failures[0]!r}", file=sys.stderr)
            sys.exit(1)
        return result

    setattr(exiting_on_failure, _MARK, True)
    cli.cli_evaluate_single = remembering_failures
    cli.cli_evaluate = exiting_on_failure


PATCH = Patch("lmms_eval_exit_status", {"lmms_eval": ("0.7.3",)}, apply)
