"""How much of the machine each stretch of training had: its `share`, 1.0 for a machine to itself.

On a CPU the share is the fraction of the usable cores that other processes left free
(harness.engine.cores: their CPU time on this process's CPUs over the wall time), beside the
process's own CPU time against wall time x threads (`cpu_util`). On a GPU it is 1.0 with no other
compute process on the device, else what NVML's per-process samples leave to this one (unknown
where the GPU keeps none), beside the device's utilisation. A window is measured per train line,
a stretch per training segment, and a stage's summary combines its stretches weighted by seconds.
"""
from __future__ import annotations

import os
import time
from typing import Callable

import torch

from harness.engine import cores as cpu
from harness.engine import nvml
from harness.engine.cores import Cores
from harness.rundir.records import BUSY_BELOW

MEANS = ("share", "others", "cpu_util", "util")  # seconds-weighted means when windows combine
# /proc/stat counts 10 ms ticks: a shorter window's share is too coarse to be anyone's lowest
MIN_WINDOW_S = 1.0


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def cpu_window(a: cpu.Reading, b: cpu.Reading, threads: int, cores: Cores, siblings: float = 0.0) -> dict:
    """The figures of one window between readings `a` and `b` of a process training with `threads`;
    `siblings`: cores the run's own other processes take (the other ranks of a data-parallel CPU run)."""
    seconds = b.wall - a.wall
    others = cpu.others_busy(a, b)
    if others is not None:
        others = max(0.0, others - siblings)
    util = (b.own - a.own) / (seconds * threads) if seconds > 0 else None
    if others is not None:
        share = cores.available(others) / cores.usable
    else:  # no /proc/stat: what the process's own threads got is the best evidence
        share = None if util is None else min(1.0, util)
    return {"seconds": seconds, "share": _round(share), "min_share": _round(share) if seconds >= MIN_WINDOW_S else None,
            "others": _round(others, 2),
            "cpu_util": _round(util), "threads": [threads, threads]}


def combine(parts: list[dict]) -> dict:
    """Windows (or stretches, or a stage's summary and its next stretch) as one: seconds summed,
    MEANS weighted by the seconds of the parts that have them, the lowest share, the highest
    count of other GPU processes, the range of thread counts."""
    parts = [p for p in parts if p and p.get("seconds")]
    if not parts:
        return {}
    out: dict = {"seconds": sum(p["seconds"] for p in parts)}
    for key in MEANS:
        known = [(p[key], p["seconds"]) for p in parts if p.get(key) is not None]
        if known:
            out[key] = _round(sum(v * s for v, s in known) / sum(s for _, s in known), 2 if key == "others" else 3)
    lows = [p["min_share"] for p in parts if p.get("min_share") is not None]
    if lows:
        out["min_share"] = min(lows)
    procs = [p["other_processes"] for p in parts if p.get("other_processes") is not None]
    if procs:
        out["other_processes"] = max(procs)
    threads = [t for p in parts for t in (p.get("threads") or [])]
    if threads:
        out["threads"] = [min(threads), max(threads)]
    out["stretches"] = sum(p.get("stretches", 1) for p in parts)
    return out


class GpuWatch:
    """Other compute processes and utilisation of the GPUs a process trains on, through NVML."""

    def __init__(self, gpus: list[nvml.Gpu]):
        self.gpus = gpus
        self._since_us = int(time.time() * 1e6)
        self._seen: dict[str, int | None] = {}
        self._utils: list[float] = []

    def mark(self) -> None:
        """Start a window."""
        self._since_us, self._seen, self._utils = int(time.time() * 1e6), {}, []
        self._sample()

    def _sample(self) -> None:
        for g in self.gpus:
            n = nvml.others(nvml.compute_pids(g))
            if n is not None:
                self._seen[g.label] = max(n, self._seen.get(g.label) or 0)
            u = nvml.utilisation(g)
            if u is not None:
                self._utils.append(u)

    def window(self, seconds: float) -> dict:
        """The window since `mark()`: the share left by other processes, their count, utilisation."""
        self._sample()
        shares, others = [], [n for n in self._seen.values() if n is not None]
        mine = os.getpid()
        for g in self.gpus:
            n = self._seen.get(g.label)
            if n is None:
                continue
            if n == 0:
                shares.append(1.0)
                continue
            sm = nvml.process_sm(g, self._since_us)
            if sm is not None and mine in sm:  # per-process samples, and this process among them
                shares.append(max(0.0, 1.0 - sum(v for pid, v in sm.items() if pid != mine) / 100.0))
            else:
                shares.append(None)
        share = None if not shares or None in shares else min(shares)
        util = sum(self._utils) / len(self._utils) if self._utils else None
        return {"seconds": seconds, "share": _round(share),
                "min_share": _round(share) if seconds >= MIN_WINDOW_S else None,
                "other_processes": max(others) if others else None, "util": _round(util, 1)}


class ShareMeter:
    """Measures a stretch of training (`start`, `stop`) and the windows of its train lines (`line`)."""

    def __init__(self, device: torch.device, cores: Cores, threads: Callable[[], int],
                 gpus: list[nvml.Gpu] | None = None, siblings: int = 0):
        self.device, self.cores, self.threads = torch.device(device), cores, threads
        self.siblings = siblings  # the run's other processes on this machine (data-parallel ranks), not competitors
        self.gpu = GpuWatch(gpus) if self.device.type == "cuda" and gpus else None
        self._mark: cpu.Reading | None = None
        self._t0 = 0.0
        self._windows: list[dict] = []

    def start(self) -> None:
        self._windows = []
        self._begin()

    def _begin(self) -> None:
        self._mark, self._t0 = cpu.read(self.cores), time.perf_counter()
        if self.gpu is not None:
            self.gpu.mark()

    def _close(self) -> dict:
        if self._mark is None:
            return {}
        if self.device.type == "cuda":
            w = self.gpu.window(time.perf_counter() - self._t0) if self.gpu is not None else {}
        else:
            w = cpu_window(self._mark, cpu.read(self.cores), self.threads(), self.cores, self.siblings * self.threads())
        self._windows.append(w)
        return w

    def line(self) -> dict:
        """The window since the last line (or the stretch's start); the next one starts now."""
        w = self._close()
        self._begin()
        return w

    def stop(self) -> dict:
        """The stretch: its windows combined (empty where nothing was measured)."""
        self._close()
        self._mark = None
        stretch = combine(self._windows)
        return {**stretch, "stretches": 1} if stretch else stretch


def machine_now(gpu: bool, seconds: float = 1.0) -> dict:
    """The machine as a new job would find it: the usable cores, what other processes keep busy of
    them over `seconds`, the share that leaves; with `gpu`, the compute processes on each visible GPU
    (this process holds none)."""
    cores = cpu.usable_cores()
    others = cpu.measure_others(cores, seconds)
    out = {"cores": cores.describe(), "others": _round(others, 2),
           "share": None if others is None else _round(cores.available(others) / cores.usable)}
    if gpu:
        out["gpu_processes"] = {g.label: len(pids) for g in nvml.open_gpus(nvml.visible_gpus())
                                if (pids := nvml.compute_pids(g)) is not None}
    return out


def machine_line(m: dict) -> str:
    """One line on `machine_now`'s answer: busy or not, and what that means for a comparison."""
    usable = m["cores"]["usable"]
    gpus = {k: n for k, n in (m.get("gpu_processes") or {}).items() if n}
    if m.get("share") is None and not gpus:
        return f"machine: {usable:g} usable core(s); the load of other processes cannot be read here"
    busy = []
    if m.get("share") is not None and m["share"] < BUSY_BELOW:
        busy.append(f"other processes keep {m['others']:.1f} of {usable:g} core(s) busy")
    if gpus:
        busy.append("other compute processes on " + ", ".join(f"{k} ({n})" for k, n in gpus.items()))
    if not busy:
        return f"machine: {usable:g} usable core(s), idle (other processes keep {m['others'] or 0:.1f} busy)"
    return ("machine busy: " + "; ".join(busy) + ": runs trained now get less than the whole machine "
            "(each run records its share; the report flags unequal ones)")
