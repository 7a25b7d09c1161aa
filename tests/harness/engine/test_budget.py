import time

import pytest
import torch

from harness.engine.budget import DeviceClock, parse_budget, parse_every
from harness.errors import BudgetError


@pytest.mark.parametrize("text,seconds", [
    ("30s", 30), ("90m", 5400), ("168h", 168 * 3600), ("7d", 7 * 86400), ("1.5h", 5400), ("0.5m", 30),
    ("2 h", 7200), ("45min", 2700), ("10sec", 10),
])
def test_parse_budget_wall_units(text, seconds):
    b = parse_budget(text)
    assert b.seconds == pytest.approx(seconds)
    assert b.gpu_hours == pytest.approx(seconds / 3600)


def test_gpu_hours_spread_over_devices():
    # the paper's 168 hours on four V100s is 672 GPU-hours
    b = parse_budget("672gpuh", devices=4)
    assert b.seconds == pytest.approx(168 * 3600)
    assert b.gpu_hours == pytest.approx(672)
    assert parse_budget("168h", devices=4).gpu_hours == pytest.approx(672)


@pytest.mark.parametrize("text", ["", "10", "h", "10x", "-5m", "0s", "0gpuh", "1e3h", "ten minutes", "5m30s", "nanh"])
def test_parse_budget_rejects(text):
    with pytest.raises(BudgetError):
        parse_budget(text)


def test_parse_budget_needs_a_device():
    with pytest.raises(BudgetError):
        parse_budget("1h", devices=0)


@pytest.mark.parametrize("text,unit,amount", [
    ("6h", "seconds", 21600), ("30s", "seconds", 30), ("1epoch", "epochs", 1), ("2epochs", "epochs", 2),
    ("500steps", "steps", 500), ("1step", "steps", 1), ("0.5epoch", "epochs", 0.5),
])
def test_parse_every(text, unit, amount):
    e = parse_every(text)
    assert (e.unit, e.amount) == (unit, pytest.approx(amount))


@pytest.mark.parametrize("text", ["", "0epoch", "every 6h", "3", "-1steps"])
def test_parse_every_rejects(text):
    with pytest.raises(BudgetError):
        parse_every(text)


def test_every_due_crosses_multiples():
    e = parse_every("10steps")
    assert not e.due(0, 9) and e.due(0, 10) and not e.due(10, 19) and e.due(10, 21)
    assert e.due(3, 25)  # skipped a multiple: still due once


def test_clock_counts_only_started_segments_and_survives_state_dict():
    clock = DeviceClock("cpu")
    clock.start()
    total = clock.stop()
    assert total >= 0
    clock._elapsed = 5.0  # as if 5 s had been trained
    clock.start()
    assert clock.running and clock.elapsed >= 5.0
    after = clock.stop()
    state = clock.state_dict()
    resumed = DeviceClock("cpu")
    resumed.load_state_dict(state)
    assert resumed.elapsed == pytest.approx(after)
    resumed.start()
    assert resumed.stop() >= after  # continues from the saved total


def test_clock_refuses_misuse():
    clock = DeviceClock("cpu")
    with pytest.raises(RuntimeError):
        clock.stop()
    clock.start()
    with pytest.raises(RuntimeError):
        clock.start()
    with pytest.raises(RuntimeError):
        clock.state_dict()


def test_clock_synchronises_cuda_at_start_and_stop(monkeypatch):
    """Without a CUDA device: a stand-in synchronize that takes 0.2 s, as queued kernels would.
    The clock must call it at both ends and count the wait at stop (the queued work is training)."""
    calls = []

    def synchronize(device=None):
        calls.append(torch.device(device))
        time.sleep(0.2)

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    clock = DeviceClock("cuda:0")
    clock.start()
    assert calls == [torch.device("cuda:0")]
    elapsed = clock.stop()
    assert calls == [torch.device("cuda:0")] * 2
    assert 0.2 <= elapsed < 1.0  # the wait at stop counted; the one before start did not
    cpu = DeviceClock("cpu")
    cpu.start()
    cpu.stop()
    assert len(calls) == 2  # a CPU clock never synchronises


def test_clock_readings_inside_a_segment_never_synchronise(monkeypatch):
    """The loop reads the clock at every step (budget, schedules, step time): those readings are
    host-side, so steps queue on the device; only the segment's two ends wait for it."""
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    clock = DeviceClock("cuda:0")
    clock.start()
    readings = [clock.elapsed for _ in range(100)]
    assert len(calls) == 1 and readings == sorted(readings)
    clock.agree(7.0)  # rank 0's reading, adopted mid-segment: the segment continues from it
    assert 7.0 <= clock.elapsed < 7.5 and len(calls) == 1
    assert clock.stop() >= 7.0 and len(calls) == 2
    clock.agree(3.0)
    assert clock.elapsed == 3.0


@pytest.mark.gpu
def test_clock_counts_queued_cuda_work():
    x = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    clock = DeviceClock("cuda")
    clock.start()
    start.record()
    for _ in range(20):
        x = x @ x
        x = x / x.norm()
    end.record()
    elapsed = clock.stop()
    gpu_s = start.elapsed_time(end) / 1000.0
    assert elapsed >= 0.9 * gpu_s  # without the sync at stop, the clock would see only the launches
