"""Method registry: methods and baselines register a factory with `@register(...)`.

The harness never imports model code directly: `discover()` imports every module of the
`methods` and `baselines` packages once, and each module registers what it defines (the shape
of timm's `@register_model`). A new method is one new file plus its tests.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

from harness.errors import ConfigError
from harness.method import Method


@dataclass(frozen=True)
class MethodInfo:
    name: str
    factory: Callable[[Any], Method]
    config: Any  # the default (paper) config instance, a frozen dataclass
    paper: str
    stages: tuple[str, ...]
    paper_data: str
    table: str
    summary: str
    eval_every: str | None  # default evaluation period (the paper's: "1epoch", "6h", ...)
    eval_samples: int  # default number of samples for FID/IS on real data; 0 = no image metrics
    stages_of: Callable[[Any], tuple[str, ...]] | None = None  # set when the stages depend on the config

    def stage_names(self, cfg: Any) -> tuple[str, ...]:
        """The stages `build(cfg)` returns. `stages` are those of the default config; a method
        whose stage list depends on its config (NSBGAN: one decoder per wavelet level) registers
        a function of the config instead."""
        return tuple(self.stages_of(cfg)) if self.stages_of is not None else self.stages

    def build(self, cfg: Any) -> Method:
        method = self.factory(cfg)
        names = tuple(s.name for s in method.stages)
        expected = self.stage_names(cfg)
        if names != expected:
            raise RuntimeError(f"method {self.name} registered stages {expected} but built {names}")
        return method


_REGISTRY: dict[str, MethodInfo] = {}
_DISCOVERED = False


def register(
    name: str,
    *,
    config: Any,
    paper: str,
    stages: tuple[str, ...] | Callable[[Any], tuple[str, ...]],
    paper_data: str,
    table: str = "",
    eval_every: str | None = None,
    eval_samples: int = 50_000,
) -> Callable[[Callable[[Any], Method]], Callable[[Any], Method]]:
    """Register `factory(cfg) -> Method` under `name` with its default config and provenance.
    `stages` is the tuple of stage names, or a function config -> stage names when they depend
    on the config."""

    def wrap(factory: Callable[[Any], Method]) -> Callable[[Any], Method]:
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise RuntimeError(f"method '{name}' registered twice")
        doc = (factory.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = MethodInfo(
            name=name,
            factory=factory,
            config=config,
            paper=paper,
            stages=tuple(stages(config) if callable(stages) else stages),
            paper_data=paper_data,
            table=table,
            summary=doc[0] if doc else "",
            eval_every=eval_every,
            eval_samples=eval_samples,
            stages_of=stages if callable(stages) else None,
        )
        return factory

    return wrap


def discover() -> None:
    """Import every module of the `baselines` and `methods` packages (once)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    for package_name in ("baselines", "methods"):
        package = importlib.import_module(package_name)
        for mod in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package_name}.{mod.name}")
    _DISCOVERED = True


def get_method(name: str) -> MethodInfo:
    discover()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise ConfigError(f"unknown method '{name}'; registered methods: {known}")
    return _REGISTRY[name]


def all_methods() -> list[MethodInfo]:
    discover()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
