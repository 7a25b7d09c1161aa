"""run.json names devices by model: the CPU's model string (from the system, not `x86_64`)."""
from pathlib import Path

import pytest
import torch

from harness.rundir.provenance import cpu_model, device_names


def test_cpu_is_named_by_its_model():
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
             if line.startswith("model name")]
    if not names:
        pytest.skip("this system's /proc/cpuinfo names no CPU model")
    assert device_names(torch.device("cpu")) == [cpu_model()]
    assert cpu_model().startswith(names[0]) and cpu_model().endswith(" cores)")
