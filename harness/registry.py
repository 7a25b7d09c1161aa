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

from harness.config import MethodConfig, apply_overrides, upgrade_recorded
from harness.errors import ConfigError, RunDirError
from harness.method import Method
from harness.metrics.suite import parse_metrics


@dataclass(frozen=True)
class MethodInfo:
    name: str
    factory: Callable[[Any], Method]
    config: MethodConfig  # the default (paper) config instance
    paper: str
    paper_data: str
    table: str
    summary: str
    eval_every: str | None  # default evaluation period (the paper's: "1epoch", "6h", ...)
    eval_samples: int  # default number of samples for FID/IS on real data; 0 = no image metrics
    paper_devices: int | None = None  # GPUs the paper trained a run on (a run on fewer records the deviation)
    metrics: str = "fid,kid"  # default --metrics: the paper's, plus KID (harness.metrics.suite)

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages of the default (paper) config."""
        return self.stage_names(self.config)

    def stage_names(self, cfg: MethodConfig) -> tuple[str, ...]:
        """The stages `build(cfg)` returns, in training order. Stages declare their own names
        (`Stage.name`) and building one is cheap (their modules are made in `init`), so the names
        are read off a built method: written once, never checked against a second copy."""
        return tuple(s.name for s in self.build(cfg).stages)

    def build(self, cfg: MethodConfig) -> Method:
        method = self.factory(cfg)
        names = [s.name for s in method.stages]
        if len(set(names)) != len(names):
            raise RuntimeError(f"method {self.name} built stages with repeated names: {names}")
        return method


def recorded_method(manifest: dict, where: str = "run.json") -> tuple[MethodInfo, MethodConfig]:
    """The method and resolved config a run directory's run.json records (keys an older harness
    wrote are read in today's names); a config that is not one of the method's (edited by hand) is
    a RunDirError naming `where` and the key."""
    info = get_method(manifest["method"])
    try:
        return info, apply_overrides(info.config, upgrade_recorded(type(info.config), manifest.get("config") or {}),
                                     info.name, source="config.")
    except ConfigError as e:
        raise RunDirError(f"{where}: {e}") from None


_REGISTRY: dict[str, MethodInfo] = {}
_DISCOVERED = False


def register(
    name: str,
    *,
    config: MethodConfig,
    paper: str,
    paper_data: str,
    table: str = "",
    eval_every: str | None = None,
    eval_samples: int = 50_000,
    paper_devices: int | None = None,
    metrics: str = "fid,kid",
) -> Callable[[Callable[[Any], Method]], Callable[[Any], Method]]:
    """Register `factory(cfg) -> Method` under `name` with its default config and provenance;
    `metrics` the evaluations' default `--metrics` (the paper's metrics, and KID)."""

    if not isinstance(config, MethodConfig):
        raise TypeError(f"method '{name}': its config must extend harness.config.MethodConfig, got {type(config)}")

    def wrap(factory: Callable[[Any], Method]) -> Callable[[Any], Method]:
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise RuntimeError(f"method '{name}' registered twice")
        doc = (factory.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = MethodInfo(
            name=name,
            factory=factory,
            config=config,
            paper=paper,
            paper_data=paper_data,
            table=table,
            summary=doc[0] if doc else "",
            eval_every=eval_every,
            eval_samples=eval_samples,
            paper_devices=paper_devices,
            metrics=",".join(parse_metrics(metrics)),
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
