"""The thread policy: free cores rounded half down, hysteresis on the way up, --threads, and the
changes it records."""
import pytest
import torch

from harness.engine.cores import Cores
from harness.engine.threads import ThreadPolicy, threads_for

TWO = Cores((0, 1))


@pytest.fixture(autouse=True)
def _keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("available, expected", [(2.0, 2), (1.6, 2), (1.5, 1), (1.0, 1), (0.2, 1), (0.0, 1)])
def test_free_cores_rounded_half_down(available, expected):
    assert threads_for(available, TWO) == expected


def test_never_more_than_the_usable_cores():
    assert threads_for(8.0, TWO) == 2
    assert threads_for(1.5, Cores((0, 1, 2, 3), quota=1.5)) == 1  # a 150% quota: one thread never waits


def test_down_at_once_up_only_past_the_margin():
    # beside one busy process, a 2-thread run measures it at ~0.67 cores (they share): 1.33 free -> down
    assert threads_for(1.33, TWO, current=2) == 1
    assert threads_for(1.55, TWO, current=2) == 2  # not past the boundary: stays
    assert threads_for(1.6, TWO, current=1) == 1  # inside the margin: stays
    assert threads_for(1.7, TWO, current=1) == 2


def test_recheck_follows_the_load_and_records_each_change():
    p = ThreadPolicy(torch.device("cpu"), TWO, others=0.0)
    assert p.intra_op == 2 and p.adaptive
    assert p.recheck(1.0, "gan", 10) == 1 and torch.get_num_threads() == 1
    assert p.recheck(0.9, "gan", 20) is None
    assert p.recheck(0.05, "gan", 30) == 2
    assert [(c["from"], c["to"], c["step"]) for c in p.describe()["changes"]] == [(2, 1, 10), (1, 2, 30)]
    assert p.recheck(None, "gan", 40) is None  # an unknown load changes nothing
    assert p.recheck(1.0, "gan", 1, seconds=0.05) is None  # nor does a window too short to measure it


def test_fixed_threads_are_applied_and_never_rechecked():
    p = ThreadPolicy.start(torch.device("cpu"), fixed=1)
    assert torch.get_num_threads() == 1 and not p.adaptive
    assert p.recheck(0.0, "gan", 1) is None
    assert p.describe()["policy"] == "--threads" and p.describe()["intra_op"] == 1


def test_omp_num_threads_is_kept_as_a_fixed_count(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    p = ThreadPolicy.start(torch.device("cpu"))
    assert p.intra_op == 1 and not p.adaptive and p.describe()["policy"] == "$OMP_NUM_THREADS"
    assert ThreadPolicy.start(torch.device("cpu"), fixed=2).describe()["policy"] == "--threads"  # the flag wins
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert ThreadPolicy.start(torch.device("cpu")).fixed is None


def test_a_busy_machine_at_the_start_means_fewer_threads():
    assert ThreadPolicy(torch.device("cpu"), TWO, others=1.0).intra_op == 1
    assert ThreadPolicy(torch.device("cpu"), TWO, others=None).intra_op == 2  # unknown load: every usable core


def test_a_gpu_run_takes_host_threads_and_prefetch_from_the_usable_cores():
    p = ThreadPolicy(torch.device("cuda"), TWO)
    assert p.intra_op <= 2 and not p.adaptive
    assert p.prefetch == 2  # up to eight, never more than the usable cores
    assert ThreadPolicy(torch.device("cuda"), Cores(tuple(range(32)))).prefetch == 8
    assert ThreadPolicy(torch.device("cpu"), TWO).prefetch == 1
