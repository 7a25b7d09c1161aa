"""CLI smoke runs of the octave GANs: every variant, every loss, the epoch schedule on a CelebA-layout
folder, and `variant=base` training exactly like the vanilla baseline."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from harness.rundir.rundir import RunDir
from tests.conftest import SMOKE, read_manifest, read_records

TINY = ["--set", "resolution=32", "--set", "width=2", "--set", "batch_size=8", "--set", "spectrum_samples=64"]
COST = ("g_params", "d_params", "g_macs", "d_macs")
VARIANTS = ("base", "oct", "low", "ramp", "combi", "official")
PROVENANCE = {"ramp": "reconstructed", "combi": "reconstructed", "official": "official-code"}
# Every variant with the DCGAN loss, every loss with the default variant (official): 8 runs instead of
# 18 keeps this file well under a minute on two cores; the losses do not touch the octave code.
CASES = [("octave-dcgan", v) for v in VARIANTS] + [("octave-lsgan", "official"), ("octave-wgan", "official")]


@pytest.mark.parametrize("method, variant", CASES)
def test_smoke_run_of_each_variant(cli, tmp_path, method, variant):
    run_dir = tmp_path / f"{method}-{variant}"
    r = cli("run", "--method", method, "--budget", "2s", "--set", f"variant={variant}", *TINY,
            "--run-dir", run_dir, *SMOKE)
    assert r.code == 0, r.err
    m = read_manifest(run_dir)
    assert m["status"] == "budget_exhausted" and m["config"]["variant"] == variant
    assert m["paper"] == "soft-octave-gans" and m["stage_state"]["gan"]["steps"] >= 1
    final = m["last_eval"]["gan"]
    assert final["final"] and "fid_standin" in final
    model = m["stage_state"]["gan"]["model"]
    assert all(isinstance(model[k], int) and model[k] > 0 for k in COST)  # the cost lands in run.json
    assert math.isfinite(final["spectrum_hf_gap"]) and final["spectrum_n"] == 64
    with np.load(run_dir / "samples" / f"gan-{final['step']:08d}-spectrum.npz") as s:
        assert s["fake_mean"].shape == s["real_mean"].shape == (17,)  # radii 0..16 of 32x32 images
        assert int(s["n_fake"]) == int(s["n_real"]) == 64 and np.all(np.isfinite(s["fake_std"]))
    train = [x for x in read_records(run_dir) if x["kind"] == "train"]
    soft = variant in PROVENANCE
    assert all(("beta_h" in x) == soft for x in train) and (("beta_h" in final) == soft)
    # the schedule and its provenance, top-level in run.json, for the report's Fig. 9 (soft variants only)
    assert m.get("schedule_provenance") == PROVENANCE.get(variant)
    if soft:
        curve = m["beta_schedule"]
        assert curve["name"] == variant and curve["provenance"] == PROVENANCE[variant]
        assert len(curve["progress"]) == len(curve["beta_h"]) == len(curve["beta_l"]) >= 100
        assert curve["progress"][0] == 0.0 and curve["progress"][-1] == 1.0
        assert (final["beta_h"], final["beta_l"]) == pytest.approx((curve["beta_h"][-1], curve["beta_l"][-1]))
    else:
        assert "beta_schedule" not in m
    assert (run_dir / "checkpoints" / "gan-last.pt").is_file()


def _celeba_folder(root, n=21):
    """n images of CelebA's aligned size (178 wide, 218 high) in an img_align_celeba folder."""
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:218, 0:178] / 218.0
    for i in range(n):
        base = rng.uniform(0, 1, 3) * 255 * (0.5 + 0.5 * np.sin(6 * (xx + yy) + i))[..., None]
        img = np.clip(base + rng.normal(0, 20, (218, 178, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i + 1:06d}.jpg", quality=90)
    return root


def test_epoch_schedule_and_per_epoch_evaluation_on_celeba_layout(cli, tmp_path):
    data = _celeba_folder(tmp_path / "celeba")  # 20 train + 1 held out: 5 steps of 4 per epoch
    run_dir = tmp_path / "run"
    r = cli("run", "--method", "octave-dcgan", "--data", f"celeba:{data}", "--budget", "10m", "--eval-every", "1epoch",
            "--set", "resolution=32", "--set", "width=2", "--set", "batch_size=4", "--set", "epochs=3",
            "--set", "variant=ramp", "--set", "beta_h=[[0,0.2],[1,0.8]]", "--set", "schedule_unit=epoch",
            "--set", "eval_betas=current",
            "--set", "spectrum_samples=16", "--set", "spectrum_epochs=[1]", "--run-dir", run_dir, *SMOKE)
    assert r.code == 0, r.err
    m = read_manifest(run_dir)
    assert m["status"] == "completed" and m["stage_state"]["gan"]["steps"] == 15
    assert m["dataset"]["name"] == "celeba" and m["config"]["beta_h"] == [[0.0, 0.2], [1.0, 0.8]]
    assert m["schedule_provenance"] == m["beta_schedule"]["provenance"] == "user"
    assert m["beta_schedule"]["user_set"] == ["beta_h"] and m["beta_schedule"]["unit"] == "epoch"
    evals = [x for x in read_records(run_dir) if x["kind"] == "eval"]
    # one evaluation per epoch; the third epoch's is the final one (not a second evaluation)
    assert [x["epoch"] for x in evals] == [1.0, 2.0, 3.0] and [x["final"] for x in evals] == [False, False, True]
    # sampling betas follow epochs / 3 on the custom beta_h and the default ramp beta_l
    assert [round(x["beta_h"], 6) for x in evals] == [0.4, 0.6, 0.8]
    assert [round(x["beta_l"], 6) for x in evals] == [0.466667, 0.3, 0.3]  # 0.8 -> 0.3 over x in [0, 0.5]
    assert ["spectrum_hf_gap" in x for x in evals] == [True, False, True]  # epoch 1 and the final
    assert sorted(p.name for p in (run_dir / "samples").glob("*-spectrum.npz")) == \
        ["gan-00000005-spectrum.npz", "gan-00000015-spectrum.npz"]


def test_variant_base_trains_exactly_like_the_dcgan_baseline(cli, tmp_path):
    common = ["--budget", "1m", "--max-steps", "3", "--seed", "5", "--set", "resolution=32", "--set", "width=2",
              "--set", "batch_size=8", *SMOKE]
    r = cli("run", "--method", "dcgan", "--run-dir", tmp_path / "vanilla", *common)
    assert r.code == 0, r.err
    r = cli("run", "--method", "octave-dcgan", "--set", "variant=base", "--run-dir", tmp_path / "octave", *common)
    assert r.code == 0, r.err
    states = [RunDir(tmp_path / d).checkpoints.load("gan").state["stage_state"]
              for d in ("vanilla", "octave")]
    for net in ("G", "D"):
        a, b = states[0][net], states[1][net]
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    first = [read_records(tmp_path / d)[0] for d in ("vanilla", "octave")]
    assert first[0]["loss_d"] == first[1]["loss_d"] and first[0]["loss_g"] == first[1]["loss_g"]
