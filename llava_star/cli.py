"""The ``llava-star`` command: one subcommand per pipeline stage.

The command table names each command's function, ``main(argv) -> int`` of the module that
owns its arguments, as ``"module:function"`` (a console-script entry point's form): only the
chosen command's module is imported, so ``llava-star verify`` never pays for importing torch. Errors of the project's own types are printed as one line
(they already name the file, line or key) and exit with status 2. A launcher's
``--local_rank=N`` before the command (the deepspeed launcher's) is accepted and dropped.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, MutableMapping

from llava_star.distributed import die_with_launcher
from llava_star.errors import LlavaStarError
from llava_star.log import configure_logging

logger = logging.getLogger(__name__)

# command -> ("module:function" taking argv, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("llava_star.stages.prepare:main", "turn a labeled dataset into samples.jsonl"),
    "synthetic": ("llava_star.datasets.synthetic:main", "write synthetic labeled videos and their samples"),
    "tiny-model": ("llava_star.models.tiny:main", "build a tiny random video LVLM for tests and the demo"),
    "generate": ("llava_star.stages.generate:main", "answer samples with reasoning, verify, rationalize failures"),
    "verify": ("llava_star.verify.cli:main", "check answers against gold labels"),
    "export": ("llava_star.stages.export:main", "turn kept generations into LLaVA training JSON"),
    "train": ("llava_star.stages.train:main", "instruction-tune a video LVLM on LLaVA JSON"),
    "convert": ("llava_star.stages.convert:main", "original LLaVA-family checkpoints to transformers' classes"),
    "cycle": ("llava_star.stages.cycle:main", "run self-training cycles from a YAML config"),
    "eval": ("llava_star.stages.evaluate:main", "evaluate a model with lmms-eval on the project's tasks"),
    "report": ("llava_star.stages.report:main", "write stats, plots and an HTML gallery for a run"),
    "demo": ("llava_star.stages.demo:main", "the CPU demo: synthetic videos, tiny model, self-training cycles"),
}


def resolve(target: str) -> Callable[[list[str]], int]:
    """The function a ``"module:function"`` string names, its module imported now.

    >>> resolve("llava_star.verify.cli:main").__name__
    'main'
    """
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: llava-star [-v] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {description}" for name, (_, description) in COMMANDS.items()]
    lines += ["", "Run 'llava-star COMMAND --help' for the options of a command."]
    return "\n".join(lines)


_LOCAL_RANK_FLAGS = ("--local_rank", "--local-rank")


def strip_launcher_local_rank(args: list[str], environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """``args`` without the ``--local_rank=N`` a launcher puts before the command.

    The ``deepspeed`` launcher runs ``python -m llava_star --local_rank=0 train ...`` (and
    ``torch.distributed.launch`` passes ``--local-rank=0``), so ``[deepspeed, --num_gpus=8,
    --module, llava_star]`` as a cycle's ``launch.train`` died with "unknown command". Both
    also set LOCAL_RANK, which the stages read; the flag must agree with it, and sets it
    when a launcher gave only the flag.

    >>> strip_launcher_local_rank(["--local_rank=1", "train", "--config", "c.yaml"], {"LOCAL_RANK": "1"})
    ['train', '--config', 'c.yaml']
    >>> strip_launcher_local_rank(["--local-rank", "0", "generate"], {})
    ['generate']
    """
    if not args:
        return args
    flag, equals, value = args[0].partition("=")
    if flag not in _LOCAL_RANK_FLAGS:
        return args
    rest = args[1:]
    if not equals:
        if not rest:
            raise LlavaStarError(f"{flag}: expected a number after it")
        value, rest = rest[0], rest[1:]
    if not value.isdigit():
        raise LlavaStarError(f"{flag}: expected a non-negative number, got {value!r}")
    known = environ.get("LOCAL_RANK")
    if known is not None and known != value:
        raise LlavaStarError(f"{flag}={value} disagrees with LOCAL_RANK={known} set by the launcher")
    environ["LOCAL_RANK"] = value
    return rest


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        args = strip_launcher_local_rank(args)
    except LlavaStarError as error:
        sys.stderr.write(f"llava-star: {error}\n")
        return 2
    verbosity = 0
    while args and args[0] in ("-v", "--verbose"):
        verbosity += 1
        args.pop(0)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(_usage() + "\n")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        sys.stderr.write(f"llava-star: unknown command {command!r}\n\n{_usage()}\n")
        return 2
    configure_logging(verbosity)
    die_with_launcher()  # a torchrun rank ends with its launcher, kill -9 included
    command_main = resolve(COMMANDS[command][0])
    try:
        return int(command_main(rest) or 0)
    except LlavaStarError as error:
        logger.error("%s", error)
        return 2
