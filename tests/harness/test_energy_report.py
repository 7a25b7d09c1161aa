"""codecarbon energy in the run dir, and `harness report` tables from run directories."""
import csv

import pandas as pd
import pytest

from harness.engine.energy import EnergyMeter
from tests.conftest import read_manifest, read_records

TINY = ["--set", "resolution=32", "--set", "width=2", "--set", "batch_size=8"]


def test_energy_is_measured_offline_and_accumulates(cli, tmp_path):
    run_dir = tmp_path / "r"
    r = cli("run", "--method", "dcgan", "--budget", "3s", "--run-dir", run_dir, "--country", "FRA",
            "--fid-backbone", "standin", "--eval-samples", "32", "--no-progress", *TINY)
    assert r.code == 0, r.err
    m = read_manifest(run_dir)
    assert m["energy"]["status"] == "measured" and m["energy"]["country"] == "FRA"
    components = m["energy"]["components"]  # what codecarbon measured (e.g. an estimate from CPU load)
    assert any(c.startswith("CPU") and (": measured" in c or ": estimated" in c) for c in components), components
    t = m["totals"]
    assert t["kwh_train"] > 0 and t["kwh_eval"] > 0 and t["kwh"] == pytest.approx(t["kwh_train"] + t["kwh_eval"])
    assert t["kg_co2e"] > 0
    final = [r for r in read_records(run_dir) if r["kind"] == "eval"][-1]
    assert final["kwh"] == pytest.approx(t["kwh_train"])
    rows = list(csv.DictReader(open(run_dir / "energy.csv")))
    assert len(rows) >= 1 and rows[0]["country_iso_code"] == "FRA"
    assert float(rows[-1]["energy_consumed"]) > 0
    assert len(list((run_dir / "energy").glob("segments_*.csv"))) >= 1


def test_energy_failure_never_stops_a_run(tmp_path, monkeypatch):
    import codecarbon

    def boom(*a, **k):
        raise RuntimeError("no sensors here")

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", boom)
    meter = EnergyMeter(tmp_path, "USA")
    with meter.segment("train"):
        x = sum(range(1000))
    assert x == 499_500  # the measured block ran to its end
    assert meter.status.startswith("unavailable: codecarbon failed to start")
    assert "no sensors here" in meter.status
    assert meter.summary()["kwh_train"] is None  # missing, not zero
    meter.close()


def test_report_tables(cli, tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        r = cli("run", "--method", "lsgan", "--budget", "2s", "--seed", seed, "--run-dir", runs / f"s{seed}",
                "--fid-backbone", "standin", "--eval-samples", "32", "--no-progress", "--no-energy", *TINY)
        assert r.code == 0, r.err
    out = tmp_path / "report"
    r = cli("report", runs, "--out", out)
    assert r.code == 0, r.err
    df = pd.read_csv(out / "tables" / "runs.csv")
    assert len(df) == 2 and set(df["seed"]) == {0, 1}
    assert {"status", "steps", "gpu_h", "kwh", "fid_standin", "fid_standin_n"} <= set(df.columns)
    assert "fid" not in df.columns  # a stand-in score never lands in a FID column
    assert (out / "tables" / "runs.md").read_text().count("lsgan") == 2
    assert "\\begin{tabular}" in (out / "tables" / "runs.tex").read_text()
    evals = pd.read_csv(out / "tables" / "evals.csv")
    assert len(evals) == 2
    summary = pd.read_csv(out / "tables" / "summary.csv")
    assert len(summary) == 1 and summary.loc[0, "n_seeds"] == 2  # seeds of one config are grouped
    vals = df["fid_standin"].astype(float)
    assert summary.loc[0, "fid_standin_best_of_2"] == pytest.approx(vals.min())  # best always with its N
    assert summary.loc[0, "fid_standin_mean"] == pytest.approx(vals.mean())
    assert summary.loc[0, "fid_standin_std"] == pytest.approx(vals.std(ddof=1))
    assert (out / "tables" / "cost.csv").is_file()
    for x in ("train_h", "gpu_h", "epoch"):
        assert (out / "figures" / f"fid_standin_vs_{x}.png").stat().st_size > 1000
        assert (out / "figures" / f"fid_standin_vs_{x}.pdf").is_file()
    assert not (out / "figures" / "fid_standin_vs_kwh.png").exists()  # energy was off: no made-up axis


def test_report_of_nothing_is_an_error(cli, tmp_path):
    r = cli("report", tmp_path)
    assert r.code == 2 and "no run directories" in r.err


def test_report_warns_for_every_unparseable_metrics_line(cli, tmp_path):
    run_dir = tmp_path / "r"
    r = cli("run", "--method", "dcgan", "--budget", "1s", "--run-dir", run_dir, "--fid-backbone", "standin",
            "--eval-samples", "16", "--no-progress", "--no-energy", *TINY)
    assert r.code == 0, r.err
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 9, "bud\n')  # a line torn by a crash
    n = len((run_dir / "metrics.jsonl").read_text().splitlines())
    r = cli("report", run_dir, "--out", tmp_path / "out")
    assert r.code == 0, r.err
    assert f"warning: {run_dir / 'metrics.jsonl'}:{n}: skipped an unparseable line" in r.err
