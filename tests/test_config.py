"""Configs: defaults < YAML < key=value overrides; every bad key or value is named."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from llava_star.config import check, config_from_mapping, config_to_dict, load_config, parse_override, write_config
from llava_star.errors import ConfigError
from llava_star.stages.cycle import CycleConfig

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


@dataclass(frozen=True)
class Optimizer:
    learning_rate: float = 1e-3
    schedule: Literal["cosine", "linear"] = "cosine"

    def __post_init__(self) -> None:
        check(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")


@dataclass(frozen=True)
class Toy:
    name: str
    steps: int = 10
    limit: int | None = None
    enabled: bool = True
    tags: tuple[str, ...] = ()
    optimizer: Optimizer = field(default_factory=Optimizer)


def write_yaml(tmp_path, data) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_layers_defaults_then_yaml_then_overrides(tmp_path):
    path = write_yaml(tmp_path, {"name": "from-file", "steps": 20, "optimizer": {"schedule": "linear"}})
    config = load_config(Toy, path, ["steps=30", "optimizer.learning_rate=5e-4", "tags=[a, b]", "limit="])
    assert config == Toy(
        name="from-file",
        steps=30,
        limit=None,
        tags=("a", "b"),
        optimizer=Optimizer(learning_rate=5e-4, schedule="linear"),
    )


def test_defaults_alone_and_integer_for_float(tmp_path):
    config = load_config(Toy, None, ["name=x", "optimizer.learning_rate=1"])
    assert config.optimizer.learning_rate == 1.0 and isinstance(config.optimizer.learning_rate, float)
    assert config.steps == 10


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["name=x", "stpes=3"], "stpes"),
        (["name=x", "steps=three"], "steps"),
        (["name=x", "steps=2.5"], "steps"),
        (["name=x", "enabled=maybe"], "enabled"),
        (["name=x", "optimizer.schedule=step"], "optimizer.schedule"),
        (["name=x", "optimizer.learning_rate=-1"], "optimizer.learning_rate"),
        (["name=x", "optimizer.momentum=0.9"], "optimizer.momentum"),
        (["name=x", "optimizer=3"], "optimizer"),
        (["name=x", "steps.inner=3"], "steps"),
        (["name=x", "tags=just-a-string"], "tags"),
        ([], "name"),
        (["steps"], "steps"),
    ],
)
def test_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as error:
        load_config(Toy, None, overrides)
    assert str(error.value).startswith(f"{key}:") or f"'{key}'" in str(error.value), str(error.value)


def test_error_from_the_file_names_the_file_and_the_key(tmp_path):
    path = write_yaml(tmp_path, {"name": "x", "optimizer": {"learning_rate": "fast"}})
    with pytest.raises(ConfigError, match=r"config\.yaml: optimizer\.learning_rate: expected a number"):
        load_config(Toy, path)


def test_an_override_can_fix_a_bad_file_value(tmp_path):
    path = write_yaml(tmp_path, {"name": "x", "steps": "many"})
    assert load_config(Toy, path, ["steps=4"]).steps == 4


@pytest.mark.parametrize("text", ["- a list\n- at the top\n", "key: [unclosed\n"])
def test_bad_yaml_files(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(Toy, path)


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['true']\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="evil.yaml"):
        load_config(Toy, path)


def test_resolved_config_round_trips(tmp_path):
    config = config_from_mapping(Toy, {"name": "x", "tags": ["a"], "optimizer": {"schedule": "linear"}})
    write_config(config, tmp_path / "resolved.yaml")
    assert load_config(Toy, tmp_path / "resolved.yaml") == config
    assert config_to_dict(config)["optimizer"] == {"learning_rate": 1e-3, "schedule": "linear"}


def test_free_form_sections_read_scientific_notation_as_numbers():
    @dataclass(frozen=True)
    class WithOptions:
        options: dict[str, Any] = field(default_factory=dict)

    config = load_config(WithOptions, None, ["options={learning_rate: 2e-5, run_name: e5}"])
    assert dict(config.options) == {"learning_rate": 2e-5, "run_name": "e5"}


def test_parse_override_keeps_strings_and_parses_scalars():
    assert parse_override("model=org/name-7B") == (["model"], "org/name-7B")
    assert parse_override("a.b=true") == (["a", "b"], True)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("=3")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(CycleConfig, path)
    assert config.cycles >= 1


def test_shipped_configs_exist():
    assert any(path.name == "cycle.yaml" for path in CONFIGS)


@pytest.mark.parametrize(
    "override, key",
    [
        ("cycles=0", "cycles"),
        ("generate.batch_size=0", "generate.batch_size"),
        ("generate.batch_sise=4", "generate.batch_sise"),
        ("train.from_checkpoint=latest", "train.from_checkpoint"),
        ("eval.limit=0", "eval.limit"),
        ("launch.train=torchrun", "launch.train"),
        ("min_kept_gain=lots", "min_kept_gain"),
    ],
)
def test_cycle_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as error:
        load_config(CycleConfig, CONFIGS[0], [override])
    assert key in str(error.value)


def test_flags_come_from_the_config_dataclass_and_defaults_stay_in_it(tmp_path):
    import argparse
    import dataclasses as dc

    from llava_star.config import add_config_flags, config_from_flags

    @dc.dataclass(frozen=True)
    class Example:
        output_dir: str
        batch_size: int = 8
        rationalize: bool = True
        tasks: tuple[str, ...] = ("a",)
        limit: int | None = None

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_config_flags(parser, Example, flags={"output_dir": ("-o", "--output-dir")})
    given = config_from_flags(
        Example, parser.parse_args(["-o", "out", "--no-rationalize", "--tasks", "x", "y", "--limit", "3"])
    )
    assert given == Example(output_dir="out", batch_size=8, rationalize=False, tasks=("x", "y"), limit=3)
    (tmp_path / "example.yaml").write_text("batch_size: 4\nlimit: 2\n")
    from_file = config_from_flags(Example, parser.parse_args(["-o", "out", "--limit", "5"]), tmp_path / "example.yaml")
    assert (from_file.batch_size, from_file.limit) == (4, 5)  # the file, then the flags
    (tmp_path / "bad.yaml").write_text("batch_size: four\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: batch_size: expected an integer"):
        config_from_flags(Example, parser.parse_args(["-o", "out"]), tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="output_dir: required key is missing"):
        config_from_flags(Example, parser.parse_args([]))
