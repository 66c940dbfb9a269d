"""``python -m llava_star.eval_tasks``: print the tasks folder for ``lmms-eval --include_path``.

With ``--samples TEST.jsonl -o DIR`` it first writes a task folder bound to those samples
and prints that one instead::

    lmms-eval --model llava_star --model_args pretrained=CKPT --tasks video_star \\
        --include_path "$(python -m llava_star.eval_tasks --samples test.jsonl -o tasks/)"
"""

from __future__ import annotations

import argparse
import sys

from llava_star.errors import ConfigError, LlavaStarError
from llava_star.eval_tasks import tasks_dir
from llava_star.eval_tasks.docs import bind_tasks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava_star.eval_tasks", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", help="prepared test samples (JSONL) to bind the tasks to")
    parser.add_argument("-o", "--output", help="folder for the bound tasks (with --samples)")
    args = parser.parse_args(argv)
    if (args.samples is None) != (args.output is None):
        raise ConfigError("--samples and -o/--output go together")
    folder = tasks_dir() if args.samples is None else bind_tasks(args.samples, args.output)[0]
    sys.stdout.write(f"{folder}\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LlavaStarError as error:
        sys.stderr.write(f"python -m llava_star.eval_tasks: {error}\n")
        sys.exit(2)
