"""`harness report` on real run directories: its tables, an empty input, unparseable lines."""

import pandas as pd
import pytest


TINY = ["--set", "resolution=32", "--set", "width=2", "--set", "batch_size=8"]



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
    # a CPU run's device-hours are CPU-hours; the share of the machine it had sits beside them
    assert {"status", "steps", "cpu_h", "share", "kwh", "fid_standin", "fid_standin_n"} <= set(df.columns)
    assert "gpu_h" not in df.columns
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
    for x in ("train_h", "cpu_h", "epoch"):
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
