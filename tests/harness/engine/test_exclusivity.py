"""The share of the machine a stretch of training had: CPU windows from readings, combining windows
and stretches, GPU windows from a fake NVML, the machine check of `harness compare`."""
import os

import pytest
import torch

from harness.engine import nvml
from harness.engine.cores import Cores, Reading
from harness.engine.exclusivity import GpuWatch, ShareMeter, combine, cpu_window, machine_line
from tests.harness.engine.fake_nvml import FakeGpu, install

TWO = Cores((0, 1))


def test_a_cpu_window_beside_one_busy_process():
    # 10 s on 2 cores: 15 core-s busy, 5 of them this process's single thread
    w = cpu_window(Reading(0.0, 100.0, 10.0), Reading(10.0, 115.0, 15.0), threads=1, cores=TWO)
    assert w["others"] == 1.0 and w["share"] == 0.5 and w["cpu_util"] == 0.5 and w["threads"] == [1, 1]


def test_an_idle_machine_is_a_share_of_one_whatever_the_process_uses():
    w = cpu_window(Reading(0.0, 0.0, 0.0), Reading(10.0, 12.0, 12.0), threads=2, cores=TWO)
    assert w["share"] == 1.0 and w["others"] == 0.0 and w["cpu_util"] == 0.6


def test_without_proc_stat_the_own_threads_are_the_evidence():
    w = cpu_window(Reading(0.0, None, 0.0), Reading(10.0, None, 14.0), threads=2, cores=TWO)
    assert w["others"] is None and w["share"] == 0.7


def test_windows_combine_weighted_by_seconds():
    a = {"seconds": 30.0, "share": 1.0, "min_share": 1.0, "others": 0.0, "threads": [2, 2], "stretches": 1}
    b = {"seconds": 10.0, "share": 0.5, "min_share": 0.4, "others": 1.0, "threads": [1, 1], "stretches": 1}
    c = combine([a, b, {}])
    assert c["seconds"] == 40.0 and c["share"] == pytest.approx(0.875) and c["min_share"] == 0.4
    assert c["others"] == 0.25 and c["threads"] == [1, 2] and c["stretches"] == 2
    assert combine([{}, {"seconds": 0.0}]) == {}


def test_a_short_window_is_never_the_lowest():
    w = cpu_window(Reading(0.0, 0.0, 0.0), Reading(0.05, 0.1, 0.0), threads=1, cores=TWO)
    assert w["share"] == 0.0 and w["min_share"] is None  # 10 ms ticks: too coarse to count


def test_a_cpu_stretch_through_the_meter():
    m = ShareMeter(torch.device("cpu"), TWO, lambda: 2)
    m.start()
    w = m.line()
    s = m.stop()
    assert set(w) >= {"share", "others", "cpu_util"} and s["stretches"] == 1 and s["seconds"] >= w["seconds"]


def gpu(monkeypatch, **kw):
    install(monkeypatch, FakeGpu("GPU-0", **kw))
    return nvml.open_gpus([("cuda:0", "GPU-0", None)])


def test_a_gpu_to_itself(monkeypatch):
    w = GpuWatch(gpu(monkeypatch, util=95.0))
    w.mark()
    assert w.window(5.0) == {"seconds": 5.0, "share": 1.0, "min_share": 1.0, "other_processes": 0, "util": 95.0}


def test_another_process_on_the_gpu_takes_its_sm_share(monkeypatch):
    me = os.getpid()
    w = GpuWatch(gpu(monkeypatch, pids=[me, 4242], sm={me: 60.0, 4242: 35.0}))
    w.mark()
    out = w.window(5.0)
    assert out["other_processes"] == 1 and out["share"] == pytest.approx(0.65)


def test_another_process_without_per_process_samples_is_an_unknown_share(monkeypatch):
    w = GpuWatch(gpu(monkeypatch, pids=[os.getpid(), 4242], sm=None))
    w.mark()
    out = w.window(5.0)
    assert out["other_processes"] == 1 and out["share"] is None


def test_in_a_container_this_process_is_one_of_those_nvml_lists(monkeypatch):
    w = GpuWatch(gpu(monkeypatch, pids=[999_999]))  # the host's PID of this process
    w.mark()
    assert w.window(1.0)["other_processes"] == 0


def test_the_machine_line_says_busy_or_idle():
    idle = {"cores": {"usable": 2.0}, "others": 0.05, "share": 1.0}
    busy = {"cores": {"usable": 2.0}, "others": 1.0, "share": 0.5}
    assert machine_line(idle).startswith("machine: 2 usable core(s), idle")
    assert machine_line(busy).startswith("machine busy: other processes keep 1.0 of 2 core(s) busy")
    gpu_busy = {**idle, "gpu_processes": {"cuda:0": 0, "cuda:1": 2}}
    assert "other compute processes on cuda:1 (2)" in machine_line(gpu_busy)


def test_a_gpu_stretch_through_the_meter(monkeypatch):
    m = ShareMeter(torch.device("cuda"), TWO, lambda: 1, gpu(monkeypatch, util=88.0))  # no CUDA touched
    m.start()
    m.line()
    s = m.stop()
    assert s["share"] == 1.0 and s["other_processes"] == 0 and s["util"] == 88.0 and s["stretches"] == 1
    assert ShareMeter(torch.device("cuda"), TWO, lambda: 1, []).stop() == {}  # no NVML: nothing measured


def test_cuda_devices_are_found_in_nvml_by_uuid(monkeypatch):
    from types import SimpleNamespace

    props = [SimpleNamespace(uuid="1111", pci_domain_id=0, pci_bus_id=0x17, pci_device_id=0),
             SimpleNamespace(uuid="2222", pci_domain_id=0, pci_bus_id=0x65, pci_device_id=0)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props[i])
    assert nvml.visible_gpus() == [("cuda:0", "GPU-1111", "00000000:17:00.0"),
                                   ("cuda:1", "GPU-2222", "00000000:65:00.0")]
    install(monkeypatch, FakeGpu("GPU-2222", name="Fake B"))  # a device NVML does not list is left out
    assert [(g.label, g.name) for g in nvml.open_gpus(nvml.visible_gpus())] == [("cuda:1", "Fake B")]
