"""The JSON kinds the run directory's files hold, and the one check that run.json and metrics.jsonl
lines go through when they are read back: a hand-edited or foreign file is named in one line,
never a traceback deep inside whatever read it."""
from __future__ import annotations

from typing import Any

NUMBER = (int, float)
NONE = type(None)


class Obj(dict):
    """A JSON object whose named keys, where present, hold these kinds (other keys are free)."""


class MapOf:
    """A JSON object whose every value holds `kind` (stage name -> its entry)."""

    def __init__(self, kind: Any):
        self.kind = kind


class ListOf:
    def __init__(self, kind: Any):
        self.kind = kind


def _name(kind: Any) -> str:
    if kind == NUMBER:
        return "a number"
    if isinstance(kind, tuple):
        return " or ".join(_name(k) for k in kind)
    if isinstance(kind, (Obj, MapOf)) or kind is dict:
        return "an object"
    if isinstance(kind, ListOf) or kind is list:
        return "a list"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", NONE: "null",
            tuple: "a tuple"}[kind]


def _is(value: Any, kind: Any) -> bool:
    if isinstance(kind, tuple):
        return any(_is(value, k) for k in kind)
    if isinstance(kind, (Obj, MapOf)):
        return isinstance(value, dict)
    if isinstance(kind, ListOf):
        return isinstance(value, list)
    if isinstance(value, bool) and kind is not bool:  # JSON's true is no number
        return False
    return isinstance(value, kind)


def problem(value: Any, kind: Any, where: str) -> str | None:
    """Where `value` first departs from `kind` ("run.seed is 'zero', not an integer"), or None."""
    if not _is(value, kind):
        shown = repr(value) if len(repr(value)) <= 40 else type(value).__name__
        return f"{where} is {shown}, not {_name(kind)}"
    inner = next((k for k in (kind if isinstance(kind, tuple) else (kind,)) if _is(value, k)), kind)
    if isinstance(inner, Obj):
        for key, sub in inner.items():
            if key in value and (p := problem(value[key], sub, f"{where}.{key}")):
                return p
    elif isinstance(inner, MapOf):
        for key, sub in value.items():
            if p := problem(sub, inner.kind, f"{where}.{key}"):
                return p
    elif isinstance(inner, ListOf):
        for i, sub in enumerate(value):
            if p := problem(sub, inner.kind, f"{where}[{i}]"):
                return p
    return None
