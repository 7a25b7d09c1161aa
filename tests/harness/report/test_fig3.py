"""NSBGAN Fig. 3 as the paper draws it: FID against IS over truncation levels, with the
--latents-from curve and the FID* marker; without IS the report says why it is not drawn."""
from harness.report import write_report
from harness.rundir.rundir import RunDir

FAKE_IS = ["is_mean from a fake scorer (a test's numbers, not an Inception Score)"]


def nsbgan_run(root, name, with_is: bool):
    run = RunDir.create(root / name, {"method": "nsbgan", "config": {"resolution": 32}, "stages": ["sampler"],
                                      "run": {"seed": 0, "budget": "1h", "devices": 1},
                                      "dataset": {"name": "shapes", "id": "shapes-test"}})
    for t, fid, is_mean in ((1.0, 60.0, 20.0), (0.6, 45.0, 40.0), (0.4, 50.0, 55.0), (0.1, 80.0, 70.0)):
        line = {"kind": "eval", "stage": "pipeline", "step": 10, "truncation": t, "final": True, "fid": fid,
                "fid_n": 64, "notes": FAKE_IS}
        if with_is:
            line["is_mean"] = is_mean
        if t == 0.6:
            line["fid_star"] = 20.0
        run.metrics.append(line)
    for fid, is_mean in ((70.0, 30.0), (55.0, 50.0)):  # two sources through the decoders
        run.metrics.append({"kind": "eval", "stage": "latents-from", "step": 10, "fid": fid, "fid_n": 64,
                            "latents_from": "npz:pretrained.npz", **({"is_mean": is_mean} if with_is else {})})
    run.update(status="completed")
    return root / name


def test_fig3_is_drawn_from_runs_with_is(tmp_path):
    report = write_report([nsbgan_run(tmp_path, "a", with_is=True)], tmp_path / "out")
    assert (tmp_path / "out" / "figures" / "fid_against_is.png").is_file()
    page = (tmp_path / "out" / "index.html").read_text()
    assert "NSBGAN Fig. 3" in page and not report.frames.figure_notes


def test_without_is_the_report_says_why_fig3_is_missing(tmp_path):
    report = write_report([nsbgan_run(tmp_path, "b", with_is=False)], tmp_path / "out")
    assert not (tmp_path / "out" / "figures" / "fid_against_is.png").exists()
    (note,) = report.frames.figure_notes
    assert "Fig. 3" in note and "not drawn" in note and "pool3" in note
    assert note in (tmp_path / "out" / "index.md").read_text()
