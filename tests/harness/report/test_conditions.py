"""The report's conditions: the share of the machine beside the budget, flags for a configuration
whose runs had a clearly lower or unequal share, runs that measured none, and CPU-hours for CPU runs
(those written before cpu_h existed too)."""
import pandas as pd
from rich.console import Console

from harness.report import write_report
from harness.report.conditions import config_conditions
from harness.report.tables import console_summary
from harness.rundir.rundir import RunDir
from tests.harness.report.conftest import make_run


def with_share(path, share: float, device: str = "cpu"):
    RunDir.open(path).update(device=device, exclusive_share={"gan": {"device": device, "seconds": 3600.0,
                                                                     "share": share, "min_share": share}})
    return path


def test_flags_name_busy_and_unequal_seeds():
    runs = pd.DataFrame({"run": ["a", "b", "c"], "share": [0.98, 0.99, 0.6]})
    assert config_conditions(runs.iloc[:2])["conditions"] == "equal"
    c = config_conditions(runs)
    assert c["share"] == 0.857 and c["share_min"] == 0.6
    assert c["conditions"] == "busy (0.60 of the machine); unequal seeds (0.60-0.99)"
    assert config_conditions(pd.DataFrame({"run": ["x"], "share": [None]}))["conditions"] == "not measured"
    part = pd.DataFrame({"run": ["a", "x"], "share": [0.95, None]})
    assert config_conditions(part)["conditions"] == "1 run(s) not measured"


def test_a_busy_configuration_is_flagged_on_every_page(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        with_share(make_run(root, f"dcgan-s{seed}", "dcgan", seed, [(0.5, 100.0), (1.0, 90.0)]), 0.99)
        with_share(make_run(root, f"oct-s{seed}", "octave-dcgan", seed, [(0.5, 80.0), (1.0, 70.0)], variant="oct"),
                   0.5 if seed else 0.98)
    report = write_report([root], tmp_path / "out")
    summary = pd.read_csv(tmp_path / "out" / "tables" / "summary.csv")
    assert list(summary.columns[:9]) == ["method", "variant", "schedule_provenance", "data", "resolution", "budget",
                                         "share", "share_min", "conditions"]  # the share beside the budget
    flags = dict(zip(summary["method"], summary["conditions"]))
    assert flags == {"dcgan": "equal", "octave-dcgan": "busy (0.50 of the machine); unequal seeds (0.50-0.98)"}
    md = (tmp_path / "out" / "index.md").read_text()
    assert "**flag: octave-dcgan oct trained on a machine it did not have to itself: busy (0.50" in md
    assert "unequal conditions between configurations (share of the machine: dcgan 0.99, octave-dcgan oct 0.74)" in md
    assert "class='flag'" in (tmp_path / "out" / "index.html").read_text()
    console = Console(width=80, record=True)
    console.print(console_summary(report.frames))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "0.50!" in text and "! octave-dcgan oct: busy" in text and "CPU-h" in text and "GPU-h" not in text


def test_runs_equally_busy_compare_with_each_other(tmp_path):
    root = tmp_path / "runs"
    with_share(make_run(root, "a", "dcgan", 0, [(1.0, 90.0)]), 0.5)
    with_share(make_run(root, "b", "lsgan", 0, [(1.0, 80.0)]), 0.52)
    write_report([root], tmp_path / "out")
    md = (tmp_path / "out" / "index.md").read_text()
    assert "flag: dcgan trained on a machine it did not have to itself: busy (0.50 of the machine)" in md
    assert "every configuration trained with about the same share of the machine (dcgan 0.50, lsgan 0.52)" in md
    assert "unequal conditions" not in md


def test_equal_conditions_say_so_and_older_runs_are_not_measured(tmp_path):
    root = tmp_path / "runs"
    with_share(make_run(root, "a", "dcgan", 0, [(1.0, 90.0)]), 0.97)
    with_share(make_run(root, "b", "lsgan", 0, [(1.0, 80.0)]), 0.95)
    write_report([root], tmp_path / "out")
    assert "conditions equal: every run had at least 0.9 of the machine (lowest 0.95)." in \
        (tmp_path / "out" / "index.md").read_text()
    make_run(root, "old", "wgan", 0, [(1.0, 85.0)])  # a run from before exclusive_share existed
    write_report([root], tmp_path / "out2")
    md = (tmp_path / "out2" / "index.md").read_text()
    assert "1 run(s) recorded no share of the machine" in md and "conditions equal" not in md


def test_a_cpu_run_written_before_cpu_h_existed_reports_cpu_hours(tmp_path):
    root = tmp_path / "runs"
    old = make_run(root, "old-cpu", "dcgan", 0, [(0.5, 100.0), (1.0, 90.0)])  # lines and totals say gpu_h
    RunDir.open(old).update(device="cpu")
    make_run(root, "gpu", "lsgan", 0, [(1.0, 80.0)], devices=2)  # no device recorded: its gpu_h stays
    RunDir.open(root / "gpu").update(device="cuda")
    report = write_report([root], tmp_path / "out")
    runs = report.frames.runs.set_index("run")
    assert runs.loc["old-cpu", "cpu_h"] == 1.0 and pd.isna(runs.loc["old-cpu", "gpu_h"])
    assert runs.loc["gpu", "gpu_h"] == 2.0 and pd.isna(runs.loc["gpu", "cpu_h"])
    assert set(report.frames.evals[report.frames.evals["run"] == "old-cpu"]["cpu_h"]) == {0.5, 1.0}
    ttt = pd.read_csv(tmp_path / "out" / "tables" / "time_to_target.csv")
    assert {"gpu_h_mean", "cpu_h_mean"} <= set(ttt.columns)
    assert (tmp_path / "out" / "figures" / "fid_vs_cpu_h.png").is_file()
    console = Console(width=80, record=True)
    console.print(console_summary(report.frames))
    assert "dev-h" in console.export_text()  # a mix: each run's own device-hours
