"""The ``llava_star`` model of lmms-eval: any checkpoint ``llava-star train`` writes, or a
hub LLaVA-family / Qwen-VL video checkpoint, answering from frames it decodes itself.

lmms-eval finds it through the ``lmms_eval.models`` entry point (``manifest``) once
llava-star is installed; :func:`lmms_eval_main` registers it explicitly so ``llava-star
eval`` also works from a source tree. Built-in adapters do not serve: ``video_llava``
breaks on transformers 5 (``read_video() takes 1 positional argument``) and ``llava_hf``
needs ``--force_simple``; and none prompts the way our training does, so a fine-tuned
model would be scored on a layout it never saw. Here the prompt goes through
:func:`llava_star.models.inputs.build_inputs`, the function training uses.

Video: ``doc_to_visual`` gives the path; a doc with ``start``/``end`` (our tasks' docs)
is read as that clip. A video that cannot be decoded is answered with nothing (so scored
as failed) and listed for ``llava-star eval``'s ``metrics.json``, instead of failing the run. One process (lmms-eval shards by rank only for models that set up
a process group, which this adapter does not).

    lmms-eval --model llava_star --model_args pretrained=CKPT,num_frames=8 \\
        --tasks kinetics700_qa --include_path TASKS_DIR --output_path out/

``backend=vllm`` (or ``auto``) answers through one vLLM engine, as ``llava-star generate
--backend`` does; ``tensor_parallel_size``, ``gpu_memory_utilization`` and ``max_model_len``
go to it.

This module imports lmms-eval at the top: only lmms-eval (or :func:`lmms_eval_main`)
imports it, and the class must subclass lmms-eval's base.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest

from llava_star.errors import ConfigError, EvaluationError
from llava_star.eval_tasks import UNREADABLE_VIDEOS_ENV

logger = logging.getLogger(__name__)

MODEL_NAME = "llava_star"
CLASS_PATH = f"{__name__}.LlavaStarVideo"
# what lmms-eval adds to every model's arguments besides --batch_size and --device
_LMMS_EVAL_KEYS = ("max_batch_size",)


def manifest() -> ModelManifest:
    """The ``lmms_eval.models`` entry point: the name lmms-eval knows the adapter by."""
    return ModelManifest(model_id=MODEL_NAME, simple_class_path=CLASS_PATH)


def lmms_eval_main(argv: Sequence[str]) -> int:
    """lmms-eval's command line (``lmms-eval ARGS``) with this adapter registered."""
    from lmms_eval.cli.dispatch import main
    from lmms_eval.models import MODEL_REGISTRY_V2

    MODEL_REGISTRY_V2.register_manifest(manifest(), overwrite=True)
    sys.argv = ["lmms-eval", *argv]
    main()
    return 0


def _as_int(key: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--model_args {key}: expected an integer, got {value!r}") from None


def _clip(doc: Mapping[str, Any]) -> tuple[float | None, float | None]:
    start, end = doc.get("start"), doc.get("end")
    return (None if start is None else float(start)), (None if end is None else float(end))


class LlavaStarVideo(lmms):
    """Greedy answers of a transformers video LVLM, one video per question."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        num_frames: int | str = 8,
        dtype: str = "auto",
        device: str | None = None,
        attn_implementation: str | None = None,
        max_new_tokens: int | str = 256,
        batch_size: int | str = 1,
        backend: str = "hf",
        tensor_parallel_size: int | str = 1,
        gpu_memory_utilization: float | str = 0.9,
        max_model_len: int | str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__()
        from llava_star.generation.backends import choose_backend
        from llava_star.models.loading import load_model, model_family

        unknown = sorted(key for key in extra if key not in _LMMS_EVAL_KEYS)
        if unknown:
            raise ConfigError(
                f"--model_args: unknown key(s) {unknown}; expected pretrained, num_frames, dtype, device, "
                "attn_implementation, max_new_tokens, batch_size, backend, tensor_parallel_size, "
                "gpu_memory_utilization, max_model_len"
            )
        self.num_frames = _as_int("num_frames", num_frames)
        self.max_new_tokens = _as_int("max_new_tokens", max_new_tokens)
        self.batch_size_per_call = _as_int("batch_size", batch_size)
        family = model_family(pretrained)
        self.loaded = self.engine = None
        if choose_backend(backend, family) == "vllm":
            from llava_star.generation.vllm_answerer import VllmAnswerer

            self.engine = VllmAnswerer(
                pretrained, family=family, max_new_tokens=self.max_new_tokens, dtype=dtype,
                tensor_parallel_size=_as_int("tensor_parallel_size", tensor_parallel_size),
                gpu_memory_utilization=float(gpu_memory_utilization),
                max_model_len=None if max_model_len is None else _as_int("max_model_len", max_model_len),
            )  # fmt: skip
        else:
            self.loaded = load_model(
                pretrained, dtype=dtype, device=device or "auto", attn_implementation=attn_implementation
            )

    def _frames(self, visuals: Sequence[Any], doc: Mapping[str, Any]) -> Any:
        """The doc's clip, or None when it cannot be decoded (scored as an empty answer)."""
        from llava_star.errors import VideoError
        from llava_star.media.video import read_frames

        paths = [visual for visual in visuals if isinstance(visual, str)]
        if len(paths) != 1:
            raise EvaluationError(f"the llava_star adapter answers about one video per question, got {visuals!r}")
        start, end = _clip(doc)
        try:
            return read_frames(paths[0], self.num_frames, start=start, end=end)
        except VideoError as error:
            logger.warning("%s: cannot decode, scored as failed: %s", paths[0], error)
            self._record_unreadable(doc, paths[0], str(error))
            return None

    def _record_unreadable(self, doc: Mapping[str, Any], path: str, reason: str) -> None:
        """One line per unreadable video in the file `llava-star eval` counts into metrics.json."""
        target = os.environ.get(UNREADABLE_VIDEOS_ENV)
        if target:
            from llava_star.records import JsonlAppender

            with JsonlAppender(target) as out:
                out.write({"id": str(doc.get("id", "")), "video": path, "reason": reason})

    def generate_until(self, requests: list[Instance]) -> list[str]:
        from tqdm import tqdm

        answers: list[str] = []
        step = max(1, self.batch_size_per_call)
        for first in tqdm(range(0, len(requests), step), desc="llava_star answers", disable=None):
            chunk = requests[first : first + step]
            questions, videos, budgets = [], [], []
            for context, gen_kwargs, doc_to_visual, doc_id, task, split in (request.args for request in chunk):
                doc = self.task_dict[task][split][doc_id]
                questions.append(context)
                videos.append(self._frames(doc_to_visual(doc), doc))
                budgets.append(int(gen_kwargs.get("max_new_tokens", self.max_new_tokens)))
            readable = [index for index, frames in enumerate(videos) if frames is not None]
            chunk_answers = [""] * len(chunk)  # an unreadable video's answer: empty, which never passes
            if readable:
                answerer = self._answerer(max(budgets))
                found = answerer.answer([questions[i] for i in readable], [videos[i] for i in readable])
                for index, answer in zip(readable, found):
                    chunk_answers[index] = answer
            for request, answer in zip(chunk, chunk_answers):
                answers.append(answer)
                self.cache_hook.add_partial("generate_until", (request.args[0], request.args[1]), answer)
        return answers

    def _answerer(self, max_new_tokens: int) -> Any:
        """The engine (one for the whole run) or an HF answerer, with this chunk's token budget."""
        from llava_star.generation.answerer import ModelAnswerer

        if self.engine is not None:
            self.engine.max_new_tokens = max_new_tokens
            return self.engine
        return ModelAnswerer(self.loaded, max_new_tokens=max_new_tokens)

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise EvaluationError("the llava_star adapter generates answers; loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise EvaluationError("the llava_star adapter answers one question per video; multi-round tasks are not supported")
