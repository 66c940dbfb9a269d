"""An unknown ``trainer_args`` key is refused when a config is made (issue 27), not when training starts
(the cycle's config refuses it when it loads: tests/test_cycle.py).

On 30d1d32 the cycle accepted ``train.options.trainer_args.not_a_field`` and ran generation,
verification and export before its train stage refused it.
"""

from __future__ import annotations

import pytest

from llava_star.errors import ConfigError
from llava_star.training.config import make_config


def test_an_unknown_trainer_arg_is_refused_by_make_config():
    values = {"model": "m", "data": ["d.json"], "output_dir": "o", "trainer_args": {"not_a_field": 1}}
    with pytest.raises(ConfigError, match="^trainer_args.not_a_field: not a transformers.TrainingArguments field"):
        make_config(values)
    known = make_config({**values, "trainer_args": {"max_grad_norm": 0.5}})
    assert dict(known.trainer_args) == {"max_grad_norm": 0.5}
