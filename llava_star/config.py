"""Configs as frozen dataclasses: defaults, then a YAML file, then ``key=value`` overrides.

A stage declares its settings as a frozen dataclass (nested dataclasses for sections);
:func:`load_config` fills it from the three layers and checks every value against the
field's type, so a typo or a wrong type fails before any model loads, with an error that
names the key (``generate.batch_size: expected an integer, got 'eight'``). The resolved
config is written beside the outputs (:func:`write_config`), so a run can be reproduced
or resumed from its own directory.

Overrides use dotted keys for sections and YAML for values::

    llava-star cycle --config cycle.yaml cycles=2 generate.batch_size=8 train.learning_rate=1e-4
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from llava_star.errors import ConfigError
from llava_star.io import write_text_atomic

ConfigT = TypeVar("ConfigT")


def check(condition: bool, key: str, message: str) -> None:
    """Raise ``ConfigError("key: message")`` unless ``condition``; for ``__post_init__`` checks.

    >>> check(True, "cycles", "must be >= 1")
    """
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _float_from_text(text: str, key: str) -> float:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; a float field still means a number.

    >>> _float_from_text("1e-3", "learning_rate")
    0.001
    """
    try:
        number = float(text)
    except ValueError:
        raise ConfigError(f"{key}: expected a number, got {text!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{key}: expected a finite number, got {text!r}")
    return number


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def numbers_in_scientific_notation(value: Any) -> Any:
    """``value`` with strings like ``"2e-5"`` made floats, in lists and mappings too.

    PyYAML follows YAML 1.1, where ``2e-5`` (no dot) is a string; in a config it always
    means the number, and a free-form section (``train.options``) has no field type to
    say so.

    >>> numbers_in_scientific_notation({"learning_rate": "2e-5", "name": "e5", "steps": [1, "1E3"]})
    {'learning_rate': 2e-05, 'name': 'e5', 'steps': [1, 1000.0]}
    """
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, Mapping):
        return {key: numbers_in_scientific_notation(item) for key, item in value.items()}
    if isinstance(value, list):
        return [numbers_in_scientific_notation(item) for item in value]
    return value


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Return ``value`` checked against (and lightly converted to) the field type ``annotation``."""
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if annotation is Any:
        return numbers_in_scientific_notation(value)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        errors = []
        for option in (a for a in arguments if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {_describe(value)} matches none of {annotation}")
    if origin is typing.Literal:
        if value not in arguments:
            raise ConfigError(f"{key}: expected one of {', '.join(map(str, arguments))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a section (mapping), got {_describe(value)}")
        return _build(annotation, value, prefix=f"{key}.")
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"{key}: expected a list, got {_describe(value)}")
        item_type = arguments[0] if arguments else Any
        return tuple(_coerce(item, item_type, f"{key}[{index}]") for index, item in enumerate(value))
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {_describe(value)}")
        value_type = arguments[1] if len(arguments) == 2 else Any
        return types.MappingProxyType({str(k): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()})
    if annotation is Path:
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise ConfigError(f"{key}: expected a path, got {_describe(value)}")
        return Path(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_describe(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_describe(value)}")
        return value
    if annotation is float:
        if isinstance(value, str):
            value = _float_from_text(value, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_describe(value)}")
        return float(value)
    if annotation is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key}: expected a string, got {_describe(value)}")
        return str(value)
    raise ConfigError(f"{key}: unsupported field type {annotation!r}")


def _build(config_class: type[ConfigT], values: Mapping[str, Any], *, prefix: str = "") -> ConfigT:
    hints = typing.get_type_hints(config_class)
    fields = {f.name: f for f in dataclasses.fields(config_class) if f.init}
    unknown = [key for key in values if key not in fields]
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key; expected one of {', '.join(prefix + name for name in fields)}"
        )
    kwargs = {}
    for name, field in fields.items():
        if isinstance(values.get(name), Mapping):
            _refuse_keys_set_elsewhere(values[name], field, prefix + name)
        if name in values:
            kwargs[name] = _coerce(values[name], hints[name], prefix + name)
        elif dataclasses.is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], {}, prefix=f"{prefix}{name}.")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{name}: required key is missing")
    try:
        return config_class(**kwargs)
    except ConfigError as error:
        message = str(error)
        if prefix and not message.startswith(prefix):
            message = prefix + message
        raise ConfigError(message) from None


# Field metadata of a section (a nested config): its keys that a key outside the section
# sets, e.g. {"seed": "seed"} on the cycle's `generate` section, whose seed is the run's.
SET_ELSEWHERE = "set_elsewhere"


def _refuse_keys_set_elsewhere(section: Mapping[str, Any], field: dataclasses.Field, key: str) -> None:
    """A setting has one place: a section key that another key sets is an error naming both."""
    for name, owner in field.metadata.get(SET_ELSEWHERE, {}).items():
        if name in section:
            raise ConfigError(f"{key}.{name}: set by `{owner}`; set it there (one key, one place)")


# Configs and column mappings come from users and downloads: YAML's aliases let 500 bytes
# expand into gigabytes ("billion laughs"), and deep nesting overflows the composer's stack.
# No shipped config needs either, so aliases are refused and nesting is capped.
MAX_YAML_DEPTH = 64


class _BoundedYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases (``*name``, merge keys) and nesting deeper than
    :data:`MAX_YAML_DEPTH`, with a ``yaml.YAMLError`` that carries the line."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"the alias *{event.anchor} is refused (aliases can expand without bound)", event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` without aliases and nested at most :data:`MAX_YAML_DEPTH` deep.

    Raises ``yaml.YAMLError`` (with the line) for what it refuses, as for invalid YAML.

    >>> load_yaml("train: {epochs: 2}")
    {'train': {'epochs': 2}}
    """
    loader = _BoundedYamlLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into its key path and its YAML-parsed value.

    >>> parse_override("generate.batch_size=8")
    (['generate', 'batch_size'], 8)
    >>> parse_override("model=LanguageBind/Video-LLaVA-7B-hf")
    (['model'], 'LanguageBind/Video-LLaVA-7B-hf')
    """
    key, separator, raw = text.partition("=")
    key = key.strip()
    if not separator or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{text!r}: an override is key=value (dotted keys for sections, e.g. train.epochs=2)")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"{key}: cannot parse the value {raw!r}: {error}") from None
    return key.split("."), value


def _merge(base: dict[str, Any], path: list[str], value: Any) -> None:
    node = base
    for depth, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(path[: depth + 1])}: is a value, not a section")
        node = child
    node[path[-1]] = value


def read_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML file that must hold a mapping (an empty file is an empty mapping)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config: {error.strerror}") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def _deep_copy_mapping(data: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _deep_copy_mapping(value) if isinstance(value, Mapping) else value for key, value in data.items()}


def load_config(
    config_class: type[ConfigT],
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
) -> ConfigT:
    """Build ``config_class`` from its defaults, the YAML file at ``path``, then ``overrides``.

    Every key is checked: unknown keys and values of the wrong type raise
    :class:`~llava_star.errors.ConfigError` naming the key (``train.epochs``), with the file
    name in front when the bad key came from the YAML file.
    """
    values = _deep_copy_mapping(read_yaml_mapping(path)) if path is not None else {}
    if path is not None:
        try:
            _build(config_class, values)
        except ConfigError as error:
            # only a key the overrides leave alone can be blamed on the file
            override_keys = {parse_override(item)[0][0] for item in overrides}
            if str(error).split(".")[0].split(":")[0] not in override_keys:
                raise ConfigError(f"{path}: {error}") from None
    for item in overrides:
        key_path, value = parse_override(item)
        _merge(values, key_path, value)
    return _build(config_class, values)


def config_from_mapping(config_class: type[ConfigT], values: Mapping[str, Any]) -> ConfigT:
    """Build ``config_class`` from a plain mapping (e.g. from Python), with the same checks."""
    return _build(config_class, _deep_copy_mapping(values))


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain dict (lists, dicts, scalars) of a config, ready for YAML or JSON: the one
    serializer of configs (``config.yaml`` of a cycle, ``config.json`` of a stage's output).

    >>> @dataclasses.dataclass(frozen=True)
    ... class Example:
    ...     frames: tuple[int, ...] = (8, 16)
    ...     root: Path = Path("videos")
    >>> config_to_dict(Example())
    {'frames': [8, 16], 'root': 'videos'}
    """

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: section(f, plain(getattr(value, f.name))) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, (tuple, list)):
            return [plain(item) for item in value]
        if isinstance(value, Path):
            return str(value)
        return value

    def section(field: dataclasses.Field, value: Any) -> Any:  # written as the loader reads it back
        elsewhere = field.metadata.get(SET_ELSEWHERE, {})
        return {key: item for key, item in value.items() if key not in elsewhere} if elsewhere else value

    return plain(config)


def write_config(config: Any, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML (atomically); :func:`load_config` reads it back."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)
    write_text_atomic(path, text)


# ---------------------------------------------------------------- command lines from configs


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flags: Sequence[str] = (),
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A config field that carries its own command-line help (and flag names, when not
    ``--field-name``), as TRL's config dataclasses do: a renamed field keeps its help.

    >>> @dataclasses.dataclass(frozen=True)
    ... class Example:
    ...     num_frames: int = option(8, help="frames sampled per video", flags=("--frames",))
    >>> dataclasses.fields(Example)[0].metadata["help"]
    'frames sampled per video'
    """
    metadata = {"help": help, "flags": tuple(flags)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def describe_keys(config_class: type, prefix: str = "", skip: Collection[str] = ()) -> list[str]:
    """One line per key of a config file, sections flattened to dotted keys, with the field's
    help and default: the ``--help`` of a command configured by YAML (``llava-star cycle``).

    >>> @dataclasses.dataclass(frozen=True)
    ... class Example:
    ...     cycles: int = option(3, help="self-training cycles")
    >>> describe_keys(Example)
    ['  cycles: self-training cycles (default: 3)']
    """
    lines = []
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if not field.init or field.name in skip:
            continue
        key = prefix + field.name
        if dataclasses.is_dataclass(hints[field.name]):
            lines += describe_keys(hints[field.name], key + ".", skip=field.metadata.get(SET_ELSEWHERE, {}))
            continue
        text = field.metadata.get("help", "")
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            text = f"{text} (required)"
        elif field.default is not dataclasses.MISSING and "default" not in text:
            text = f"{text} (default: {field.default})"
        lines.append(f"  {key}: {text.strip()}")
    return lines


def _flag_kind(annotation: Any) -> Any:
    """The argparse handling of a field type: bool, a tuple item type, or a scalar type."""
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    base = options[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) else annotation
    return base


def add_config_flags(
    parser: argparse.ArgumentParser,
    config_class: type,
    *,
    help: Mapping[str, str] | None = None,
    flags: Mapping[str, Sequence[str]] | None = None,
    skip: Sequence[str] = (),
) -> None:
    """One flag per field of ``config_class`` (``--field-name``, or the field's own ``flags``
    (:func:`option`), or the names in ``flags``), typed from its annotation, with the
    field's own help (or ``help``'s); a flag left out sets nothing, so the dataclass alone
    holds the defaults (:func:`config_from_flags` fills the rest from them)."""
    hints = typing.get_type_hints(config_class)
    help, flags = help or {}, flags or {}
    for field in dataclasses.fields(config_class):
        if field.name in skip or not field.init:
            continue
        kind = _flag_kind(hints[field.name])
        own_help = field.metadata.get("help") or help.get(field.name, "")
        options: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": own_help}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) in (tuple, list):
            item = (typing.get_args(kind) or (str,))[0]
            options.update(nargs="+", type=item if item in (int, float, str, Path) else str, metavar=field.name.upper())
        else:
            options["type"] = kind if kind in (int, float, str, Path) else str
        if "default" in options["help"]:
            pass
        elif field.default not in (dataclasses.MISSING, None, ""):
            options["help"] = f"{options['help']} (default: {field.default})".strip()
        elif field.default is None:
            pass  # optional, off unless given
        elif field.default_factory is dataclasses.MISSING:
            options["help"] = f"{options['help']} (required)".strip()
        names = field.metadata.get("flags") or flags.get(field.name) or ("--" + field.name.replace("_", "-"),)
        parser.add_argument(*names, **options)


def config_from_flags(
    config_class: type[ConfigT],
    namespace: argparse.Namespace,
    path: str | os.PathLike[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> ConfigT:
    """The config of :func:`add_config_flags`'s flags: the YAML file at ``path`` (if any),
    then the flags given, then ``extra``, checked like every config (errors name the key)."""
    values = numbers_in_scientific_notation(read_yaml_mapping(path)) if path is not None else {}
    values.update({key: value for key, value in vars(namespace).items() if key != "config"})
    values.update(extra or {})
    try:
        return config_from_mapping(config_class, values)
    except ConfigError as error:
        key = str(error).split(":")[0].split(".")[0]
        if path is None or key in vars(namespace):
            raise
        raise ConfigError(f"{path}: {error}") from None  # a key the flags left alone came from the file
