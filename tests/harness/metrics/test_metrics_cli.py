"""`--metrics` and `--backbone` through the CLI: recorded as a run setting, on every line with the
network's provenance, the run's own on `harness eval`, and one-line errors (exit 2)."""
import pytest

from tests.conftest import read_manifest, read_records

TINY = ["--set", "resolution=32", "--set", "width=2", "--set", "batch_size=8"]
QUIET = ["--no-progress", "--no-energy", "--backbone", "standin", "--eval-samples", "32"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from harness.cli import main

    path = tmp_path_factory.mktemp("metrics") / "run"
    main(["run", "--method", "dcgan", "--budget", "1s", "--run-dir", str(path), *TINY, *QUIET,
          "--metrics", "kid,fid,prdc,ci"])
    return path


def test_a_run_records_its_metrics_and_every_line_names_the_network(run_dir):
    m = read_manifest(run_dir)
    assert m["run"]["metrics"] == "fid,kid,prdc,ci" and m["run"]["fid_backbone"] == "standin"
    assert m["fid"]["metrics"] == ["fid", "kid", "prdc", "ci"] and m["fid"]["backbone"]["family"] == "standin"
    assert m["fid"]["settings"]["ci"]["resamples"] == 200
    evals = [r for r in read_records(run_dir) if r["kind"] == "eval"]
    assert evals
    for line in evals:
        assert {"fid_standin", "kid_standin_mean", "kid_standin_low", "kid_standin_high", "precision_standin",
                "coverage_standin", "fid_standin_low"} <= set(line)
        assert not {"fid", "kid_mean", "precision", "is_mean"} & set(line)
        assert line["backbone"].startswith("standin") and line.get("backbone_sha256") is None  # no weights file
        assert any("small-sample FID (n=32)" in n and "KID is unbiased" in n for n in line["notes"])


def test_a_continued_run_keeps_its_metrics(cli, run_dir):
    r = cli("run", "--resume", run_dir, "--metrics", "fid", *QUIET[:2])
    assert r.code == 2 and "--metrics fid,kid,prdc,ci, not fid" in r.err
    assert cli("run", "--resume", run_dir, "--metrics", "ci,prdc,fid,kid", "--budget", "1s", *QUIET[:2]).code == 0


def test_eval_takes_the_runs_metrics_unless_told(cli, run_dir):
    r = cli("eval", run_dir, "--samples", "16", "--backbone", "standin")
    assert r.code == 0, r.err
    line = [x for x in read_records(run_dir) if x.get("stage") == "truncation"][-1]
    assert "kid_standin_mean" in line and "precision_standin" in line
    r = cli("eval", run_dir, "--samples", "16", "--backbone", "standin", "--metrics", "kid")
    assert r.code == 0, r.err
    line = [x for x in read_records(run_dir) if x.get("stage") == "truncation"][-1]
    assert "kid_standin_mean" in line and "fid_standin" not in line and "precision_standin" not in line


def test_fid_command_computes_what_it_is_asked(cli, run_dir):
    r = cli("fid", run_dir, "shapes", "--samples", "24", "--backbone", "standin", "--metrics", "fid,kid,fdinf,is",
            "--reference", "stratified")
    assert r.code == 0, r.err
    assert "kid_standin_mean:" in r.out and "fid_standin:" in r.out and "backbone: standin" in r.out
    assert "FD-inf missing: it needs n >= 10000" in r.out and "IS missing" in r.out


@pytest.mark.parametrize("args, message", [
    (["--metrics", "fid,clip"], "--metrics takes a comma-separated list"),
    (["--metrics", "ci"], "bootstrap interval of fid or kid"),
    (["--backbone", "dinov2"], "unknown --backbone 'dinov2'"),
    (["--backbone", "dinov2:/nonexistent/dinov2_vitl14_pretrain.pth"], "no such file"),
])
def test_bad_metrics_and_backbones_are_one_line_errors(cli, tmp_path, args, message):
    r = cli("run", "--method", "dcgan", "--budget", "1s", "--run-dir", tmp_path / "x", *TINY, "--no-progress",
            "--no-energy", *args)
    assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1, r.err
    r = cli("fid", tmp_path, "shapes", *args)
    assert r.code == 2 and message in r.err
    r = cli("compare", "dcgan", "--budget", "1s", "--out", tmp_path / "cmp", "--no-energy", "--no-progress", *args)
    assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert not (tmp_path / "cmp").exists()  # refused before any job or folder


@pytest.mark.parametrize("args, message", [
    (["--metrics", "fid,clip"], "--metrics takes a comma-separated list"),
    (["--backbone", "dinov2"], "unknown --backbone 'dinov2'"),
    (["--backbone", "dinov2:/nonexistent/dinov2_vitl14_pretrain.pth"], "no such file"),
])
def test_eval_refuses_bad_metrics_and_backbones_in_one_line(cli, run_dir, args, message):
    r = cli("eval", run_dir, "--samples", "8", *args)
    assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_compare_hands_its_metrics_and_network_to_every_job():
    from pathlib import Path

    from harness.launch.compare import Comparison, parse_entry

    c = Comparison(entries=(parse_entry("dcgan"), parse_entry("lsgan")), seeds=(0, 1), budget="1h",
                   fid_backbone="standin", metrics="fid,kid,prdc")
    for job in c.jobs(Path("/nonexistent")):
        argv = job.argv(c, "cpu", None, False, False)
        assert argv[argv.index("--metrics") + 1] == "fid,kid,prdc"
        assert argv[argv.index("--fid-backbone") + 1] == "standin"


def test_a_dinov2_run_names_its_weights_and_their_sha256(cli, tmp_path):
    import hashlib

    import torch

    pytest.importorskip("timm")
    from tests.harness.metrics.test_dinov2 import tiny_vit

    weights = tmp_path / "dinov2_tiny.pth"
    torch.save(tiny_vit().state_dict(), weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    run_dir = tmp_path / "run"
    r = cli("run", "--method", "dcgan", "--budget", "1s", "--run-dir", run_dir, *TINY, "--no-progress", "--no-energy",
            "--eval-samples", "16", "--backbone", f"dinov2:{weights}", "--metrics", "fid,kid")
    assert r.code == 0, r.err
    m = read_manifest(run_dir)
    assert m["run"]["fid_backbone"] == f"dinov2:{weights}"
    assert m["fid"]["backbone"]["sha256"] == sha and m["fid"]["backbone"]["path"] == str(weights)
    assert m["fid"]["mode"] == "pil_uint8"
    line = [x for x in read_records(run_dir) if x["kind"] == "eval"][-1]
    assert line["backbone_sha256"] == sha and line["backbone_weights"] == str(weights)
    assert {"fid_dinov2", "kid_dinov2_mean"} <= set(line) and not {"fid", "kid_mean"} & set(line)
