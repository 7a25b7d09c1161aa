"""Frozen config dataclasses and `--set key=value` overrides with type checking.

Paper defaults live on each method's config class (with the section they come from); this module
only knows how to read, override, validate and serialise them.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
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
    """Convert a parsed value (from JSON or a bare string) to `tp`, or raise ConfigError naming
    `key` as the user wrote it (`--set lr_g`, `run.json config.lr_g`)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
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
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
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
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise bad
        return str(value)
    raise ConfigError(f"{key}: fields of type {_type_name(tp)} cannot be set from the command line")


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
    """`["lr_g=1e-4", "sampler.ch=96"]` -> {"lr_g": "1e-4", "sampler.ch": "96"}; later keys win."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got '{pair}'")
        out[key] = value.strip()
    return out


def _nested(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Config)


def _renamed_error(cfg: "Config", key: str, prefix: str) -> ConfigError:
    new = prefix + type(cfg).RENAMED[key]
    return ConfigError(f"config key '{prefix}{key}' is now '{new}': --set {new}=...")


def apply_overrides(cfg: "Config", overrides: dict[str, Any], method: str = "", prefix: str = "",
                    validate: bool = True, source: str = "--set ") -> Any:
    """Return a copy of the frozen config `cfg` with `overrides` applied, type-checked and validated.

    Keys are field names, or `field.key` for a nested config (`sampler.lr_g`, any depth); values
    are strings from the command line (parsed as JSON where possible) or typed values (run.json,
    where a nested config is a dict). Unknown and renamed keys are a ConfigError naming the valid
    or the new ones; a value that contradicts one another field fixes (`Config.implied`) too.
    `prefix` is this config's own path inside the top-level one, for messages; nested configs are
    validated with the top-level one, once the values it fixes for them are set. A field that chooses
    a nested config's defaults (`Config.nested_defaults`) resets it when it changes. `source` names
    where a value came from in messages (`--set `, or `config.` for a config run.json recorded).
    """
    fields = config_fields(cfg)
    changes: dict[str, Any] = {}
    given: dict[str, Any] = {}  # explicitly given leaf values, by path inside `cfg`
    inner: dict[str, dict[str, Any]] = {}
    for key, raw in overrides.items():
        head, dot, rest = key.partition(".")
        if head not in fields:
            if key in type(cfg).RENAMED:
                raise _renamed_error(cfg, key, prefix)
            valid = ", ".join(sorted(prefix + (f"{k}.<key>" if _nested(tp) else k) for k, tp in fields.items()))
            owner = f" for method '{method}'" if method else ""
            raise ConfigError(f"unknown config key '{prefix}{key}'{owner}; valid keys: {valid}")
        if _nested(fields[head]):
            if dot:
                inner.setdefault(head, {})[rest] = raw
                continue
            value = _parse_literal(raw) if isinstance(raw, str) else raw
            if not isinstance(value, dict):
                if head in type(cfg).RENAMED:
                    raise _renamed_error(cfg, head, prefix)
                raise ConfigError(f"'{prefix}{head}' is a nested config: set its keys as {prefix}{head}.<key>=...")
            inner.setdefault(head, {}).update(value)
            continue
        if dot:
            raise ConfigError(f"'{prefix}{head}' is not a nested config: --set {prefix}{head}=...")
        value = _parse_literal(raw) if isinstance(raw, str) and fields[key] is not str else raw
        changes[key] = given[key] = _coerce(value, fields[key], source + prefix + key)
    # a changed choice (NSBGAN's sampler_model) resets the nested config it chooses to its defaults;
    # nested keys given now apply on top
    before, after = cfg.nested_defaults(), dataclasses.replace(cfg, **changes).nested_defaults()
    for head, default in after.items():
        if default != before.get(head) and head not in inner:
            changes[head] = default
    for head, sub in inner.items():
        base = after[head] if head in after and after[head] != before.get(head) else getattr(cfg, head)
        changes[head] = apply_overrides(base, sub, method, f"{prefix}{head}.", validate=False, source=source)
        given.update({f"{head}.{k}": v for k, v in _leaves(changes[head], sub).items()})
    new = dataclasses.replace(cfg, **changes)  # __post_init__ sets what other fields imply
    for path, (value, because) in new.implied().items():
        if path in given and given[path] != value:
            raise ConfigError(f"{prefix}{path}={given[path]} contradicts {because}, which sets "
                              f"{prefix}{path}={value}: leave {prefix}{path} out")
    if validate:
        validate_all(new)
    return new


def validate_all(cfg: "Config", prefix: str = "") -> None:
    """`cfg.validate()`, then every nested config's, its messages prefixed with its path."""
    try:
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{prefix}{e}" if prefix else str(e)) from None
    for name in config_fields(cfg):
        value = getattr(cfg, name)
        if isinstance(value, Config):
            validate_all(value, f"{prefix}{name}: ")


def _leaves(cfg: "Config", overrides: dict[str, Any]) -> dict[str, Any]:
    """The values `cfg` holds now at the paths the overrides named (nested dicts flattened)."""
    out: dict[str, Any] = {}
    for key, raw in overrides.items():
        head, _, rest = key.partition(".")
        value = getattr(cfg, head)
        if isinstance(value, Config):
            sub = {rest: None} if rest else (raw if isinstance(raw, dict) else {})
            out.update({f"{head}.{k}": v for k, v in _leaves(value, sub).items()})
        else:
            out[head] = value
    return out


def config_keys(cfg: "Config", prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, doc) of every key `--set` accepts, nested configs' as `field.key`."""
    rows = []
    for name, tp in config_fields(cfg).items():
        value = getattr(cfg, name)
        if isinstance(value, Config):
            rows += config_keys(value, f"{prefix}{name}.")
        else:
            rows.append((prefix + name, _type_name(tp), to_jsonable(value), field_doc(type(cfg), name)))
    return rows


def field_doc(cls: type, name: str) -> str:
    """The documentation of a config field: its `metadata["doc"]`, else the comment written beside or
    above its line in the source, from the nearest class that has either."""
    for klass in cls.__mro__:
        f = klass.__dict__.get("__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata.get("doc"):
            return f.metadata["doc"]
        if name in klass.__dict__.get("__annotations__", {}) and (comment := _source_comment(klass, name)):
            return comment
    return ""


def _source_comment(klass: type, name: str) -> str:
    try:
        lines = inspect.getsource(klass).splitlines()
    except (OSError, TypeError):
        return ""
    for i, line in enumerate(lines):
        if re.match(rf"\s+{name}\s*:", line):
            if "  # " in line:
                return line.split("  # ", 1)[1].strip()
            above = []
            for prev in reversed(lines[:i]):
                if not prev.strip().startswith("#"):
                    break
                above.insert(0, prev.strip().lstrip("#").strip())
            return " ".join(above)
    return ""


def upgrade_recorded(cls: type["Config"], recorded: dict[str, Any]) -> dict[str, Any]:
    """A config as an older run.json recorded it, in today's keys: renamed keys (`RENAMED`) moved to
    their new paths, so that older runs can still be evaluated, reported and resumed."""
    out: dict[str, Any] = {}
    fields = config_fields(cls)
    for key, value in recorded.items():
        new = cls.RENAMED.get(key)
        if new is not None and not (key in fields and isinstance(value, dict)):
            out[new] = value
        else:
            out[key] = value
    return out


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every config: a frozen dataclass whose fields `--set` may change.

    `implied()` returns the values some fields fix for others ({path: (value, reason)}); they are
    set on construction, and `apply_overrides` refuses a value given against them. `nested_defaults()`
    names the nested configs another field chooses (their defaults). `RENAMED` maps
    keys of older harness versions to today's paths (a one-line error names the new key).
    `validate()` raises ConfigError for a bad value or combination.
    """

    RENAMED: typing.ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        for path, (value, _) in self.implied().items():
            _set_path(self, path, value)

    def implied(self) -> dict[str, tuple[Any, str]]:
        return {}

    def nested_defaults(self) -> dict[str, "Config"]:
        """{field: the nested config it starts from}, where another field chooses it."""
        return {}

    def validate(self) -> None:
        pass


def _set_path(cfg: Config, path: str, value: Any) -> None:
    head, dot, rest = path.partition(".")
    if dot:
        inner = getattr(cfg, head)
        holder = dataclasses.replace(inner)
        _set_path(holder, rest, value)
        object.__setattr__(cfg, head, holder)
    else:
        object.__setattr__(cfg, head, value)


@dataclasses.dataclass(frozen=True)
class MethodConfig(Config):
    """The fields the harness itself reads from every method's config; a method's config extends
    it with its own (paper defaults, each with its source in a short comment)."""

    resolution: int = dataclasses.field(default=64, metadata={
        "doc": "Square image size in pixels the method trains and samples at; the data are prepared at it."})
    amp: Literal["fp32", "bf16"] = dataclasses.field(default="fp32", metadata={
        "doc": "Training precision: fp32 (both papers) or bf16 autocast (a speed option); each stage reports "
               "what it trains in (run.json's precision)."})
    fid_mode: Literal["clean", "legacy_tensorflow"] = dataclasses.field(default="clean", metadata={
        "doc": "clean-fid's resize before Inception: clean (PIL bicubic, antialiased) or legacy_tensorflow "
               "(the TF graph's bilinear resize)."})
    data_options: str = dataclasses.field(default="", metadata={
        "doc": "Data preparation options the method's paper used (harness.data: split=, crop=, resize=; "
               "`kind:` for one data kind only), applied where --data names none."})


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
