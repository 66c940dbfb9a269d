"""lmms-eval's command line with the patches applied: ``python -m patches.lmms_eval ARGS``.

Takes lmms-eval's own arguments (``--model qwen2_vl --tasks star_qa --include_path ...``);
with :mod:`patches.lmms_eval_exit_status` it exits 1 when an evaluation crashed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from patches import apply_patches


def main(argv: Sequence[str] | None = None) -> int:
    """Run lmms-eval's CLI in this process with the patches applied."""
    from lmms_eval.cli.dispatch import main as lmms_eval_main

    apply_patches()
    sys.argv = ["lmms-eval", *(sys.argv[1:] if argv is None else argv)]
    lmms_eval_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
