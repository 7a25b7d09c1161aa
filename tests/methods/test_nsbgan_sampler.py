"""NOT-SO-BIGGAN end to end: the BigGAN sampler on the latent, its normalisation, the sampling path
through the decoders, the final evaluation at truncation levels with FID*, `harness eval
--truncation / --latents-from`, and the budget shares of the sequential layout."""
import math

import numpy as np
import pandas as pd
import pytest
import pywt
import torch

from harness.config import apply_overrides
from harness.data.shapes import ShapesDataset
from harness.errors import ConfigError, MetricError
from harness.method import Batch, StageContext
from harness.registry import get_method
from methods.latent_pipeline import LatentRange, latent_range
from tests.conftest import SAMPLER_TINY, SMOKE, read_manifest, read_records

PIPELINE = {  # 64x64 images, two levels: a 16x16 latent
    "nsbgan": ["resolution=64", "levels=2", "width=4", "batch_sizes=[4,4]", "patch=8", "eval_images=8", *SAMPLER_TINY],
    "nsbgan-pixel": ["resolution=64", "levels=2", "width=2", "batch_sizes=[4,4]", "eval_images=8", *SAMPLER_TINY],
}


def test_latent_range_is_the_official_normalisation():
    r = LatentRange.of(-2.3, 6.1)  # ImageNet TL_2 in zero mode: shift 3, scale 10
    assert (r.shift, r.scale) == (3.0, 10.0)
    x = torch.linspace(-3, 7, 11)
    torch.testing.assert_close(r.normalise(x), (x - 2) / 5)  # the official (x - 2) / 5
    torch.testing.assert_close(r.denormalise(r.normalise(x)), x)
    assert r.normalise(torch.tensor([-3.0, 7.0])).tolist() == [-1.0, 1.0]


def test_latent_range_of_the_data_against_pywt(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    data = ShapesDataset(64, "val")
    cfg = apply_overrides(get_method("nsbgan").config, dict(kv.split("=") for kv in PIPELINE["nsbgan"]))
    method = get_method("nsbgan").build(cfg)
    sampler = method.stage("sampler")
    got = latent_range(data, sampler.encoder, "test", torch.device("cpu"), limit=40)
    x = data.images(np.arange(40))[0].double().numpy() / 255.0
    ll = pywt.wavedec2(x, "bior2.2", mode="periodization", level=2, axes=(-2, -1))[0]  # independent reference
    want = LatentRange.of(float(ll.min()), float(ll.max()))
    assert (got.shift, got.scale) == (want.shift, want.scale)
    assert list(tmp_path.glob("latent-range/*.json"))  # cached with the dataset id
    assert latent_range(data, None, "test", torch.device("cpu"), limit=40) == got  # read back, not recomputed


def test_paper_sampler_settings():
    nsb = get_method("nsbgan").config.sampler
    assert (nsb.arch, nsb.resolution, nsb.resolved("ch"), nsb.depth, nsb.resolved("attn"), nsb.resolved("dim_z"),
            nsb.shared_dim) == ("biggan-deep", 64, 128, 2, 32, 128, 128)
    assert (nsb.batch_size * nsb.accumulate, nsb.lr_g, nsb.lr_d, nsb.betas, nsb.adam_eps, nsb.sn_eps) == \
        (512, 1e-4, 4e-4, (0.0, 0.999), 1e-6, 1e-6)
    assert (nsb.ema_decay, nsb.ema_start, nsb.iterations) == (0.9999, 20_000, 250_000)
    assert nsb.accumulation == "ajbrock"  # the samplers' scripts train with GAN_training_function
    plain = apply_overrides(get_method("nsbgan").config, {"sampler_model": "biggan"}).sampler
    assert (plain.arch, plain.resolved("ch"), plain.resolved("attn"), plain.resolved("dim_z"),
            plain.batch_size * plain.accumulate) == ("biggan", 96, 32, 120, 1024)  # launch_BigGAN_WT64_bs1024
    pix = get_method("nsbgan-pixel").config.sampler  # launch_BigGAN_deep_D64_bs512: the only released script
    assert (pix.arch, pix.resolved("ch"), pix.resolved("attn"), pix.resolved("dim_z"), pix.shared_dim,
            pix.batch_size * pix.accumulate) == ("biggan-deep", 128, 32, 128, 128, 512)
    pix_plain = apply_overrides(get_method("nsbgan-pixel").config, {"sampler_model": "biggan", "sampler.ch": 32}).sampler
    assert (pix_plain.arch, pix_plain.ch, pix_plain.resolved("dim_z"), pix_plain.batch_size,
            pix_plain.accumulate) == ("biggan", 32, 120, 128, 4)  # the script's values, then the key given
    with pytest.raises(ConfigError, match="sampler: attn 64 is not a block resolution"):
        apply_overrides(get_method("nsbgan").config, {"sampler.attn": 64})
    with pytest.raises(ConfigError, match="the sampler works on the 8x8 latent"):
        apply_overrides(get_method("nsbgan").config, {"resolution": 32, "levels": 2, "patch": 8})


def built(name, tmp_path, train_decoders=True):
    info = get_method(name)
    cfg = apply_overrides(info.config, dict(kv.split("=") for kv in PIPELINE[name]))
    method = info.build(cfg)
    data = ShapesDataset(64, "val")
    for index, stage in enumerate(method.stages):
        torch.manual_seed(index)
        stage.init(StageContext(torch.device("cpu"), index, data, data, tmp_path, 1.0))
        if train_decoders or stage.name == "sampler":
            images, labels = data.images(np.arange(stage.batch_size))
            stage.train_step(Batch(images, labels, 0, 0.0, 0.0))
    return method


@pytest.mark.parametrize("name", ["nsbgan", "nsbgan-pixel"])
def test_sampling_path_shapes_ranges_and_seeds(name, tmp_path):
    method = built(name, tmp_path)
    sampler = method.stage("sampler")
    real = sampler.real(ShapesDataset(64, "val").images(np.arange(8))[0])
    assert real.shape == (8, 3, 16, 16) and real.min() >= -1 - 1e-5 and real.max() <= 1 + 1e-5  # normalised
    a = method.sample(6, truncation=1.0, seed=3)
    assert a.shape == (6, 3, 64, 64) and a.dtype == torch.uint8
    assert torch.equal(a, method.sample(6, truncation=1.0, seed=3))  # a seed fixes the samples
    assert not torch.equal(a, method.sample(6, truncation=0.1, seed=3))
    recon = method.reconstruct(ShapesDataset(64, "val").images(np.arange(4))[0])
    assert recon.shape == (4, 3, 64, 64) and recon.dtype == torch.uint8


def test_sampling_refuses_untrained_decoders(tmp_path):
    method = built("nsbgan", tmp_path, train_decoders=False)
    with pytest.raises(MetricError, match="decoder-l1 is not trained yet"):
        method.sample(2)


@pytest.mark.slow  # over ~20 s on two cores: `-m "not slow"` leaves it out
@pytest.mark.parametrize("name", ["nsbgan", "nsbgan-pixel"])
def test_whole_pipeline_through_the_cli(cli, tmp_path, name):
    run_dir = tmp_path / name
    sets = [a for kv in [*PIPELINE[name], "eval_truncations=[1.0,0.6]"] for a in ("--set", kv)]
    r = cli("run", "--method", name, "--budget", "3s", "--run-dir", run_dir, *sets, *SMOKE)
    assert r.code == 0, r.err
    m = read_manifest(run_dir)
    assert m["stages"] == ["decoder-l1", "decoder-l2", "sampler"] and m["status"] == "budget_exhausted"
    # sequential layout: decoders 48 h each of 168 h, the sampler the rest
    shares = {k: v["budget_share_s"] for k, v in m["stage_state"].items()}
    assert shares["decoder-l1"] == pytest.approx(3 * 48 / 168) and shares["sampler"] == pytest.approx(3 * 72 / 168)
    model = m["stage_state"]["sampler"]["model"]
    assert model["latent_resolution"] == 16 and model["latent_scale"] > model["latent_shift"] >= 0
    assert model["latent_normalisation"].startswith("official")  # the official sampler data's fixed map
    evals = [x for x in read_records(run_dir) if x["kind"] == "eval"]
    sampler_evals = [x for x in evals if x["stage"] == "sampler"]
    assert sampler_evals and "fid_standin" in sampler_evals[-1]  # FID of decoded samples
    pipeline = [x for x in evals if x["stage"] == "pipeline"]
    assert [x["truncation"] for x in pipeline] == [1.0, 0.6]
    first, star = pipeline
    assert 0 < first["mse_val"] < 1 and "fid_star_standin" not in first  # FID* at truncation 0.6 (figures.ipynb)
    assert star["fid_star_standin"] >= 0 and star["fid_star_standin_n"] == 64
    assert all(x["fid_standin"] >= 0 and x["fid_standin_n"] == 64 for x in pipeline)
    assert "fid" not in first and "fid_star" not in first  # stand-in numbers never land in FID columns
    assert (run_dir / "samples" / "pipeline-samples.png").is_file()

    r = cli("eval", run_dir, "--truncation", "1.0,0.5", "--samples", "32", "--fid-backbone", "standin")
    assert r.code == 0, r.err
    r = cli("eval", run_dir, "--latents-from", "shapes", "--samples", "32", "--fid-backbone", "standin")
    assert r.code == 0, r.err
    lines = read_records(run_dir)
    assert [x["truncation"] for x in lines if x["stage"] == "truncation"] == [1.0, 0.5]
    lf = [x for x in lines if x["stage"] == "latents-from"]
    assert len(lf) == 1 and lf[0]["fid_standin_n"] == 32 and "shapes" in lf[0]["latents_from"]
    r = cli("eval", run_dir, "--min-confidence", "0.95", "--samples", "8", "--fid-backbone", "standin")
    assert r.code == 2 and "needs Inception weights with class logits" in r.err

    out = tmp_path / "report"
    assert cli("report", run_dir, "--out", out).code == 0
    table = pd.read_csv(out / "tables" / "truncation.csv")
    assert set(zip(table["stage"], table["truncation"])) == {("pipeline", 1.0), ("pipeline", 0.6),
                                                            ("truncation", 1.0), ("truncation", 0.5)}
    runs = pd.read_csv(out / "tables" / "runs.csv")
    assert math.isclose(runs.loc[0, "fid_star_standin"], star["fid_star_standin"])  # truncation 0.6's line
    assert runs.loc[0, "fid_star_truncation"] == 0.6
    assert math.isclose(runs.loc[0, "pipeline/fid_standin"], first["fid_standin"])


@pytest.mark.slow  # over ~20 s on two cores: `-m "not slow"` leaves it out
def test_the_papers_parallel_layout_on_cpu(cli, tmp_path):
    """--layout parallel (on a GPU machine: auto with >= 4 GPUs) starts one job per stage into the
    run directory, the sampler under torchrun with 2 processes, waits, then evaluates the pipeline in
    one more job over all the layout's devices (4 gloo processes here; 4 GPUs on the paper's machine)."""
    run_dir = tmp_path / "layout"
    sets = [a for kv in [*PIPELINE["nsbgan"], "eval_truncations=[1.0]"] for a in ("--set", kv)]
    r = cli("run", "--method", "nsbgan", "--layout", "parallel", "--budget", "2s", "--run-dir", run_dir,
            "--device", "cpu", *sets, *SMOKE)
    assert r.code == 0, r.err
    m = read_manifest(run_dir)
    assert m["layout"]["stages"] == {"decoder-l1": {"processes": 1, "devices": []},
                                     "decoder-l2": {"processes": 1, "devices": []},
                                     "sampler": {"processes": 2, "devices": []}}
    assert m["run"]["devices"] == 4 and m["distributed"]["processes"] == 2  # the sampler's torchrun job
    stages = m["stage_state"]
    assert all(s["status"] == "budget_exhausted" and s["budget_share_s"] == 2.0 for s in stages.values())
    assert stages["sampler"]["cpu_h"] == pytest.approx(stages["sampler"]["budget_s"] * 2 / 3600)  # CPU-hours on a CPU
    assert m["totals"]["cpu_h"] == pytest.approx(sum(s["cpu_h"] for s in stages.values()))
    assert m["totals"]["train_hours"] == pytest.approx(max(s["budget_s"] for s in stages.values()) / 3600)
    assert [x["truncation"] for x in read_records(run_dir) if x["stage"] == "pipeline"] == [1.0, 0.6]  # + FID*'s
    assert {p.name for p in (run_dir / "layout").iterdir()} == {"decoder-l1.log", "decoder-l2.log", "sampler.log",
                                                                 "pipeline.log"}
    assert m["layout"]["evaluation"]["processes"] == 4
    assert "x 4 processes" in (run_dir / "layout" / "pipeline.log").read_text()
    assert m["fid"]["reference_stats"]  # the evaluation job's record, not overwritten by the launcher's


def test_parallel_layout_refuses_what_it_cannot_do(cli, tmp_path):
    r = cli("run", "--method", "dcgan", "--layout", "parallel", "--budget", "1s", "--run-dir", tmp_path / "a", *SMOKE)
    assert r.code == 2 and "needs a method with several stages" in r.err
    r = cli("run", "--method", "nsbgan", "--layout", "parallel", "--stage", "sampler", "--budget", "1s",
            "--run-dir", tmp_path / "b", *SMOKE)
    assert r.code == 2 and "give no --stage" in r.err
    r = cli("run", "--method", "nsbgan", "--layout", "sideways", "--budget", "1s", "--run-dir", tmp_path / "c", *SMOKE)
    assert r.code == 2 and "--layout must be one of auto, sequential, parallel" in r.err
    r = cli("run", "--method", "nsbgan", "--pipeline-eval", "--budget", "1s", "--run-dir", tmp_path / "d", *SMOKE)
    assert r.code == 2 and "--pipeline-eval evaluates a trained run: give --resume RUN" in r.err


def test_the_layouts_final_evaluation_uses_every_device_of_the_job():
    from harness.launch.layout import Slot, command, evaluation_slot

    slots = [Slot("decoder-l1", 1, (0,)), Slot("decoder-l2", 1, (1,)), Slot("sampler", 2, (2, 3))]
    every = evaluation_slot(slots)
    assert (every.processes, every.devices) == (4, (0, 1, 2, 3))
    argv = command(every, "RUN", ["--device", "cuda"])
    assert "--nproc-per-node=4" in argv and "--pipeline-eval" in argv and "--stage" not in argv


def test_the_samplers_evaluation_waits_for_trained_decoders(tmp_path):
    """In the parallel layout the decoders may hold only their step-0 checkpoint when the sampler
    evaluates: no decoded-sample FID then, a note and a grid of latents, and no failure."""
    from harness.method import EvalContext

    method = built("nsbgan", tmp_path, train_decoders=False)
    sampler, grids = method.stage("sampler"), []
    data = ShapesDataset(64, "val")
    ctx = EvalContext(device=torch.device("cpu"), seed=0, data=data, val=data, run_dir=tmp_path, stage="sampler",
                      step=1, final=True, eval_samples=8, scorer=None, save_grid=lambda x, name: grids.append(name),
                      trained=method.stage)
    assert sampler.evaluate(ctx) == {}
    assert grids == ["latents"] and ctx.notes == ["no decoded samples: decoder-l1, decoder-l2 not trained yet"]
