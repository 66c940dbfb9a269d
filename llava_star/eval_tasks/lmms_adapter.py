"""The ``llava_star`` model of lmms-eval: any checkpoint ``llava-star train`` writes, or a
hub LLaVA-family / Qwen-VL video checkpoint, answering from frames it decodes itself.

lmms-eval finds it through the ``lmms_eval.models`` entry point (``manifest``) once
llava-star is installed; :func:`lmms_eval_main` registers it explicitly so ``llava-star
eval`` also works from a source tree. lmms-eval's built-in wrappers run the tasks too
(``llava-star eval --lmms-model WRAPPER``, with the runtime patches of ``patches/``), but
none prompts the way our training does, so a fine-tuned model would be scored on a layout
it never saw. Here the prompt goes through
:func:`llava_star.models.inputs.build_inputs`, the function training uses.

Video: a doc of the project's tasks is read from its source video or frame folder, its
``start``/``end`` range decoded directly (the tasks' ``doc_to_visual``, which cuts a clip
file for the built-in wrappers, is not called); another task's doc from ``doc_to_visual``. A video that cannot be decoded is answered with nothing (so scored
as failed) and listed for ``llava-star eval``'s ``metrics.json``, instead of failing the run. One process (lmms-eval shards by rank only for models that set up
a process group, which this adapter does not).

    lmms-eval --model llava_star --model_args pretrained=CKPT,num_frames=8 \\
        --tasks kinetics700_qa --include_path TASKS_DIR --output_path out/

The ``--model_args`` keys are :class:`~llava_star.generation.options.GenerationOptions`
fields (:data:`~llava_star.generation.options.MODEL_ARGS`), with the same defaults and checks as ``llava-star generate``:
the token budget is ``max_new_tokens`` (512 unless given), decoding is greedy, and the
project's tasks ask the evaluation protocol's prompt (:mod:`llava_star.generation.protocol`),
so the cycle's held-out accuracy and these tasks measure the same thing. ``backend=vllm``
(or ``auto``) answers through one vLLM engine, as ``llava-star generate --backend`` does;
``tensor_parallel_size``, ``gpu_memory_utilization`` and ``max_model_len`` go to it.

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

from llava_star.errors import ConfigError, EvaluationError, VideoError
from llava_star.eval_tasks import MODEL_NAME, UNREADABLE_VIDEOS_ENV
from llava_star.generation.backends import build_answerer, choose_backend
from llava_star.generation.options import MODEL_ARGS, options_from_model_args
from llava_star.models.loading import model_family_and_type

logger = logging.getLogger(__name__)

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


def _clip(doc: Mapping[str, Any]) -> tuple[float | None, float | None]:
    start, end = doc.get("start"), doc.get("end")
    return (None if start is None else float(start)), (None if end is None else float(end))


class LlavaStarVideo(lmms):
    """Greedy answers of a transformers video LVLM, one video per question, with the
    generation options (and their defaults) of ``llava-star generate``."""

    is_simple = True

    def __init__(self, pretrained: str, **model_args: Any) -> None:
        super().__init__()

        unknown = sorted(key for key in model_args if key not in MODEL_ARGS and key not in _LMMS_EVAL_KEYS)
        if unknown:
            raise ConfigError(f"--model_args: unknown key(s) {unknown}; expected pretrained, {', '.join(MODEL_ARGS)}")
        self.options = options_from_model_args({k: v for k, v in model_args.items() if k in MODEL_ARGS})
        self.num_frames = self.options.num_frames
        self.max_new_tokens = self.options.max_new_tokens
        self.batch_size_per_call = self.options.batch_size
        family, model_type = model_family_and_type(pretrained)
        backend = choose_backend(self.options.backend, family, model_type)
        device = "engine" if backend == "vllm" else self.options.device
        # one answerer for the whole run; a task's generation_kwargs may change its token budget
        self.answerer = build_answerer(pretrained, self.options, backend=backend, family=family, device=device)

    def _frames(self, visuals: Sequence[Any], doc: Mapping[str, Any]) -> Any:
        """The doc's clip, or None when it cannot be decoded (scored as an empty answer)."""
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

    def _doc_frames(self, doc: Mapping[str, Any], doc_to_visual: Any) -> Any:
        """A project doc's range read from its source (no clip file cut); any other task's visuals."""
        from llava_star.eval_tasks.hooks import doc_source, is_project_doc

        if not is_project_doc(doc):
            return self._frames(doc_to_visual(doc), doc)
        try:
            path = doc_source(doc)[0]
        except VideoError as error:
            logger.warning("%s: cannot decode, scored as failed: %s", doc.get("video"), error)
            self._record_unreadable(doc, str(doc.get("video")), str(error))
            return None
        return self._frames([str(path)], doc)

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
                videos.append(self._doc_frames(doc, doc_to_visual))
                budgets.append(int(gen_kwargs.get("max_new_tokens", self.max_new_tokens)))
            readable = [index for index, frames in enumerate(videos) if frames is not None]
            chunk_answers = [""] * len(chunk)  # an unreadable video's answer: empty, which never passes
            if readable:
                self.answerer.max_new_tokens = max(budgets)
                replies = self.answerer.replies([questions[i] for i in readable], [videos[i] for i in readable])
                for index, reply in zip(readable, replies):
                    chunk_answers[index] = reply.text  # scored as it is, cut off or not
            for request, answer in zip(chunk, chunk_answers):
                answers.append(answer)
                self.cache_hook.add_partial("generate_until", (request.args[0], request.args[1]), answer)
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise EvaluationError("the llava_star adapter generates answers; loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise EvaluationError(
            "the llava_star adapter answers one question per video; multi-round tasks are not supported"
        )
