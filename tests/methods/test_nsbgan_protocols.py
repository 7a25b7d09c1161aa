"""Issue 14's NSBGAN protocols: the paper configs' official defaults, protocol=table1, the decoder loss
reduction, the pixel chain's interpolation and native crops, checked against direct computations."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.config import apply_overrides
from harness.data import ImageDataset
from harness.registry import get_method
from methods.latent_pipeline import MseProtocol
from methods.nsbgan import NsbganConfig, WaveletDecoderStage
from harness.images import uint8_to_unit
from methods.nsbgan_pixel import NsbganPixelConfig, PixelDecoderStage, downsample, encode, upsample
from methods.wavelets import wavedec2
from tests.methods.test_nsbgan import TINY, fixed_batch, stage_context
from tests.methods.test_nsbgan_pixel import TINY as PIXEL_TINY


class ArrayDataset(ImageDataset):
    """A few fixed images as a dataset split (so a 50,000-image protocol caps at what there is)."""

    def __init__(self, images: torch.Tensor, split: str = "val"):
        self.x, self.split, self.name, self.id = images, split, "array", "array-test"
        self.index_sha256, self.resolution, self.num_classes = "0" * 64, images.shape[-1], 1

    def __len__(self) -> int:
        return len(self.x)

    def images(self, idx):
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return self.x[idx], torch.zeros(len(idx), dtype=torch.long)


def test_paper_configs_default_to_the_official_protocol():
    ns, px, bg = (get_method(m).config for m in ("nsbgan", "nsbgan-pixel", "biggan"))
    for cfg in (ns, px):
        assert cfg.amp == "fp32" and cfg.sampler.amp == "fp32"  # both papers trained in fp32
        assert cfg.data_options == "crop=native" and cfg.sampler.data_options == "crop=long-edge"
        assert cfg.loss_reduction == "sum" and cfg.protocol == "harness" and cfg.fid_mode == "legacy_tensorflow"
    assert ns.mode == "periodization" and ns.eval_images == 2000  # the harness's own MSE protocol by default
    assert px.antialias is False and px.coarse_targets == "native-crop"
    assert (bg.amp, bg.data_options, bg.fid_mode) == ("fp32", "crop=long-edge", "legacy_tensorflow")
    stages = {s.name: s for s in get_method("nsbgan").build(ns).stages}
    assert stages["sampler"].data_options == "crop=long-edge" and stages["decoder-l1"].data_options == ""
    for octave in ("dcgan", "octave-dcgan", "octave-lsgan", "octave-wgan"):  # the octave code's CelebA
        assert get_method(octave).config.data_options == "celeba:split=all,resize=squash"


def test_protocol_table1_is_zero_mode_unclipped_fp32_on_50k_images(tmp_path):
    cfg = apply_overrides(NsbganConfig(), {"protocol": "table1"})
    assert cfg.mode == "zero" and cfg.eval_images == 50_000
    p = MseProtocol.of(cfg)
    assert (p.name, p.clip, p.autocast) == ("table1", False, False)
    assert MseProtocol.of(NsbganConfig()).clip is True
    idx = p.indices(120_000, 50_000)  # a fixed random sample of a larger split, as the shuffled loader
    assert len(np.unique(idx)) == 50_000 and idx.max() > 50_000 and np.array_equal(idx, p.indices(120_000, 50_000))
    assert np.array_equal(p.indices(50_000, 50_000), np.arange(50_000))  # ImageNet val: all of it

    tiny = {k: v for k, v in TINY.items() if k != "eval_images"}  # table1 fixes it (a conflict otherwise)
    cfg = apply_overrides(NsbganConfig(), {**tiny, "protocol": "table1", "amp": "bf16"})
    torch.manual_seed(0)
    stage = WaveletDecoderStage(1, cfg)
    stage.init(stage_context(tmp_path))
    images = fixed_batch(n=6).images
    val = ArrayDataset(images)
    ctx = type("Ctx", (), dict(val=val, data=ArrayDataset(images, "train"), device=torch.device("cpu"),
                               save_grid=lambda self_, *a: None))()
    metrics = stage.evaluate(ctx)
    assert metrics["mse_protocol"] == "table1" and metrics["mse_clip"] is False and metrics["mse_images"] == 6
    stage.model.eval()
    with torch.no_grad():  # fp32 (no autocast despite amp=bf16), zero mode, unclipped
        x = uint8_to_unit(images)
        recon = stage.model(wavedec2(x, 1, "bior2.2", "zero")[0])
    unclipped = float(((recon.double() - x.double()) ** 2).mean())
    assert metrics["mse_val"] == pytest.approx(unclipped, rel=1e-6)
    assert ((recon < 0) | (recon > 1)).any()  # an untrained decoder leaves [0, 1]: clipping would differ
    assert unclipped > float(((recon.double().clamp(0, 1) - x.double()) ** 2).mean())


def test_harness_protocol_is_labelled_on_every_mse_line(tmp_path):
    stage = WaveletDecoderStage(1, apply_overrides(NsbganConfig(), TINY))
    stage.init(stage_context(tmp_path))
    images = fixed_batch(n=4).images
    ctx = type("Ctx", (), dict(val=ArrayDataset(images), data=ArrayDataset(images, "train"), device=torch.device("cpu"),
                               save_grid=lambda self_, *a: None))()
    metrics = stage.evaluate(ctx)
    assert metrics["mse_protocol"] == "harness" and metrics["mse_clip"] is True


def test_loss_reduction_sum_is_the_official_sum_of_per_packet_mses(tmp_path):
    cfg = apply_overrides(NsbganConfig(), {**TINY, "patch": 8})
    torch.manual_seed(0)
    stage = WaveletDecoderStage(1, cfg)
    stage.init(stage_context(tmp_path))
    x = uint8_to_unit(fixed_batch(n=2).images)
    with torch.no_grad():
        total = stage.losses(x)
        stage.cfg = apply_overrides(cfg, {"loss_reduction": "mean"})
        mean = stage.losses(x)
        # the official loop (not-so-biggan-decoder train.py:744-748): for each 3-channel packet j and
        # each band, loss += F.mse_loss(recon[:, j], real[:, j])
        from methods.nsbgan import band_packets
        coeffs = wavedec2(x, 1, cfg.wavelet, cfg.mode)
        target = band_packets(*coeffs[1], cfg.patch, cfg.wavelet, cfg.mode)
        pred = stage.model.details(coeffs[0])
        n, bands, ch, s, _ = pred.shape
        official = sum(F.mse_loss(pred[:, b].reshape(n, ch // 3, 3, s, s)[:, j],
                                  target[:, b].reshape(n, ch // 3, 3, s, s)[:, j])
                       for b in range(bands) for j in range(ch // 3))
    assert ch // 3 == 16 and total["loss"].item() == pytest.approx(float(official), rel=1e-5)
    assert total["loss"].item() == pytest.approx(16 * mean["loss"].item(), rel=1e-6)
    assert total["loss"].item() == pytest.approx(sum(total[k].item() for k in ("loss_tr", "loss_bl", "loss_br")), rel=1e-6)


def test_pixel_antialias_false_is_the_official_interpolate_and_sum_is_mseloss_sum(tmp_path):
    x = uint8_to_unit(fixed_batch(n=2).images)
    # the official chain: F.interpolate(x, size, mode="bilinear") (align_corners False, no antialias)
    torch.testing.assert_close(downsample(x, 4, antialias=False), F.interpolate(x, 16, mode="bilinear"), rtol=0, atol=0)
    torch.testing.assert_close(encode(x, 2, antialias=False), F.interpolate(x, 16, mode="bilinear"), rtol=0, atol=0)
    assert (encode(x, 2) - encode(x, 2, antialias=False)).abs().max() > 1e-2  # antialiasing is not a no-op here

    cfg = apply_overrides(NsbganPixelConfig(), PIXEL_TINY)
    torch.manual_seed(0)
    stage = PixelDecoderStage(1, cfg)
    stage.init(stage_context(tmp_path))
    with torch.no_grad():
        low = F.interpolate(x, 32, mode="bilinear")
        y = upsample(low)
        official = torch.nn.MSELoss(reduction="sum")(stage.model(y), x - y)  # train_pixel.py:24, 35-43
        assert stage.losses(x)["loss"].item() == pytest.approx(official.item(), rel=1e-5)


def test_pixel_coarse_decoder_learns_on_native_crops(tmp_path):
    import torchvision.transforms as T

    x = uint8_to_unit(fixed_batch(n=2).images)  # (2, 3, 64, 64): the run's crop=native images at R = 64
    cfg = apply_overrides(NsbganPixelConfig(), PIXEL_TINY)
    low, target = PixelDecoderStage(2, cfg)._pair(x)
    torch.testing.assert_close(target, T.CenterCrop(32)(x), rtol=0, atol=0)  # CenterCrop(R/2) of the image
    torch.testing.assert_close(low, F.interpolate(target, 16, mode="bilinear"), rtol=0, atol=0)
    low1, target1 = PixelDecoderStage(1, cfg)._pair(x)
    torch.testing.assert_close(target1, x)
    torch.testing.assert_close(low1, F.interpolate(x, 32, mode="bilinear"))
    old = apply_overrides(cfg, {"coarse_targets": "downsample", "antialias": True})
    low_d, target_d = PixelDecoderStage(2, old)._pair(x)
    torch.testing.assert_close(target_d, downsample(x, 2))
    torch.testing.assert_close(low_d, downsample(x, 4))


def test_each_stage_reports_the_precision_it_trains_in():
    def precisions(overrides: dict, device: str) -> dict:
        cfg = apply_overrides(NsbganConfig(), overrides)
        return {s.name: s.precision(torch.device(device)) for s in get_method("nsbgan").build(cfg).stages}

    assert set(precisions({}, "cpu").values()) == set(precisions({}, "cuda").values()) == {"fp32"}
    assert precisions({"amp": "bf16"}, "cpu") == {"decoder-l1": "bf16", "decoder-l2": "bf16", "sampler": "fp32"}
    assert precisions({"sampler.amp": "bf16"}, "cpu") == {"decoder-l1": "fp32", "decoder-l2": "fp32", "sampler": "bf16"}


@pytest.mark.slow  # over ~20 s on two cores: `-m "not slow"` leaves it out
def test_cli_run_trains_the_sampler_on_its_own_preparation(cli, tmp_path):
    """NSBGAN on a folder of odd-sized images: the decoders train on crop=native, the sampler on
    crop=long-edge; run.json names both dataset ids and the sampler's FID line its own reference."""
    from PIL import Image

    from tests.conftest import SMOKE, read_manifest, read_records
    from tests.methods.test_nsbgan import sets

    rng = np.random.default_rng(9)
    for k in range(24):
        (tmp_path / "imgs" / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (70 + k, 90 - k, 3), dtype=np.uint8)).save(
            tmp_path / "imgs" / f"c{k % 2}" / f"{k}.png")
    run_dir = tmp_path / "run"
    r = cli("run", "--method", "nsbgan", "--budget", "2s", "--data", f"folder:{tmp_path / 'imgs'}", *sets(TINY),
            "--run-dir", run_dir, *SMOKE, "--eval-samples", "16")
    assert r.code == 0, r.err
    m = read_manifest(run_dir)
    main, sampler = m["dataset"]["id"], m["dataset"]["stages"]["sampler"]["id"]
    assert main.startswith("folder-64-native-") and sampler.startswith("folder-64-long-edge-")
    assert m["dataset"]["options"] == {"crop": "native"} and m["precision"] == "fp32"
    evals = {rec["stage"]: rec for rec in read_records(run_dir) if rec["kind"] == "eval"}
    # real data: the official protocol's reference, the whole training split of the stage's preparation
    assert evals["sampler"]["fid_standin_ref"] == f"{sampler}/train all"
    assert evals["pipeline"]["fid_standin_ref"] == f"{main}/train all"
    assert evals["decoder-l1"]["mse_protocol"] == "harness"
