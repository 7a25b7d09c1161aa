"""NSBGAN decoders: config and stage layout, encoder and reconstructions against pywt, one
training step, checkpoint round trip, and CLI smoke runs (one level; stages as separate jobs)."""
import math
from pathlib import Path

import numpy as np
import pytest
import pywt
import torch

from harness.config import apply_overrides
from harness.data.shapes import ShapesDataset
from harness.errors import ConfigError
from harness.method import Batch, StageContext
from harness.registry import get_method
from methods.nsbgan import (NsbganConfig, WaveletDecoder, WaveletDecoderStage, band_packets, encode, nsbgan)
from harness.images import uint8_to_unit
from methods.wavelets import wavedec2
from tests.conftest import SAMPLER_TINY, SMOKE, read_manifest, read_records

TINY = dict(resolution=64, levels=1, width=4, batch_sizes=(4,), eval_images=4,
            **dict(kv.split("=") for kv in SAMPLER_TINY))


def config(**overrides) -> NsbganConfig:
    return apply_overrides(NsbganConfig(), overrides, "nsbgan")


def test_paper_defaults_and_stage_names():
    info = get_method("nsbgan")
    cfg = info.config
    cfg.validate()
    assert (cfg.resolution, cfg.levels, cfg.wavelet, cfg.patch, cfg.width, cfg.lr) == (256, 2, "bior2.2", 32, 512, 1e-4)
    assert info.stages == ("decoder-l1", "decoder-l2", "sampler")
    # Table 3's batch 128 / 288k iterations belong to the 64 -> 128 decoder (12 heads) = decoder-l2
    stages = {s.name: s for s in info.build(cfg).stages}
    assert (stages["decoder-l2"].batch_size, stages["decoder-l2"].max_steps) == (128, 288_000)
    assert (stages["decoder-l1"].batch_size, stages["decoder-l1"].max_steps) == (64, 232_000)
    one = config(levels=1, resolution=128)  # a 64x64 latent again
    assert info.stage_names(one) == ("decoder-l1", "sampler")
    assert [s.name for s in info.build(one).stages] == ["decoder-l1", "sampler"]


@pytest.mark.parametrize("overrides,message", [
    (dict(resolution=64, patch=32), "decoder-l2 takes a 16x16 TL_2"),
    (dict(patch=12), "multiple of 8"),
    (dict(batch_sizes="[64]"), "batch_sizes needs one positive value per level"),
    (dict(wavelet="nope"), "not a discrete pywt wavelet"),
    (dict(resolution=100), "power of two"),
    (dict(mode="symmetric"), "expected one of periodization|zero"),
])
def test_inconsistent_sizes_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config(**overrides)


def test_encoder_is_pywt_wavedec2_approximation():
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    ref = pywt.wavedec2(x.numpy(), "bior2.2", mode="periodization", level=2, axes=(-2, -1))[0]
    torch.testing.assert_close(encode(x, 2), torch.from_numpy(ref), rtol=0, atol=1e-12)


@pytest.mark.parametrize("resolution,channels", [(64, 3), (128, 12), (256, 48)])
def test_decoder_shapes(resolution, channels):
    cfg = config(resolution=resolution, levels=1, width=4)
    decoder = WaveletDecoder(resolution // 2, cfg)
    tl = torch.rand(2, 3, resolution // 2, resolution // 2)
    assert decoder.unet.body.inc[0].in_channels == channels
    assert decoder.details(tl).shape == (2, 3, channels, 32, 32)
    assert decoder(tl).shape == (2, 3, resolution, resolution)


@pytest.mark.parametrize("mode", ["periodization", "zero"])
def test_exact_details_rebuild_the_finer_tl(mode):
    """Feeding the decoder's IWT the ground-truth packets (in the loss's layout) rebuilds
    TL_{l-1}: targets and reconstruction agree on band order and packet layout."""
    cfg = config(resolution=128, levels=2, patch=16, width=4, mode=mode)
    x = torch.rand(2, 3, 128, 128, dtype=torch.float64)
    tl2, details2, details1 = wavedec2(x, 2, mode=mode)
    decoder = WaveletDecoder(32, cfg).double()
    decoder.details = lambda tl: band_packets(*details2, 16, "bior2.2", mode)
    tl1 = wavedec2(x, 1, mode=mode)[0]
    out = decoder(tl2)
    if mode == "periodization":
        torch.testing.assert_close(out, tl1, rtol=0, atol=1e-10)
    else:  # exact inside; zero mode loses the borders of every packet split too
        assert (out - tl1)[..., 8:-8, 8:-8].abs().max() < 1e-10


def stage_context(tmp_path: Path, resolution: int = 64) -> StageContext:
    return StageContext(torch.device("cpu"), 0, ShapesDataset(resolution, "train"), ShapesDataset(resolution, "val"),
                        tmp_path, 1.0)


def fixed_batch(resolution: int = 64, n: int = 4) -> Batch:
    images, labels = ShapesDataset(resolution, "train").images(np.arange(n))
    return Batch(images, labels, 0, 0.0, 0.0)


def test_one_step_lowers_the_loss_and_checkpoints_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = config(**TINY)
    stage = WaveletDecoderStage(1, cfg)
    stage.init(stage_context(tmp_path))
    batch = fixed_batch()
    x = uint8_to_unit(batch.images)

    def loss() -> float:
        with torch.no_grad():
            return stage.losses(x)["loss"].item()

    before = loss()
    out = stage.train_step(batch)
    assert set(out) == {"loss", "loss_tr", "loss_bl", "loss_br"}
    assert math.isclose(out["loss"], before, rel_tol=1e-5)  # the step's loss is the loss before it
    assert loss() < before

    other = WaveletDecoderStage(1, cfg)
    other.init(stage_context(tmp_path))
    other.load_state_dict(stage.state_dict())
    stage.model.eval(), other.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(other.decode(x[:, :, ::2, ::2]), stage.decode(x[:, :, ::2, ::2]))


def test_reconstruction_baselines_against_pywt(tmp_path):
    cfg = config(resolution=64, levels=2, patch=8, width=4, batch_sizes="[4,4]")
    stage = WaveletDecoderStage(2, cfg)
    stage.init(stage_context(tmp_path))
    images = fixed_batch(n=2).images
    with torch.no_grad():
        rec = stage.reconstructions(images, baselines=True)
    x = uint8_to_unit(images)
    coeffs = pywt.wavedec2(x.double().numpy(), "bior2.2", mode="periodization", level=2, axes=(-2, -1))
    coeffs[1] = tuple(np.zeros_like(c) for c in coeffs[1])  # no level-2 details, exact level 1
    lowpass = torch.from_numpy(pywt.waverec2(coeffs, "bior2.2", mode="periodization", axes=(-2, -1)))
    torch.testing.assert_close(rec["lowpass"][1].double(), lowpass, rtol=0, atol=1e-5)
    torch.testing.assert_close(rec["floor"][1], x, rtol=0, atol=1e-5)
    assert rec["recon"][1].shape == x.shape


def test_zero_mode_reports_its_reconstruction_floor(tmp_path):
    stage = WaveletDecoderStage(1, config(**TINY, mode="zero"))
    stage.init(stage_context(tmp_path))
    with torch.no_grad():
        target, floor = stage.reconstructions(fixed_batch(n=2).images, baselines=True)["floor"]
    mse = float(((floor.clamp(0, 1) - target) ** 2).mean())
    assert 1e-6 < mse < 1e-2  # the border rows and columns zero padding cannot rebuild


def test_cli_one_level_run(cli, tmp_path):
    run_dir = tmp_path / "nsbgan"
    r = cli("run", "--method", "nsbgan", "--budget", "2s", *sets(TINY), "--run-dir", run_dir, *SMOKE)
    assert r.code == 0, r.err
    m = read_manifest(run_dir)
    assert m["status"] == "budget_exhausted" and m["stages"] == ["decoder-l1", "sampler"]
    assert m["config"]["levels"] == 1 and m["stage_state"]["decoder-l1"]["steps"] >= 1
    evals = {}
    for rec in read_records(run_dir):
        if rec["kind"] == "eval":
            evals.setdefault(rec["stage"], rec)  # the pipeline's first line: truncation 1.0, with the MSE
    assert set(evals) == {"decoder-l1", "sampler", "pipeline"}
    for rec in (evals["decoder-l1"], evals["pipeline"]):
        assert 0 < rec["mse_val"] < 1 and 0 < rec["mse_train"] < 1 and rec["mse_images"] == 4
        assert rec["mse_protocol"] == "harness" and rec["mse_clip"] is True  # labelled: the harness's own
    for rec in (evals["sampler"], evals["pipeline"]):  # beside every FID: mode, reference set, counts
        assert rec["fid_standin_mode"] == "legacy_tensorflow" and rec["fid_standin_n"] == 64
        assert rec["fid_standin_ref"] == f"{m['dataset']['id']}/train stratified n=64 seed=0"
        assert rec["fid_standin_ref_selection"] == "stratified n=64 seed=0"
    assert m["run"]["fid_reference"] == "stratified" and m["fid"]["reference"].startswith("stratified")
    assert m["precision"] == "fp32" and m["fid"]["mode"] == "legacy_tensorflow"
    assert evals["decoder-l1"]["mse_floor_val"] < 1e-10 and 0 < evals["decoder-l1"]["mse_lowpass_val"] < 1
    # with one level, the chained pipeline is the level-1 decoder on exact TL_1
    assert math.isclose(evals["pipeline"]["mse_val"], evals["decoder-l1"]["mse_val"], rel_tol=1e-6)
    assert (run_dir / "checkpoints" / "decoder-l1-best.pt").is_file()
    grids = {p.name.split("-0")[0] for p in (run_dir / "samples").glob("*.png")}
    assert grids == {"decoder-l1", "sampler", "pipeline-recon.png", "pipeline-samples.png", "real.png"}


@pytest.mark.slow  # over ~20 s on two cores: `-m "not slow"` leaves it out
def test_cli_stages_as_separate_jobs_then_pipeline(cli, tmp_path):
    """The paper trains the decoders independently, in parallel: one job per stage into one run
    directory, then a plain run evaluates the chained pipeline without retraining."""
    run_dir = tmp_path / "nsbgan2"
    common = ("run", "--method", "nsbgan", "--budget", "1s", *sets(dict(TINY, levels=2, patch=8, batch_sizes=(4, 4))),
              "--run-dir", run_dir, *SMOKE)
    r = cli(*common, "--stage", "decoder-l1")
    assert r.code == 0, r.err
    m = read_manifest(run_dir)
    assert m["stages"] == ["decoder-l1", "decoder-l2", "sampler"] and set(m["stage_state"]) == {"decoder-l1"}
    assert not any(rec["stage"] == "pipeline" for rec in read_records(run_dir))
    assert cli(*common, "--stage", "decoder-l2").code == 0
    assert cli(*common, "--stage", "sampler").code == 0
    steps = {k: v["steps"] for k, v in read_manifest(run_dir)["stage_state"].items()}
    assert cli(*common).code == 0
    after = read_manifest(run_dir)["stage_state"]
    assert {k: v["steps"] for k, v in after.items()} == steps  # nothing retrained
    pipeline = [rec for rec in read_records(run_dir) if rec["stage"] == "pipeline"]
    assert [rec["truncation"] for rec in pipeline] == [1.0, 0.6, 0.4, 0.1, 0.01] and 0 < pipeline[0]["mse_val"] < 1
    assert all(rec["stage_steps"] == steps for rec in pipeline)


def test_cli_stage_missing_for_this_config(cli, tmp_path):
    r = cli("run", "--method", "nsbgan", "--budget", "1s", *sets(TINY), "--stage", "decoder-l2",
            "--run-dir", tmp_path / "x", *SMOKE)
    assert r.code == 2 and "has stages decoder-l1, sampler, not 'decoder-l2'" in r.err


def sets(overrides: dict) -> list[str]:
    out = []
    for key, value in overrides.items():
        text = "[" + ",".join(map(str, value)) + "]" if isinstance(value, tuple) else str(value)
        out += ["--set", f"{key}={text}"]
    return out


def test_factory_builds_independent_stages():
    method = nsbgan(config(resolution=64, levels=2, patch=8, width=4, batch_sizes="[4,4]"))
    assert [s.name for s in method.stages] == ["decoder-l1", "decoder-l2", "sampler"]
    assert method.sample is not None and method.evaluate is not None and method.reconstruct is not None


@pytest.mark.gpu
@pytest.mark.parametrize("level", [1, 2])
def test_cuda_steps_with_bf16_autocast_and_channels_last(tmp_path, level):
    cfg = config(resolution=128, levels=2, patch=16, width=8, batch_sizes="[4,4]")
    stage = WaveletDecoderStage(level, cfg)
    stage.init(StageContext(torch.device("cuda"), 0, ShapesDataset(128, "train"), ShapesDataset(128, "val"),
                            tmp_path, 1.0))
    assert stage.amp
    cpu = fixed_batch(128)
    batch = Batch(cpu.images.cuda(), cpu.labels.cuda(), 0, 0.0, 0.0)
    first = stage.train_step(batch)["loss"]
    for _ in range(5):
        last = stage.train_step(batch)["loss"]
    assert math.isfinite(last) and last < first
    with torch.no_grad():
        rec = stage.reconstructions(batch.images, baselines=True)
    # the wavelets stay exact in float32 under autocast on the GPU
    torch.testing.assert_close(rec["floor"][1].cpu(), uint8_to_unit(cpu.images), rtol=0, atol=1e-5)
    assert rec["recon"][1].dtype == torch.float32


def test_decoders_need_no_inception_weights(cli, tmp_path, monkeypatch):
    """The decoders compute no FID: a `--stage decoder-lN` job must not ask for Inception weights."""
    import harness.metrics.inception as inc

    monkeypatch.setattr(inc, "CLEANFID_CACHE", tmp_path / "absent.pt")
    monkeypatch.setattr(inc, "hub_checkpoints", lambda: tmp_path)  # no pytorch-fid / torch-fidelity weights
    monkeypatch.setattr(inc, "fid_helper_path", lambda: None)
    r = cli("run", "--method", "nsbgan", "--budget", "1s", "--set", "resolution=32", "--set", "levels=1",
            "--set", "width=4", "--set", "batch_sizes=[8]", "--set", "patch=8", "--set", "eval_images=8",
            "--stage", "decoder-l1", "--run-dir", tmp_path / "r", "--no-progress", "--no-energy")
    assert r.code == 0, r.err
    m = read_manifest(tmp_path / "r")
    assert m["run"]["eval_samples"] > 0 and "disabled" in m["fid"]  # image metrics exist, but not for this stage
