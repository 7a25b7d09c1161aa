"""The one module that talks to NVML (nvidia-ml-py's `pynvml`): the GPUs this process trains on,
their total-energy counters, the compute processes on them and their utilisation.

A query that fails (no driver, an old GPU without the counter, a MIG slice) answers None; it never
stops a run. Tests replace `library` with a fake module.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

_lib: Any = None
_tried = False


def library():
    """pynvml, initialised once per process; None without the package or a driver."""
    global _lib, _tried
    if not _tried:
        _tried = True
        try:
            import pynvml

            pynvml.nvmlInit()
            _lib = pynvml
        except Exception:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded...: no NVML here
            _lib = None
    return _lib


def _call(name: str, *args) -> Any:
    nv = library()
    if nv is None:
        return None
    try:
        return getattr(nv, name)(*args)
    except Exception:  # NVMLError and its kinds (NotSupported, NoPermission, GpuIsLost, ...)
        return None


@dataclass(frozen=True)
class Gpu:
    """A GPU as this process names it (`label`, e.g. cuda:0) and NVML's handle of it."""

    label: str
    handle: Any
    name: str | None = None
    uuid: str | None = None


def visible_gpus() -> list[tuple[str, str | None, str | None]]:
    """(label, NVML UUID, PCI bus id) of each CUDA device this process sees, in CUDA's order
    (CUDA_VISIBLE_DEVICES renumbers them, so NVML's indices cannot be used)."""
    import torch

    out = []
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        p = torch.cuda.get_device_properties(i)
        uuid = getattr(p, "uuid", None)
        pci = (f"{p.pci_domain_id:08x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0"
               if hasattr(p, "pci_bus_id") else None)
        out.append((f"cuda:{i}", None if uuid is None else f"GPU-{uuid}", pci))
    return out


def open_gpus(devices: list[tuple[str, str | None, str | None]]) -> list[Gpu]:
    """NVML handles of `devices` (as visible_gpus lists them); a device NVML does not find is left out."""
    gpus = []
    for label, uuid, pci in devices:
        handle = (_call("nvmlDeviceGetHandleByUUID", uuid) if uuid else None) or \
                 (_call("nvmlDeviceGetHandleByPciBusId_v2", pci) if pci else None)
        if handle is not None:
            name = _call("nvmlDeviceGetName", handle)
            gpus.append(Gpu(label, handle, name.decode() if isinstance(name, bytes) else name, uuid))
    return gpus


def energy_mj(gpu: Gpu) -> int | None:
    """The GPU's total-energy counter in millijoules since the driver loaded (Volta and newer)."""
    return _call("nvmlDeviceGetTotalEnergyConsumption", gpu.handle)


def compute_pids(gpu: Gpu) -> list[int] | None:
    """Processes with a compute context on the GPU (PIDs of the host's namespace)."""
    procs = _call("nvmlDeviceGetComputeRunningProcesses", gpu.handle)
    return None if procs is None else [int(p.pid) for p in procs]


def utilisation(gpu: Gpu) -> float | None:
    """Percent of the last sample period (1/6 s to 1 s) in which a kernel ran on the GPU."""
    rates = _call("nvmlDeviceGetUtilizationRates", gpu.handle)
    return None if rates is None else float(rates.gpu)


def process_sm(gpu: Gpu, since_us: int) -> dict[int, float] | None:
    """Mean SM utilisation (%) of each process on the GPU in NVML's samples since `since_us` (µs
    since the epoch); None where the GPU keeps no per-process samples."""
    samples = _call("nvmlDeviceGetProcessUtilization", gpu.handle, since_us)
    if samples is None:
        return None
    acc: dict[int, list[float]] = {}
    for s in samples:
        acc.setdefault(int(s.pid), []).append(float(s.smUtil))
    return {pid: sum(v) / len(v) for pid, v in acc.items()}


def others(pids: list[int] | None) -> int | None:
    """Compute processes on a GPU besides this one. NVML names host PIDs: inside a container whose
    PIDs differ, this process is taken to be one of those listed."""
    if pids is None:
        return None
    mine = os.getpid()
    return len([p for p in pids if p != mine]) if mine in pids else max(0, len(pids) - 1)
