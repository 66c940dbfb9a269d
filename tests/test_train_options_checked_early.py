"""An unknown ``trainer_args`` key is refused when a config is made (issue 27), not when training starts.

On 30d1d32 the cycle accepted ``train.options.trainer_args.not_a_field`` and ran generation,
verification and export before its train stage refused it.
"""

from __future__ import annotations

import json

import pytest

from llava_star.config import load_config
from llava_star.errors import ConfigError
from llava_star.stages.cycle import CycleConfig
from llava_star.training.config import make_config


def test_an_unknown_trainer_arg_is_refused_by_make_config():
    values = {"model": "m", "data": ["d.json"], "output_dir": "o", "trainer_args": {"not_a_field": 1}}
    with pytest.raises(ConfigError, match="^trainer_args.not_a_field: not a transformers.TrainingArguments field"):
        make_config(values)
    known = make_config({**values, "trainer_args": {"max_grad_norm": 0.5}})
    assert dict(known.trainer_args) == {"max_grad_norm": 0.5}


def test_the_cycle_refuses_an_unknown_trainer_arg_when_its_config_loads(tmp_path):
    options = {"trainer_args": {"not_a_field": 1}}
    with pytest.raises(ConfigError, match="^train.options.trainer_args.not_a_field: not a transformers"):
        load_config(
            CycleConfig,
            None,
            [
                f"model={tmp_path}",
                f"samples={tmp_path / 'samples.jsonl'}",
                f"video_root={tmp_path}",
                f"output_dir={tmp_path / 'run'}",
                f"train.options={json.dumps(options)}",
            ],
        )
