"""CLI smoke runs of the vanilla GAN baselines on `shapes`: complete run dirs, budget respected."""
import pytest
import torch

from tests.conftest import SMOKE, read_manifest, read_records


@pytest.mark.parametrize("method", ["dcgan", "lsgan", "wgan"])
def test_smoke_run_writes_a_complete_run_dir(cli, tmp_path, method):
    run_dir = tmp_path / method
    r = cli("run", "--method", method, "--budget", "4s", "--set", "resolution=32", "--set", "width=4",
            "--set", "batch_size=16", "--run-dir", run_dir, *SMOKE)
    assert r.code == 0, r.err
    m = read_manifest(run_dir)
    assert m["status"] == "budget_exhausted"
    assert m["method"] == method and m["config"]["loss"] == method
    assert m["dataset"]["name"] == "shapes" and m["dataset"]["storage"] == "rendered"  # no preparation here
    stage = m["stage_state"]["gan"]
    records = read_records(run_dir)
    steps = stage["steps"]
    assert steps >= 1
    # training stops at the first step boundary after the budget: the last step started inside it
    assert stage["budget_s"] >= 4.0
    assert stage["budget_s"] - stage["last_step_s"] < 4.0 <= stage["budget_s"] <= 4.0 + stage["last_step_s"]
    assert {r["kind"] for r in records} == {"train", "stretch", "eval"}  # a stretch line ends each training stretch
    final = [r for r in records if r["kind"] == "eval"][-1]
    assert final["final"] and "fid_standin" in final and "fid" not in final
    assert (run_dir / "checkpoints" / "gan-last.pt").is_file()
    assert (run_dir / "checkpoints" / "gan-best.pt").is_file()
    assert list((run_dir / "samples").glob("gan-*-samples.png"))
    assert m["totals"]["steps"] == steps
    assert m["provenance"]["packages"]["torch"]


def test_octave_paper_configs_train_in_fp32_and_bf16_is_recorded():
    """Both papers trained in fp32: the GAN configs default to it on every device; amp=bf16 is
    the explicit speed option and run.json's precision says so."""

    from harness.config import apply_overrides
    from harness.registry import all_methods

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    gans = [m for m in all_methods() if m.paper == "soft-octave-gans"]
    assert len(gans) == 6
    for m in gans:
        (stage,) = m.build(m.config).stages
        assert m.config.amp == "fp32" and stage.precision(cuda) == "fp32"
        (stage,) = m.build(apply_overrides(m.config, {"amp": "bf16"})).stages
        assert stage.precision(cuda) == "bf16" and stage.precision(cpu) == "fp32"  # autocast on CUDA only

