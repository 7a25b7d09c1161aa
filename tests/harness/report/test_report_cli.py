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


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two finished dcgan runs, copied by the tests that damage one of them."""
    from harness.cli import main

    root = tmp_path_factory.mktemp("report-runs")
    for name in ("a", "b"):
        main(["run", "--method", "dcgan", "--budget", "1h", "--max-steps", "2", "--run-dir", str(root / name),
              "--fid-backbone", "standin", "--eval-samples", "16", "--no-progress", "--no-energy", *TINY])
    return root


@pytest.mark.parametrize("line, why", [
    (b'{"kind": "eval", "stage": "gan", "step": 9, "fid_standin": 1.0, "x": "\xff"}', "not UTF-8"),
    (b"null", "no record"),
    (b"[1, 2]", "no record"),
    (b'"text"', "no record"),
    (b'{"kind": "eval", "stage": "gan", "step": "nine", "fid_standin": 1.0}', "the line.step is 'nine'"),
    (b'{"kind": "eval", "stage": "gan", "step": 9, "budget_s": "late"}', "the line.budget_s"),
    (b'{"kind": "eval", "step": 9}', "no stage"),
    (b'{"kind": "eval", "stage": "gan", "step": 9, "notes": [1]}', "the line.notes[0]"),
])
def test_report_skips_and_names_metrics_lines_that_are_no_records(cli, two_runs, tmp_path, line, why):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(two_runs, runs)
    with open(runs / "a" / "metrics.jsonl", "ab") as f:
        f.write(line + b"\n")
    n = len((runs / "a" / "metrics.jsonl").read_bytes().splitlines())
    r = cli("report", runs, "--out", tmp_path / "out")
    assert r.code == 0 and "Traceback" not in r.err, r.err
    warning = next(w for w in r.err.splitlines() if w.startswith("warning: "))
    assert f"{runs / 'a' / 'metrics.jsonl'}:{n}: skipped" in warning and why in warning
    assert len(pd.read_csv(tmp_path / "out" / "tables" / "runs.csv")) == 2  # the run itself is reported


@pytest.mark.parametrize("edit, where", [
    (lambda m: m.update(stage_state=[1, 2]), "stage_state"),
    (lambda m: m.update(totals=[1]), "totals"),
    (lambda m: m["totals"].update(wall_s="long"), "totals.wall_s"),
    (lambda m: m["run"].update(seed="zero"), "run.seed"),
    (lambda m: m.update(run="dcgan"), "run"),
    (lambda m: m["provenance"].update(devices=3), "provenance.devices"),
    (lambda m: m.update(heartbeat={"gan": {"time": "now"}}), "heartbeat.gan.time"),
    (lambda m: m.update(fid={"backbone": "inception"}), "fid.backbone"),
])
def test_report_skips_a_run_whose_run_json_has_wrong_types(cli, two_runs, tmp_path, edit, where):
    import json
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(two_runs, runs)
    m = json.loads((runs / "a" / "run.json").read_text())
    edit(m)
    (runs / "a" / "run.json").write_text(json.dumps(m))
    r = cli("report", runs, "--out", tmp_path / "out")
    assert r.code == 0 and "Traceback" not in r.err, r.err
    assert f"warning: {runs / 'a' / 'run.json'}: {where} is " in r.err and "the run is skipped" in r.err
    df = pd.read_csv(tmp_path / "out" / "tables" / "runs.csv")
    assert list(df["run"]) == ["b"]


def test_report_of_runs_none_of_which_is_readable_is_one_line(cli, two_runs, tmp_path):
    import shutil

    run = tmp_path / "a"
    shutil.copytree(two_runs / "a", run)
    (run / "run.json").write_bytes(b"\xff\xfe{")
    r = cli("report", run, "--out", tmp_path / "out")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
    assert "no readable run directory" in r.err and "not UTF-8" in r.err
