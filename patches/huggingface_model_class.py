"""lmms-eval 0.7.3's ``huggingface`` chat wrapper loads a VLM without its generation head.

Upstream bug: ``lmms_eval.models.chat.huggingface.Huggingface.__init__`` picks the model class
with ``config.model_type in AutoModelForCausalLM._model_mapping.keys()`` (and the same for
``AutoModelForImageTextToText``); the mapping's keys are config *classes*, so a model type
string is never found and every checkpoint loads through ``AutoModel``: the bare backbone
(``Qwen2_5_VLModel``), which fails at the first question with "object has no attribute
'generate'". Fix: the ``AutoModel`` the wrapper falls back to loads through
``AutoModelForImageTextToText`` or ``AutoModelForCausalLM`` when the checkpoint's config class
is in their mapping (what the check meant), else through ``AutoModel`` as before.

Delete when the wrapper tests ``type(config) in ..._model_mapping`` (or loads generative classes).
"""

from __future__ import annotations

from typing import Any

from patches import Patch

_MARK = "_llava_star_generative"


class GenerativeAutoModel:
    """``AutoModel.from_pretrained`` preferring the classes with a generation head."""

    @classmethod
    def from_pretrained(cls, pretrained: str, *args: Any, **kwargs: Any) -> Any:
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

        config = AutoConfig.from_pretrained(pretrained, trust_remote_code=kwargs.get("trust_remote_code", False))
        for auto in (AutoModelForImageTextToText, AutoModelForCausalLM):
            if type(config) in auto._model_mapping:
                return auto.from_pretrained(pretrained, *args, **kwargs)
        return AutoModel.from_pretrained(pretrained, *args, **kwargs)


setattr(GenerativeAutoModel, _MARK, True)


def apply() -> None:
    from lmms_eval.models.chat import huggingface

    if getattr(huggingface.AutoModel, _MARK, False):
        return
    huggingface.AutoModel = GenerativeAutoModel


PATCH = Patch("huggingface_model_class", {"lmms_eval": ("0.7.3",), "transformers": ("5.23.0",)}, apply)
