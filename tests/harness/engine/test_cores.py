"""The cores a process may use (affinity, cgroup v1/v2 quotas) and the load other processes put on
them, against fake /proc and /sys trees and against a real busy process."""
import subprocess
import sys
import time

import pytest

from harness.engine.cores import Cores, Reading, _busy_seconds, measure_others, others_busy, split, usable_cores


def tree(root, files: dict[str, str]):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_cgroup_v2_quota_is_the_tightest_on_the_path(tmp_path):
    root = tree(tmp_path, {"proc/self/cgroup": "0::/jobs/mine\n", "sys/fs/cgroup/cpu.max": "max 100000\n",
                           "sys/fs/cgroup/jobs/cpu.max": "300000 100000\n",
                           "sys/fs/cgroup/jobs/mine/cpu.max": "150000 100000\n"})
    c = usable_cores(root)
    assert c.quota == pytest.approx(1.5)
    assert c.usable == pytest.approx(min(len(c.cpus), 1.5)) and c.count == 1


def test_cgroup_v1_quota_and_a_container_view_of_its_own_cgroup(tmp_path):
    # inside a container /proc/self/cgroup names the host's path; the cgroup itself is mounted at the root
    root = tree(tmp_path, {"proc/self/cgroup": "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n",
                           "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "200000\n",
                           "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert usable_cores(root).quota == pytest.approx(2.0)
    tree(tmp_path, {"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n"})  # no limit
    assert usable_cores(root).quota is None


def test_without_cgroup_files_every_cpu_of_the_affinity_counts(tmp_path):
    c = usable_cores(tmp_path)
    assert c.quota is None and c.usable == len(c.cpus) >= 1


def test_available_cores_under_affinity_and_quota():
    assert Cores((0, 1)).available(1.0) == pytest.approx(1.0)
    assert Cores((0, 1)).available(None) == 2.0  # unknown load: the whole machine
    assert Cores((0, 1)).available(3.0) == 0.0
    # a quota of 2 on 8 CPUs: other processes limit it only once fewer than 2 CPUs are free
    assert Cores(tuple(range(8)), 2.0).available(5.0) == 2.0
    assert Cores(tuple(range(8)), 2.0).available(7.5) == pytest.approx(0.5)


def test_busy_seconds_read_the_process_cpus_only(tmp_path):
    stat = tmp_path / "stat"
    #               user nice system idle iowait irq softirq steal
    stat.write_text("cpu  999 0 999 0 0 0 0 0\n"
                    "cpu0 100 10 20 500 40 1 2 3 0 0\n"
                    "cpu1 7 0 0 900 0 0 0 0 0 0\n")
    tick = _busy_seconds((0,), stat) / 136  # user+nice+system+irq+softirq+steal, not idle or iowait
    assert _busy_seconds((0, 1), stat) == pytest.approx(143 * tick)
    assert _busy_seconds((5,), stat) is None


def test_others_busy_takes_the_process_own_time_out():
    a, b = Reading(0.0, 100.0, 10.0), Reading(10.0, 115.0, 15.0)  # 15 core-s busy, 5 of them ours
    assert others_busy(a, b) == pytest.approx(1.0)
    assert others_busy(Reading(0.0, None, 0.0), b) is None


def test_a_busy_process_on_the_cpu_is_seen():
    cpu = sorted(usable_cores().cpus)[0]
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import os

        os.sched_setaffinity(spin.pid, {cpu})
        time.sleep(0.3)
        assert measure_others(Cores((cpu,)), 0.5) > 0.8
    finally:
        spin.kill()
        spin.wait()


def test_split_deals_the_cpus_out_without_overlap():
    assert split(Cores((0, 1, 2, 3, 4)), 2) == [(0, 1, 2), (3, 4)]
    assert split(Cores((0, 1)), 3) == [(0,), (1,), (0,)]  # more jobs than CPUs: some share one
