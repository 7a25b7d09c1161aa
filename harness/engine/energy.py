"""Energy and emissions, one meter per node: each NVIDIA GPU's own energy counter (harness.engine.nvml)
read at both ends of every training stretch and evaluation, and codecarbon, offline, for the CPU
and RAM estimates, the whole machine's kWh and the CO2e.

Training and evaluation are measured as separate segments, so the kWh and GPU joules on each line
of metrics.jsonl are the energy of training up to that point (like the budget clock), and the cost
of evaluation is reported beside it rather than hidden in it. Totals persist in checkpoints and in
run.json, so a resumed run keeps counting. A failing meter must never stop a run: it records why it
measured nothing and reports its figures as missing.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

from harness.engine import nvml

DEFAULT_COUNTRY = "USA"


def default_country() -> tuple[str, str]:
    """(ISO-3 country code, where it came from) for the grid's carbon intensity."""
    for var in ("HARNESS_COUNTRY", "CODECARBON_COUNTRY_ISO_CODE"):
        if os.environ.get(var):
            return os.environ[var].upper(), f"${var}"
    return DEFAULT_COUNTRY, "default (set --country or $HARNESS_COUNTRY)"


_MEASURED_CPU_MODES = {"intel_rapl", "intel_power_gadget", "apple_powermetrics", "amd_rapl"}


def component_source(hw) -> str:
    """Where codecarbon's figure for one hardware component comes from: counter, sampled power or estimate."""
    kind = type(hw).__name__
    if kind == "CPU":
        mode = getattr(hw, "_mode", "?")
        if mode == "apple_powermetrics":
            return "sampled power"
        return "counter" if mode in _MEASURED_CPU_MODES else "estimate"
    if kind == "GPU":  # codecarbon reads the same NVML counter every 15 s; power samples where it is missing
        return "counter"
    return "estimate"


def describe_component(hw) -> str:
    """What codecarbon does for one hardware component: measured by a counter, or estimated."""
    kind = type(hw).__name__
    if kind == "CPU":
        mode = getattr(hw, "_mode", "?")
        if mode in _MEASURED_CPU_MODES:
            return f"CPU {getattr(hw, '_model', '')}: measured ({mode})"
        generic = " generic" if getattr(hw, "_is_generic_tdp", False) else ""
        return f"CPU {getattr(hw, '_model', '')}: estimated ({mode}, {getattr(hw, '_tdp', '?')} W{generic} TDP)"
    if kind == "GPU":
        return f"GPU: measured (NVML energy counters) {hw}"
    if kind == "RAM":
        return "RAM: estimated (codecarbon's power per GB of RAM, not measured)"
    return f"{kind}: {hw}"


class EnergyMeter:
    """Measures named segments ("train", "eval") with codecarbon's task API."""

    def __init__(self, run_dir: Path, country: str, country_source: str = "--country", enabled: bool = True,
                 segments_dir: Path | None = None, gpus: list[nvml.Gpu] | None = None,
                 sync: Callable[[], None] | None = None):
        self.run_dir = Path(run_dir)  # where codecarbon writes energy.csv
        self.segments_dir = Path(segments_dir) if segments_dir else self.run_dir / "energy"
        self.country = country.upper()
        self.country_source = country_source
        self.enabled = enabled
        self.totals = {"kwh_train": 0.0, "kwh_eval": 0.0, "kg_train": 0.0, "kg_eval": 0.0}
        # GPU energy counters: joules per device label and kind; `last` is the latest segment's
        self.gpus = list(gpus or []) if enabled else []
        self.sync = sync or (lambda: None)  # the device's work queued so far belongs to the segment it was queued in
        self.gpu_j: dict[str, dict[str, float]] = {g.label: {"train": 0.0, "eval": 0.0} for g in self.gpus}
        self.last: dict[str, float] = {}
        self.counter_status = ("no GPU" if not gpus else "disabled (--no-energy)" if not enabled
                               else "not read yet")
        self.status = "not started" if enabled else "disabled (--no-energy)"
        self.components: list[str] = []  # codecarbon's view, e.g. "CPU(Cpu Load)": estimated from TDP x load
        self.hardware: dict = {}
        self._tracker = None
        self._failed = not enabled

    def _ensure_tracker(self):
        if self._tracker is not None or self._failed:
            return self._tracker
        try:
            from codecarbon import OfflineEmissionsTracker

            logging.getLogger("codecarbon").setLevel(logging.ERROR)  # after import: it sets its own level
            self._tracker = OfflineEmissionsTracker(
                country_iso_code=self.country,
                output_dir=str(self.run_dir),
                output_file="energy.csv",
                experiment_name="segments",
                log_level="error",
                allow_multiple_runs=True,
                save_to_file=True,
            )
            hw = self._tracker.get_detected_hardware()
            self.components = [describe_component(h) for h in getattr(self._tracker, "_hardware", [])]
            self.hardware = {k: v for k, v in hw.items() if v not in (None, "", [])}
            self.status = "measured"
        except Exception as e:  # codecarbon raises many kinds on odd hardware; all mean "no energy"
            self._failed = True
            self.status = f"unavailable: codecarbon failed to start ({type(e).__name__}: {e})"
        return self._tracker

    def _counters(self) -> dict[str, int | None]:
        self.sync()
        return {g.label: nvml.energy_mj(g) for g in self.gpus}

    @contextlib.contextmanager
    def segment(self, kind: str) -> Iterator[None]:
        """Measure the enclosed block as a `kind` segment ("train" or "eval"); afterwards `last`
        holds each GPU's joules in it, from its energy counter."""
        tracker = self._ensure_tracker()
        before = self._counters() if self.gpus else {}
        started = False
        if tracker is not None:
            try:
                tracker.start_task(f"{kind}-{time.time():.3f}")
                started = True
            except Exception as e:
                self.status = f"partial: a {kind} segment was not measured ({type(e).__name__}: {e})"
        try:
            yield
        finally:
            if self.gpus:
                self._add_counters(kind, before, self._counters())
            if started:
                try:
                    data = tracker.stop_task()
                    if data is not None:
                        self.totals[f"kwh_{kind}"] += float(data.energy_consumed)
                        self.totals[f"kg_{kind}"] += float(data.emissions)
                except Exception as e:
                    self.status = f"partial: a {kind} segment was lost ({type(e).__name__}: {e})"

    def _add_counters(self, kind: str, before: dict, after: dict) -> None:
        self.last = {}
        for label, a in before.items():
            b = after.get(label)
            if a is None or b is None or b < a:  # unsupported, failed, or the driver reloaded in between
                continue
            self.last[label] = (b - a) / 1000.0
            self.gpu_j[label][kind] += self.last[label]
        missing = sorted(set(before) - set(self.last))
        if not missing:
            if not self.counter_status.startswith("partial"):
                self.counter_status = "measured"
        elif self.counter_status in ("measured",) or self.counter_status.startswith("partial"):
            self.counter_status = f"partial: a segment was not measured on {', '.join(missing)}"
        else:
            self.counter_status = f"unavailable on {', '.join(missing)} (nvmlDeviceGetTotalEnergyConsumption failed)"

    @property
    def counting(self) -> bool:
        """The GPU counters measured (every segment, or all but those `counter_status` names)."""
        return self.counter_status == "measured" or self.counter_status.startswith("partial")

    def sources(self) -> dict:
        """Which figure came from which source: counter, sampled power or estimate."""
        codecarbon = self.status == "measured" or self.status.startswith("partial")
        parts = {}
        for hw in getattr(self._tracker, "_hardware", []) if self._tracker is not None else []:
            parts[type(hw).__name__] = component_source(hw)
        return {
            "gpu_j": (f"counter: nvmlDeviceGetTotalEnergyConsumption of {', '.join(self.gpu_j)}, read at both ends "
                      f"of every training stretch and evaluation" if self.counting
                      else f"none ({self.counter_status})"),
            "kwh": ({"tool": "codecarbon (whole machine)", **parts} if codecarbon
                    else f"none (codecarbon: {self.status})"),
            "kg_co2e": (f"estimate: codecarbon's kWh x the carbon intensity of {self.country}'s grid" if codecarbon
                        else "none"),
        }

    def describe(self) -> dict:
        """How energy was measured (the figures themselves are in run.json's totals)."""
        return {"status": self.status, "country": self.country, "country_source": self.country_source,
                "components": self.components, "hardware": self.hardware,
                "tool": "codecarbon OfflineEmissionsTracker (task API)", "gpu_counters": self.counter_status,
                "gpus": {g.label: {"name": g.name, "uuid": g.uuid} for g in self.gpus}, "sources": self.sources()}

    def summary(self) -> dict:
        codecarbon = self.status != "disabled (--no-energy)" and not self.status.startswith("unavailable")
        gpu = {f"gpu_j_{k}": (sum(d[k] for d in self.gpu_j.values()) if self.counting else None)
               for k in ("train", "eval")}
        return {
            "status": self.status,
            **{k: (v if codecarbon else None) for k, v in self.totals.items()},
            **gpu,
            **({"gpu_j_by_device": {label: dict(d) for label, d in self.gpu_j.items()}} if self.counting else {}),
        }

    def close(self) -> None:
        """Stop the tracker: codecarbon appends its totals to energy.csv; its per-segment task
        file is moved to `segments_dir` (energy/)."""
        if self._tracker is None:
            return
        try:
            self._tracker.stop()
        except Exception as e:
            self.status = f"partial: codecarbon failed to stop ({type(e).__name__}: {e})"
        self._tracker = None
        self.segments_dir.mkdir(parents=True, exist_ok=True)
        for f in self.run_dir.glob("emissions_segments_*.csv"):
            shutil.move(str(f), self.segments_dir / f.name.replace("emissions_", ""))

    def state_dict(self) -> dict:
        return {**self.totals, **({"gpu_j": {k: dict(v) for k, v in self.gpu_j.items()}} if self.gpu_j else {})}

    def load_state_dict(self, state: dict) -> None:
        for k in self.totals:
            self.totals[k] = float(state.get(k, 0.0))
        saved = state.get("gpu_j") or {}
        for label, d in self.gpu_j.items():  # a device of another machine (a resume elsewhere) is not carried over
            d.update({k: float((saved.get(label) or {}).get(k, 0.0)) for k in ("train", "eval")})


def cluster_energy(ranks: list[dict], per_node: int, own_status: str) -> tuple[dict, list[dict]]:
    """(summed summary, per-node summaries) of a data-parallel run from every rank's
    {"energy": meter.state_dict(), "status": meter.status, "measures": meter.enabled}: one
    tracker measures each node (its local rank 0), so the nodes' totals add up. Any node that
    measured nothing makes the sum missing (None), with each node's reason."""
    nodes = [{"node": i // per_node, "status": r["status"], **r["energy"]}
             for i, r in enumerate(ranks) if r["measures"]]
    keys = ("kwh_train", "kwh_eval", "kg_train", "kg_eval")
    gpu = {}
    for kind in ("train", "eval"):  # the GPU counters' joules: every node's devices, or missing
        per_node = [sum(d[kind] for d in n["gpu_j"].values()) if n.get("gpu_j") else None for n in nodes]
        gpu[f"gpu_j_{kind}"] = None if not per_node or None in per_node else sum(per_node)
    if not nodes or any(n["status"].startswith(("disabled", "unavailable")) for n in nodes):
        bad = "; ".join(f"node {n['node']}: {n['status']}" for n in nodes) or own_status
        return {"status": bad, **{k: None for k in keys}, **gpu}, nodes
    statuses = sorted({n["status"] for n in nodes})
    status = statuses[0] if len(statuses) == 1 else "; ".join(statuses)
    return {"status": f"{status} ({len(nodes)} node(s))", **{k: sum(n[k] for n in nodes) for k in keys}, **gpu}, nodes
