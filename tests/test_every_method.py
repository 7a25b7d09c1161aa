"""CI runs every registered method as a smoke run on a tiny budget. A method registered without
tiny settings here fails this file, so none can slip past CI."""
import pytest

from harness.registry import all_methods
from tests.conftest import SAMPLER_TINY, SMOKE, read_manifest, read_records

GAN = ["resolution=32", "width=2", "batch_size=8"]
OCTAVE = GAN + ["spectrum_samples=16"]
DECODERS = ["resolution=32", "levels=1", "width=4", "batch_sizes=[8]", "patch=8", "eval_images=16", *SAMPLER_TINY]
TINY = {
    "dcgan": GAN, "lsgan": GAN, "wgan": GAN,
    "octave-dcgan": OCTAVE, "octave-lsgan": OCTAVE, "octave-wgan": OCTAVE,
    "nsbgan": DECODERS,
    "nsbgan-pixel": ["resolution=32", "levels=1", "width=4", "batch_sizes=[8]", "eval_images=16", *SAMPLER_TINY],
    "biggan": ["resolution=32", "ch=4", "batch_size=8", "accumulate=2", "eval_batch_size=32"],
}


@pytest.mark.parametrize("name", [m.name for m in all_methods()])
def test_every_registered_method_runs_through_the_cli(cli, tmp_path, name):
    assert name in TINY, f"method {name} has no smoke settings in tests/test_every_method.py"
    run_dir = tmp_path / name
    sets = [a for kv in TINY[name] for a in ("--set", kv)]
    r = cli("run", "--method", name, "--budget", "2s", "--run-dir", run_dir, *sets, *SMOKE)
    assert r.code == 0, r.err
    m = read_manifest(run_dir)
    assert m["status"] in ("budget_exhausted", "completed")
    evals = [x for x in read_records(run_dir) if x["kind"] == "eval"]
    assert evals and all(x.get("final") for x in evals if x["stage"] == "pipeline")
    assert all((run_dir / "checkpoints" / f"{s}-last.pt").is_file() for s in m["stages"])
    assert "fid" not in evals[-1]  # smoke runs use the stand-in network: never a FID column
