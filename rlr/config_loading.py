"""Frozen, validated dataclass configs loaded from YAML with `key=value` overrides.

A config is a tree of frozen dataclasses. `load_config(Cls, path, overrides)` reads a YAML
mapping, applies dotted overrides such as `ppo.policy_lr=1e-6` or `reward.method=clip_delta`, and
builds `Cls`, type-checking every field. Unknown keys are an error that names the file and
suggests the nearest valid key, so a typo never silently becomes a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import pathlib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and the field."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _unknown_key(cls: type, key: str, choices: Sequence[str]) -> str:
    """The error's text for an unknown key of `cls`: its new name when `cls.RENAMED_KEYS`
    (old key -> where it went) has it, else the nearest valid key."""
    renamed = getattr(cls, "RENAMED_KEYS", {})
    if key in renamed:
        return f"unknown key '{key}': it is now {renamed[key]}; rename it"
    return f"unknown key '{key}'{_suggest(key, choices)}"


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(choices)}"


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Checks (and gently converts) `value` against a type annotation."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        if not errors:
            raise ConfigError(f"{where}: None is not allowed")
        reasons = [e.removeprefix(f"{where}: ") for e in errors]
        raise ConfigError(f"{where}: " + "; or ".join(reasons))
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"{where}: must be one of {', '.join(map(repr, args))}; got {value!r}"
            )
        return value
    if origin in (tuple, list, Sequence):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list; got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items; got {len(value)}")
            return tuple(
                _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))
            )
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{where}: expected a mapping for {annotation.__name__}; got {value!r}"
            )
        return _build(annotation, value, where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false; got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer; got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads "1e-6" (no dot) as a string
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number; got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string; got {value!r}")
    return value


def _build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    types_ = _field_types(cls)
    unknown = [k for k in data if k not in types_]
    if unknown:
        key = unknown[0]
        raise ConfigError(f"{where}: {_unknown_key(cls, key, list(types_))}")
    kwargs = {k: _coerce(v, types_[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parses `a.b.c=value` into (["a", "b", "c"], value); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. ppo.policy_lr=1e-6)")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({problem})") from None
    return key.strip().split("."), value


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _is_mapping_type(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (dict, Mapping) or annotation in (dict, Mapping)


def apply_overrides(cls: type, data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Returns a copy of `data` with dotted `key=value` overrides applied, keys checked on `cls`.

    Keys inside free-form mapping fields (e.g. a model's inline `architecture`) are not
    checked: they are the mapping's own keys.
    """
    data = _deep_copy(data)
    for text in overrides:
        path, value = parse_override(text)
        node, node_cls = data, cls
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if node_cls is None:  # inside a free-form mapping
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
                continue
            types_ = _field_types(node_cls)
            if part not in types_:
                prefix = ".".join(path[:i])
                where = f"override {text!r}" + (f" (under '{prefix}')" if prefix else "")
                raise ConfigError(f"{where}: {_unknown_key(node_cls, part, list(types_))}")
            if last:
                node[part] = value
                continue
            sub_cls = _unwrap_optional(types_[part])
            existing = node.get(part)
            if dataclasses.is_dataclass(existing):
                existing = to_dict(existing)
            if dataclasses.is_dataclass(sub_cls):
                node[part] = dict(existing or {})
                node, node_cls = node[part], sub_cls
            elif _is_mapping_type(sub_cls):
                node[part] = dict(existing or {})
                node, node_cls = node[part], None
            else:
                raise ConfigError(f"override {text!r}: '{part}' is not a section")
    return data


def _deep_copy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def from_dict(cls: type[T], data: Mapping[str, Any], *, source: str = "") -> T:
    """Builds and validates config `cls` from a plain mapping (as read from YAML)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source or cls.__name__}: top level must be a mapping")
    try:
        return _build(cls, data, "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}" if source else str(e)) from None


def load_config(
    cls: type[T], path: str | pathlib.Path | None = None, overrides: Sequence[str] = ()
) -> T:
    """Reads YAML `path` (or starts from defaults when None), applies overrides, validates."""
    data: dict[str, Any] = {}
    source = "overrides"
    if path is not None:
        path = pathlib.Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: top level must be a mapping of keys to values")
        data = dict(loaded)
    try:
        data = apply_overrides(cls, data, overrides)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return from_dict(cls, data, source=source)


def to_dict(config: Any) -> Any:
    """A plain, YAML-friendly dict of a config tree (tuples become lists)."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    return config


def config_yaml(config: Any) -> str:
    """A config tree as YAML text, every key with its value, in declaration order."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def dump_config(config: Any, path: Any) -> None:
    """Writes a config tree as YAML (the exact settings a run used); `path` may be a local
    path or a URI path (an etils.epath.Path such as gs://bucket/run/config.yaml)."""
    if not hasattr(path, "write_text"):
        path = pathlib.Path(path)
    path.write_text(config_yaml(config))


def require(condition: bool, message: str) -> None:
    """Validation helper for `__post_init__`: raises ConfigError(message) when false."""
    if not condition:
        raise ConfigError(message)
