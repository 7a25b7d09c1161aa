"""Frozen config dataclasses and `--set key=value` overrides with type checking.

Paper defaults live on each method's config class (with the section they come from); this module
only knows how to read, override, validate and serialise them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, Literal, Union

from harness.errors import ConfigError


def config_fields(cls_or_obj) -> dict[str, Any]:
    """Field name -> resolved type annotation of a config dataclass."""
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + "|".join(str(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a parsed value (from JSON or a bare string) to `tp`, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = ConfigError(f"--set {key}: expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin is Literal:
        for choice in args:
            if value == choice or str(value) == str(choice):
                return choice
        raise bad
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise bad
    if origin in (tuple, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise bad
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"--set {key}: expected {len(args)} values, got {len(value)}")
            out = [_coerce(v, a, key) for v, a in zip(value, args)]
        else:
            inner = args[0] if args else Any
            out = [_coerce(v, inner, key) for v in value]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(value):  # JSON's NaN / Infinity: no config value means that
            raise ConfigError(f"--set {key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise bad
        return str(value)
    raise ConfigError(f"--set {key}: fields of type {_type_name(tp)} cannot be set from the command line")


def _parse_literal(text: str) -> Any:
    """`1e-4` -> 1e-4, `[[0,0.2],[1,0.7]]` -> nested lists, `true` -> True, anything else -> str."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return json.loads(text.replace("(", "[").replace(")", "]"))
    except json.JSONDecodeError:
        return text


def parse_overrides(pairs: typing.Iterable[str]) -> dict[str, str]:
    """`["lr_g=1e-4", "width=8"]` -> {"lr_g": "1e-4", "width": "8"}; later keys win."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got '{pair}'")
        out[key] = value.strip()
    return out


def apply_overrides(cfg, overrides: dict[str, Any], method: str = "") -> Any:
    """Return a copy of the frozen config `cfg` with `overrides` applied and type-checked.

    Values may be strings from the command line (parsed as JSON where possible) or already
    typed values (from run.json). Unknown keys are a ConfigError listing the valid ones.
    """
    fields = config_fields(cfg)
    changes = {}
    for key, raw in overrides.items():
        if key not in fields:
            valid = ", ".join(sorted(fields))
            owner = f" for method '{method}'" if method else ""
            raise ConfigError(f"unknown config key '{key}'{owner}; valid keys: {valid}")
        value = _parse_literal(raw) if isinstance(raw, str) and fields[key] is not str else raw
        changes[key] = _coerce(value, fields[key], key)
    new = dataclasses.replace(cfg, **changes)
    validate = getattr(new, "validate", None)
    if callable(validate):
        validate()
    return new


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tuples and paths -> plain JSON values (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
