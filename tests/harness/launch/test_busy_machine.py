"""Fair comparisons on a shared machine: every train line and run.json say how much of the machine a
run had, `--threads` fixes the threads, and the report flags a run that trained beside a busy
process (two real runs, one of them sharing its CPU with two busy processes)."""
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from tests.conftest import ROOT, SMOKE, read_manifest, read_records

TINY = ["--set", "resolution=32", "--set", "width=2", "--set", "batch_size=8"]


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_train_lines_and_run_json_record_the_share_of_the_machine(cli, tmp_path, keep_threads):
    run_dir = tmp_path / "r"
    r = cli("run", "--method", "dcgan", "--budget", "3s", "--eval-every", "2s",
            "--run-dir", run_dir, "--threads", "1", *TINY, *SMOKE)
    assert r.code == 0, r.err
    assert "threads: 1 intra-op" in r.err
    lines = read_records(run_dir)
    train = [x for x in lines if x["kind"] == "train"]
    assert train and all(0.0 <= x["share"] <= 1.0 for x in train)  # the compact figure on every train line
    stretches = [x for x in lines if x["kind"] == "stretch"]
    assert len(stretches) >= 2
    assert all(x["threads"] == [1, 1] and {"share", "others", "cpu_util"} <= set(x) for x in stretches)
    m = read_manifest(run_dir)
    assert m["threads"]["intra_op"] == 1 and m["threads"]["policy"] == "--threads"
    summary = m["exclusive_share"]["gan"]
    assert summary["device"] == "cpu" and summary["stretches"] == len(stretches)
    assert summary["seconds"] == pytest.approx(m["stage_state"]["gan"]["budget_s"], rel=0.05)
    assert m["totals"]["exclusive_share"] == summary["share"]
    # a CPU run counts CPU-hours, never GPU-hours
    assert "cpu_h" in m["totals"] and "gpu_h" not in m["totals"] and "budget_cpu_h" in m["run"]
    assert all("cpu_h" in x and "gpu_h" not in x for x in lines)


def test_threads_must_be_positive_and_a_cpu_comparison_never_oversubscribes(cli, tmp_path):
    r = cli("run", "--method", "dcgan", "--budget", "1s", "--run-dir", tmp_path / "r", "--threads", "0", *SMOKE)
    assert r.code == 2 and "--threads must be 1 or more" in r.err
    too_many = str(len(os.sched_getaffinity(0)) + 1)
    r = cli("compare", "dcgan", "--budget", "1s", "--device", "cpu", "--threads", too_many, "--out", tmp_path / "c",
            *SMOKE)
    assert r.code == 2 and "never oversubscribe" in r.err and len(r.err.strip().splitlines()) == 1


def harness_on(cpu: int, *args) -> subprocess.Popen:
    """`harness ARGS` in a fresh interpreter that may run on CPU `cpu` only."""
    code = (f"import os, runpy, sys; os.sched_setaffinity(0, {{{cpu}}}); sys.argv = ['harness', *sys.argv[1:]]; "
            f"runpy.run_module('harness', run_name='__main__')")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs: one idle, one busy")
def test_the_report_flags_the_run_that_trained_beside_a_busy_process(cli, tmp_path):
    idle_cpu, busy_cpu = sorted(os.sched_getaffinity(0))[:2]
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for s in spinners:
            os.sched_setaffinity(s.pid, {busy_cpu})
        common = ["--budget", "3s", "--eval-every", "1.5s", *TINY, *SMOKE]
        jobs = [harness_on(idle_cpu, "run", "--method", "dcgan", "--run-dir", tmp_path / "runs" / "idle", *common),
                harness_on(busy_cpu, "run", "--method", "lsgan", "--run-dir", tmp_path / "runs" / "busy", *common)]
        outs = [j.communicate(timeout=240) for j in jobs]
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    assert [j.returncode for j in jobs] == [0, 0], outs
    assert "the machine is busy" in outs[1][1]  # the run beside the busy processes warned when it started
    idle, busy = (read_manifest(tmp_path / "runs" / n)["totals"]["exclusive_share"] for n in ("idle", "busy"))
    assert busy < 0.5  # two busy processes on its one CPU leave it about a third

    out = tmp_path / "report"
    r = cli("report", tmp_path / "runs", "--out", out)
    assert r.code == 0, r.err
    summary = pd.read_csv(out / "tables" / "summary.csv")
    assert list(summary.columns[summary.columns.get_loc("budget") + 1:][:3]) == ["share", "share_min", "conditions"]
    flags = dict(zip(summary["method"], summary["conditions"]))
    assert flags["lsgan"].startswith("busy (")
    # the other run is flagged only if other processes loaded its CPU too (on a shared machine they may)
    assert flags["dcgan"] == "equal" if idle >= 0.9 else flags["dcgan"].startswith("busy (")
    ttt = pd.read_csv(out / "tables" / "time_to_target.csv")
    assert "share" in ttt.columns and ttt.columns.get_loc("share") == ttt.columns.get_loc("budget") + 1
    assert ttt[ttt["method"] == "lsgan"]["conditions"].str.startswith("busy").all()
    assert "! lsgan: busy (" in r.out and "CPU-h" in r.out  # the console's flag line and the CPU-hours column
    for page in ("index.md", "index.html"):
        text = (out / page).read_text()
        assert "flag: lsgan trained on a machine it did not have to itself: busy (" in text
        assert ("unequal conditions between configurations" in text) == (abs(idle - busy) > 0.1)
