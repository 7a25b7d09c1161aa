"""A fake of the part of pynvml that harness.engine.nvml calls: GPUs whose energy counters, compute
processes, utilisation and per-process samples a test sets."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import SimpleNamespace


class NVMLError(Exception):
    pass


@dataclass
class FakeGpu:
    uuid: str
    name: str = "Fake H100"
    mj: int = 1_000_000  # the counter: millijoules since the driver loaded
    mj_per_read: int = 0  # added after every read (the device drawing power between reads)
    pids: list[int] = field(default_factory=lambda: [os.getpid()])
    util: float = 97.0
    sm: dict[int, float] | None = None  # per-process SM %, None: the device keeps no samples
    counter: bool = True  # False: an old GPU without the counter


class FakeNvml:
    NVMLError = NVMLError

    def __init__(self, *gpus: FakeGpu):
        self.gpus = {g.uuid: g for g in gpus}

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid not in self.gpus:
            raise NVMLError("not found")
        return self.gpus[uuid]

    def nvmlDeviceGetHandleByPciBusId_v2(self, pci):
        raise NVMLError("not found")

    def nvmlDeviceGetName(self, g):
        return g.name

    def nvmlDeviceGetTotalEnergyConsumption(self, g):
        if not g.counter:
            raise NVMLError("Not Supported")
        value = g.mj
        g.mj += g.mj_per_read
        return value

    def nvmlDeviceGetComputeRunningProcesses(self, g):
        return [SimpleNamespace(pid=p, usedGpuMemory=1 << 30) for p in g.pids]

    def nvmlDeviceGetUtilizationRates(self, g):
        return SimpleNamespace(gpu=g.util, memory=10)

    def nvmlDeviceGetProcessUtilization(self, g, since):
        if g.sm is None:
            raise NVMLError("Not Supported")
        return [SimpleNamespace(pid=p, smUtil=v, timeStamp=since + 1) for p, v in g.sm.items()]


def install(monkeypatch, *gpus: FakeGpu) -> FakeNvml:
    """Make harness.engine.nvml talk to a fake with these GPUs."""
    from harness.engine import nvml

    fake = FakeNvml(*gpus)
    monkeypatch.setattr(nvml, "library", lambda: fake)
    return fake
