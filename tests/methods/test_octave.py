"""Octave / soft-octave layers, beta schedules, octave configs and the octave GAN stage."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.dcgan import (DCGAN_CONFIG, LSGAN_CONFIG, WGAN_CONFIG, forward_macs, make_discriminator, make_generator,
                             network_cost)
from harness.config import apply_overrides, to_jsonable
from harness.data import open_dataset
from harness.data.shapes import ShapesDataset
from harness.errors import ConfigError
from harness.launch.prepare import prepare_run
from harness.launch.request import RunRequest
from harness.method import Batch, StageContext
from harness.registry import get_method
from methods.octave import (COMBI_BETA_H, COMBI_BETA_L, RAMP_BETA_H, RAMP_BETA_L, OctaveBlock, OctaveBlocks,
                            OctaveGanStage, OctConv2d, SoftOctConv2d, band_channels, octave_blocks, octave_config,
                            official_epoch_rule, piecewise_linear, schedule_curve, schedule_progress,
                            schedule_run_fields, soft_layers, spectrum_hf_gap)

TINY = dict(resolution=32, width=2, batch_size=8)


def _pair(n, c, size, alpha, dtype=torch.float64):
    high, low = band_channels(c, alpha)
    return torch.randn(n, high, size, size, dtype=dtype), torch.randn(n, low, size // 2, size // 2, dtype=dtype)


def _pool2(x):  # 2x2 mean, written independently of F.avg_pool2d
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))


def _up2(x):  # nearest 2x, written independently of F.interpolate
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


# --- layers ----------------------------------------------------------------------------------------
def test_octconv_with_alpha_zero_is_a_plain_conv2d():
    oct_ = OctConv2d(5, 7, 3, 0.0, 0.0).double()
    conv = nn.Conv2d(5, 7, 3, 1, 1, bias=False).double()
    conv.weight.data.copy_(oct_.h2h.weight)
    assert oct_.h2l is None and oct_.l2h is None and oct_.l2l is None
    x = torch.randn(2, 5, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(oct_(x), conv(x), rtol=0, atol=0)


def test_octconv_matches_the_four_path_formula():
    """y_H = W_HH * x_H + up(W_LH * x_L), y_L = W_HL * pool(x_H) + W_LL * x_L (Chen et al. Eq. 2)."""
    layer = OctConv2d(8, 6, 3, 0.5, 0.5).double()
    h, l = _pair(2, 8, 8, 0.5)
    y_h, y_l = layer((h, l))

    def conv(x, m):
        return F.conv2d(x, m.weight, padding=1)

    torch.testing.assert_close(y_h, conv(h, layer.h2h) + _up2(conv(l, layer.l2h)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y_l, conv(_pool2(h), layer.h2l) + conv(l, layer.l2l), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.5, 0.99])
def test_octconv_shapes(alpha):
    first = OctConv2d(3, 64, 3, 0.0, alpha)
    mid = OctConv2d(64, 32, 3, alpha, alpha)
    last = OctConv2d(32, 3, 3, alpha, 0.0)
    h, l = first(torch.randn(2, 3, 16, 16))
    assert h.shape == (2, 64 - int(alpha * 64), 16, 16) and l.shape == (2, int(alpha * 64), 8, 8)
    h, l = mid((h, l))
    assert h.shape == (2, 32 - int(alpha * 32), 16, 16) and l.shape == (2, int(alpha * 32), 8, 8)
    assert h.shape[1] >= 1  # alpha 0.99 keeps one high channel
    assert last((h, l)).shape == (2, 3, 16, 16)


def test_all_four_paths_receive_gradient():
    layer = OctConv2d(8, 8, 3, 0.5, 0.5)
    h, l = (t.float().requires_grad_() for t in _pair(2, 8, 8, 0.5))
    y_h, y_l = layer((h, l))
    (y_h.square().sum() + y_l.square().sum()).backward()
    for name in ("h2h", "h2l", "l2h", "l2l"):
        grad = getattr(layer, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert h.grad.abs().sum() > 0 and l.grad.abs().sum() > 0


def test_channel_splits_never_leave_an_empty_band():
    assert band_channels(32, 0.99) == (1, 31)
    assert band_channels(2, 0.99) == (1, 1)
    assert band_channels(512, 0.5) == (256, 256)
    assert band_channels(7, 0.0) == (7, 0)
    with pytest.raises(ValueError, match="at least one channel"):
        band_channels(1, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        band_channels(8, 1.0)
    with pytest.raises(ConfigError, match="width=1"):
        apply_overrides(octave_config(DCGAN_CONFIG), {"variant": "oct", "width": 1, "resolution": 128})


def test_soft_octconv_with_unit_betas_equals_octconv():
    plain = OctConv2d(8, 6, 3, 0.5, 0.5).double()
    soft = SoftOctConv2d(8, 6, 3, 0.5, 0.5).double()
    soft.load_state_dict({**plain.state_dict(), "beta_h": torch.tensor(1.0), "beta_l": torch.tensor(1.0)})
    x = _pair(2, 8, 8, 0.5)
    for a, b in zip(soft(x), plain(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_soft_betas_act_like_the_official_block_output_weighting():
    """Official dcgan.py multiplies every hidden block's (h, l) output, after BN and activation, by
    (beta_H, beta_L); here the next conv reads its input weighted. Both must give the same G and D."""
    torch.manual_seed(0)
    cfg = apply_overrides(octave_config(DCGAN_CONFIG), {**TINY, "variant": "ramp"})
    G_soft, D_soft = make_generator(cfg, OctaveBlocks(0.5, soft=True)).double(), \
        make_discriminator(cfg, OctaveBlocks(0.5, soft=True)).double()
    G_ref, D_ref = make_generator(cfg, OctaveBlocks(0.5)).double(), make_discriminator(cfg, OctaveBlocks(0.5)).double()
    G_ref.load_state_dict(G_soft.state_dict(), strict=False)
    D_ref.load_state_dict(D_soft.state_dict(), strict=False)
    beta_h, beta_l = 0.3, 0.9
    for layer in soft_layers(G_soft, D_soft):
        layer.beta_h.fill_(beta_h)
        layer.beta_l.fill_(beta_l)
    for net in (G_ref, D_ref):
        for block in list(net.body)[:-1]:
            block.register_forward_hook(lambda m, args, out: (out[0] * beta_h, out[1] * beta_l))
    z = torch.randn(4, cfg.z_dim, dtype=torch.float64)
    torch.testing.assert_close(G_soft(z), G_ref(z), rtol=1e-12, atol=1e-12)
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(D_soft(x), D_ref(x), rtol=1e-12, atol=1e-12)


def test_betas_change_the_output_despite_batchnorm():
    torch.manual_seed(0)
    cfg = apply_overrides(octave_config(DCGAN_CONFIG), {**TINY, "variant": "combi"})
    G = make_generator(cfg, octave_blocks(cfg)).double()
    z = torch.randn(4, cfg.z_dim, dtype=torch.float64)
    a = G(z)
    for layer in soft_layers(G):
        layer.beta_h.fill_(0.2)
        layer.beta_l.fill_(0.8)
    assert (G(z) - a).abs().max() > 1e-3


def test_batchnorm_statistics_are_kept_per_band():
    block = OctaveBlock(OctConv2d(8, 12, 3, 0.5, 0.5), nn.Upsample(scale_factor=2), nn.ReLU()).double()
    assert block.bn_h.num_features == 6 and block.bn_l.num_features == 6
    x = _pair(4, 8, 8, 0.5)
    y_h, y_l = block.conv((_up2(x[0]), _up2(x[1])))  # what the BNs see
    block(x)
    m = block.bn_h.momentum
    torch.testing.assert_close(block.bn_h.running_mean, m * y_h.mean(dim=(0, 2, 3)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(block.bn_l.running_mean, m * y_l.mean(dim=(0, 2, 3)), rtol=1e-10, atol=1e-12)
    var_h = y_h.transpose(0, 1).reshape(6, -1).var(dim=1)  # unbiased, as BatchNorm's running_var
    torch.testing.assert_close(block.bn_h.running_var, (1 - m) + m * var_h, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(block.bn_h.running_mean, block.bn_l.running_mean)


def test_macs_match_a_direct_count():
    """FlopCounterMode / 2 equals the hand count: k^2 * Cin * Cout * output pixels per path."""
    layer = OctConv2d(16, 8, 3, 0.5, 0.5)
    h, l = _pair(1, 16, 8, 0.5, dtype=torch.float32)
    hw, hw4 = 8 * 8, 4 * 4
    expected = 9 * (8 * 4 * hw + 8 * 4 * hw4 + 8 * 4 * hw4 + 8 * 4 * hw4)  # hh, hl, lh, ll
    assert forward_macs(layer, (h, l)) == expected


# --- schedules -------------------------------------------------------------------------------------
def test_piecewise_linear_at_breakpoints_and_in_between():
    pts = ((0.0, 0.2), (0.5, 0.7), (1.0, 0.7))
    assert piecewise_linear(pts, 0.0) == pytest.approx(0.2)
    assert piecewise_linear(pts, 0.25) == pytest.approx(0.45)
    assert piecewise_linear(pts, 0.5) == pytest.approx(0.7)
    assert piecewise_linear(pts, 0.8) == pytest.approx(0.7)
    assert piecewise_linear(pts, 1.0) == pytest.approx(0.7)
    assert piecewise_linear(pts, -1.0) == pytest.approx(0.2) and piecewise_linear(pts, 2.0) == pytest.approx(0.7)
    assert piecewise_linear(((0.0, 1.0), (1.0, 0.0)), 0.1) == pytest.approx(0.9)
    step = ((0.0, 0.2), (0.5, 0.2), (0.5, 0.9), (1.0, 0.9))
    assert piecewise_linear(step, 0.49) == pytest.approx(0.2) and piecewise_linear(step, 0.5) == pytest.approx(0.9)
    assert piecewise_linear(((0.3, 0.6),), 0.9) == pytest.approx(0.6)


def test_default_schedules_keep_their_reading():
    assert piecewise_linear(RAMP_BETA_H, 0.0) + piecewise_linear(RAMP_BETA_L, 0.0) == pytest.approx(1.0)
    for x in np.linspace(0, 1, 11):  # ramp: coupled, low first, capped at 0.7
        assert piecewise_linear(RAMP_BETA_H, x) + piecewise_linear(RAMP_BETA_L, x) == pytest.approx(1.0)
        assert 0.2 <= piecewise_linear(RAMP_BETA_H, x) <= 0.7
        assert min(piecewise_linear(COMBI_BETA_H, x), piecewise_linear(COMBI_BETA_L, x)) >= 0.5  # combi: never < half
    ratio = [piecewise_linear(COMBI_BETA_H, x) / piecewise_linear(COMBI_BETA_L, x) for x in (0, 0.5, 1)]
    assert ratio == pytest.approx([0.5, 1.0, 2.0])


def _official_weighting(epoch, nb_epochs):
    """beta_H of the official code, transcribed: train.py line 157 and dcgan.py `weighting`."""
    freq_weight = (epoch + 1) / nb_epochs
    if freq_weight > 0.5:
        freq_weight = 0.7
    else:
        freq_weight += 0.2
    return freq_weight


def test_official_epoch_rule_follows_the_official_code_per_epoch():
    epochs, per_epoch = 50, 7
    for e in range(epochs):
        expected = _official_weighting(e, epochs)
        for pos in range(1, per_epoch + 1):  # epochs done after drawing each batch of epoch e
            x = (e + pos / per_epoch) / epochs
            beta_h, beta_l = official_epoch_rule(x, epochs)
            assert beta_h == pytest.approx(expected) and beta_l == pytest.approx(1 - expected), (e, pos)
    # chosen epochs (0-based) of 50, by hand: 0.2 + (e + 1) / 50, capped at 0.7 from epoch 24 on
    for e, beta_h in ((0, 0.22), (4, 0.30), (23, 0.68), (24, 0.70), (25, 0.70), (49, 0.70)):
        assert official_epoch_rule((e + 0.5) / 50, 50) == pytest.approx((beta_h, 1 - beta_h)), e
    assert official_epoch_rule(0.0, epochs)[0] == pytest.approx(0.22)
    assert official_epoch_rule(0.1, 10) == pytest.approx((0.3, 0.7))  # E = 10 (train.py's default)


def test_schedule_progress_units():
    cfg = octave_config(DCGAN_CONFIG, epochs=10)
    for unit, expected in (("epoch", 0.25), ("budget", 0.6), ("auto", 0.6)):
        assert schedule_progress(dataclasses.replace(cfg, schedule_unit=unit), 2.5, 0.6) == pytest.approx(expected)
    assert schedule_progress(dataclasses.replace(cfg, schedule_unit="auto"), 8.0, 0.3) == pytest.approx(0.8)
    assert schedule_progress(dataclasses.replace(cfg, schedule_unit="epoch"), 12.0, 0.3) == 1.0


def test_betas_of_each_variant_and_schedule():
    base = octave_config(DCGAN_CONFIG)
    assert dataclasses.replace(base, variant="oct").betas_at(0.3) == (1.0, 1.0)
    ramp = dataclasses.replace(base, variant="ramp")
    assert ramp.betas_at(0.25) == pytest.approx((0.45, 0.55))
    assert base.variant == "official" and base.epochs == 50
    assert base.betas_at(0.1) == pytest.approx((0.3, 0.7))  # default: the official rule, epoch 4 of 50: 0.2 + 5 / 50
    combi = dataclasses.replace(base, variant="combi")
    assert combi.betas_at(0.75) == pytest.approx((1.0, 0.75))
    custom = dataclasses.replace(combi, beta_h=((0.0, 0.1), (1.0, 0.3)))
    assert custom.betas_at(0.5) == pytest.approx((0.2, 1.0))  # beta_l keeps the combi default


def test_schedule_provenance_of_each_variant():
    base = octave_config(DCGAN_CONFIG)
    expected = {"base": None, "oct": None, "low": None, "ramp": "reconstructed", "combi": "reconstructed",
                "official": "official-code"}
    for variant, provenance in expected.items():
        assert dataclasses.replace(base, variant=variant).schedule_provenance == provenance, variant
    for key in ("beta_h", "beta_l"):
        user = apply_overrides(base, {"variant": "combi", key: "[[0,0.5],[1,0.9]]"})
        curve = schedule_curve(user)
        assert user.schedule_provenance == curve["provenance"] == "user" and curve["user_set"] == [key]
        assert curve["source"].startswith(f"user: --set {key}; otherwise reconstructed")


def test_the_official_schedule_curve_is_the_epoch_rule_as_a_staircase():
    cfg = octave_config(DCGAN_CONFIG, epochs=50)
    fields = schedule_run_fields(cfg)
    curve = fields["beta_schedule"]
    assert fields["schedule_provenance"] == curve["provenance"] == "official-code" and curve["name"] == "official"
    x, h, l = np.array(curve["progress"]), np.array(curve["beta_h"]), np.array(curve["beta_l"])
    assert len(x) == len(h) == len(l) == 100 and x[0] == 0.0 and x[-1] == 1.0 and np.all(np.diff(x) >= 0)
    for e in range(50):  # epoch e spans [e / 50, (e + 1) / 50] at the official code's value for epoch e
        assert x[2 * e] == pytest.approx(e / 50) and x[2 * e + 1] == pytest.approx((e + 1) / 50)
        assert h[2 * e] == h[2 * e + 1] == pytest.approx(_official_weighting(e, 50))
    np.testing.assert_allclose(h + l, 1.0, rtol=0, atol=1e-12)
    assert len(set(np.round(h, 9))) == 25  # 0.22 .. 0.70: 25 distinct steps, visible in the samples


def test_reconstructed_schedule_curves_sample_the_points_densely():
    for variant, points in (("ramp", (RAMP_BETA_H, RAMP_BETA_L)), ("combi", (COMBI_BETA_H, COMBI_BETA_L))):
        curve = schedule_curve(octave_config(DCGAN_CONFIG, variant=variant))
        assert curve["provenance"] == "reconstructed" and curve["name"] == variant and "user_set" not in curve
        x = np.array(curve["progress"])
        assert x[0] == 0.0 and x[-1] == 1.0 and np.all(np.diff(x) > 0) and np.diff(x).max() <= 0.005 + 1e-12
        for key, pts in zip(("beta_h", "beta_l"), points):  # numpy's interpolation through the same points
            np.testing.assert_allclose(curve[key], np.interp(x, *zip(*pts)), rtol=0, atol=1e-12)
    assert schedule_run_fields(octave_config(DCGAN_CONFIG, variant="oct")) == {}


# --- configs ---------------------------------------------------------------------------------------
def test_beta_points_from_the_command_line_and_run_json():
    cfg = apply_overrides(octave_config(DCGAN_CONFIG), {"variant": "ramp", "beta_h": "[[0,0.2],[0.7,0.7],[1,0.7]]",
                                                         "spectrum_epochs": "[1, 25, 50]"})
    assert cfg.beta_h == ((0.0, 0.2), (0.7, 0.7), (1.0, 0.7)) and cfg.spectrum_epochs == (1, 25, 50)
    assert apply_overrides(octave_config(DCGAN_CONFIG), to_jsonable(cfg)) == cfg


def test_method_run_fields_may_not_replace_the_harness_fields(tmp_path, monkeypatch):
    import methods.octave

    monkeypatch.setattr(methods.octave, "schedule_run_fields", lambda cfg: {"status": "completed"})
    request = RunRequest(method="octave-dcgan", budget="1m", overrides=tuple(f"{k}={v}" for k, v in TINY.items()),
                         run_dir=str(tmp_path / "run"), eval_samples=0, energy=False, progress=False, device="cpu")
    with pytest.raises(RuntimeError, match="run.json fields the harness writes: status"):
        prepare_run(request)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, match", [
    ({"beta_h": "[[0.5,0.2],[0.1,0.7]]", "variant": "ramp"}, "non-decreasing"),
    ({"beta_l": "[[0,-0.2]]", "variant": "combi"}, ">= 0"),
    ({"beta_h": "[]", "variant": "combi"}, "at least one"),
    ({"beta_h": "[[0,0.5]]", "variant": "oct"}, "has no betas"),
    ({"beta_h": "[[0,0.5]]", "variant": "official"}, "official code's epoch rule"),
    ({"beta_l": "[[0,0.5]]"}, "variant=ramp or variant=combi"),  # the default variant is official
    ({"variant": "low", "alpha": 1.0}, "alpha 1"),
    ({"variant": "oct", "alpha": 0.0}, "alpha 0 is variant=base"),
    ({"variant": "base", "alpha": 0.5}, "variant=base"),
    ({"variant": "wavelet"}, "expected one of"),
    ({"spectrum_samples": 1}, "spectrum_samples"),
])
def test_bad_octave_settings_are_one_line_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(octave_config(DCGAN_CONFIG), overrides)


def test_registered_configs_are_the_baselines_plus_the_official_soft_octave():
    for loss, base in (("dcgan", DCGAN_CONFIG), ("lsgan", LSGAN_CONFIG), ("wgan", WGAN_CONFIG)):
        info = get_method(f"octave-{loss}")
        assert info.config.variant == "official" and info.config.band_alpha == 0.5
        assert info.config.eval_betas == "end" and info.config.schedule_provenance == "official-code"
        assert all(getattr(info.config, f.name) == getattr(base, f.name) for f in dataclasses.fields(base))
        assert info.eval_every == "1epoch" and info.eval_samples == 10_000 and info.config.resolution == 128
        assert info.config.epochs == 50


@pytest.mark.parametrize("loss", ["dcgan", "lsgan", "wgan"])
def test_variant_base_builds_exactly_the_baseline(loss):
    octave, vanilla = get_method(f"octave-{loss}"), get_method(loss)
    cfg_o = apply_overrides(octave.config, {**TINY, "variant": "base"})
    cfg_v = apply_overrides(vanilla.config, TINY)
    data = ShapesDataset(cfg_o.resolution, "val")
    torch.manual_seed(3)
    stage_o = octave.build(cfg_o).stages[0]
    stage_o.init(StageContext(torch.device("cpu"), 3, data, data, Path("."), 1.0))
    torch.manual_seed(3)
    stage_v = vanilla.build(cfg_v).stages[0]
    stage_v.init(StageContext(torch.device("cpu"), 3, data, data, Path("."), 1.0))
    for a, b in ((stage_o.G, stage_v.G), (stage_o.D, stage_v.D)):
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    z = torch.randn(4, cfg_o.z_dim)
    torch.testing.assert_close(stage_o.G(z), stage_v.G(z), rtol=0, atol=0)


def test_octave_variants_keep_parameters_and_cut_multiply_adds():
    costs = {}
    for variant in ("base", "oct", "low", "combi", "official"):
        cfg = apply_overrides(octave_config(DCGAN_CONFIG), {"variant": variant, "resolution": 64, "width": 4})
        G, D = make_generator(cfg, octave_blocks(cfg)), make_discriminator(cfg, octave_blocks(cfg))
        costs[variant] = network_cost(cfg, G, D)
    # the four paths partition each conv's weight, so the octave nets have the vanilla parameter count
    for k in ("g_params", "d_params"):
        assert costs["oct"][k] == costs["low"][k] == costs["base"][k]
    assert costs["combi"] == costs["official"] == costs["oct"]
    for k in ("g_macs", "d_macs"):
        assert costs["low"][k] < costs["oct"][k] < costs["base"][k]


# --- the stage -------------------------------------------------------------------------------------
def _stage(tmp_path, device="cpu", **overrides):
    cfg = apply_overrides(octave_config(DCGAN_CONFIG), {**TINY, "spectrum_samples": 16, **overrides})
    stage = OctaveGanStage(cfg, octave_blocks(cfg))
    data = open_dataset("shapes", cfg.resolution)
    stage.init(StageContext(torch.device(device), 0, data.train, data.val, tmp_path, 10.0))
    return stage, data


def _batch(data, epoch, progress, n=8, device="cpu"):
    images = data.train.images(np.arange(n))[0].to(device)
    return Batch(images, torch.zeros(n, dtype=torch.long, device=device), 0, epoch, progress)


def test_stage_sets_betas_each_step_and_a_reloaded_stage_samples_the_same(tmp_path):
    torch.manual_seed(0)
    stage, data = _stage(tmp_path, variant="ramp", schedule_unit="epoch", epochs=10)
    out = stage.train_step(_batch(data, epoch=2.5, progress=0.9))
    assert out["beta_h"] == pytest.approx(0.45) and out["beta_l"] == pytest.approx(0.55)
    layers = soft_layers(stage.G, stage.D)
    assert len(layers) == 2 + 3  # every conv but the first of G (3 convs at 32x32) and D (4 convs)
    assert all(float(m.beta_h) == pytest.approx(0.45) and float(m.beta_l) == pytest.approx(0.55) for m in layers)
    reference = stage.sample(6, seed=5)

    torch.manual_seed(1)  # other initial weights, betas in the buffers: all replaced by the state
    other, _ = _stage(tmp_path, variant="ramp", schedule_unit="epoch", epochs=10)
    state = stage.state_dict()
    for layer in soft_layers(other.G, other.D):
        layer.beta_h.fill_(0.9)
    other.load_state_dict(state)
    for layer in soft_layers(other.G, other.D):  # even stale buffers are overridden by the saved progress
        layer.beta_h.fill_(0.9)
    assert torch.equal(other.sample(6, seed=5), reference)


def _betas_seen_by_every_soft_conv(stage, run):
    """(beta_H, beta_L) that each soft conv of G and D multiplies its input by while `run()` runs."""
    seen = []
    handles = [m.register_forward_pre_hook(lambda m, args: seen.append((float(m.beta_h), float(m.beta_l))))
               for m in soft_layers(stage.G, stage.D)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


def test_the_official_variant_trains_on_the_epoch_rule_and_samples_with_0_7_and_0_3(tmp_path):
    """The official code: betas min(0.2 + (e + 1) / E, 0.7) in training, 0.7 / 0.3 for sampling."""
    torch.manual_seed(0)
    stage, data = _stage(tmp_path, schedule_unit="epoch")  # the paper config: official, eval_betas=end
    assert stage.cfg.variant == "official" and stage.cfg.eval_betas == "end" and stage.cfg.epochs == 50
    batch = _batch(data, epoch=4.5, progress=0.0)  # half-way through epoch 4 (0-based)
    seen = _betas_seen_by_every_soft_conv(stage, lambda: stage.train_step(batch))
    n_soft = len(soft_layers(stage.G, stage.D))
    # D on reals and fakes, G (no grad) for fakes, then G through D: every soft conv reads (0.3, 0.7)
    assert len(seen) >= n_soft and seen == [pytest.approx((0.3, 0.7))] * len(seen)
    sampled = _betas_seen_by_every_soft_conv(stage, lambda: stage.sample(3, seed=0))
    g_soft = len(soft_layers(stage.G))
    assert sampled == [pytest.approx((0.7, 0.3))] * g_soft  # dcgan.py line 198: G(z, 0.5) -> 0.7 / 0.3
    assert all(float(m.beta_h) == pytest.approx(0.3) for m in soft_layers(stage.G, stage.D))  # training restored
    current = dataclasses.replace(stage.cfg, eval_betas="current")
    stage.cfg = current
    assert _betas_seen_by_every_soft_conv(stage, lambda: stage.sample(3, seed=0)) == [pytest.approx((0.3, 0.7))] * g_soft


def test_eval_betas_end_samples_with_the_final_betas(tmp_path):
    torch.manual_seed(0)
    stage, data = _stage(tmp_path, variant="ramp", schedule_unit="budget", eval_betas="end")
    stage.train_step(_batch(data, epoch=0.1, progress=0.1))
    seen = _betas_seen_by_every_soft_conv(stage, lambda: stage.sample(2, seed=0))
    assert seen == [pytest.approx((0.7, 0.3))] * len(soft_layers(stage.G))
    assert float(stage.G.body[1].conv.beta_h) == pytest.approx(0.3)  # training betas restored: x = 0.1
    combi, data = _stage(tmp_path, variant="combi", schedule_unit="budget")  # end of the combi reading: 1, 0.5
    combi.train_step(_batch(data, epoch=0.1, progress=0.1))
    assert _betas_seen_by_every_soft_conv(combi, lambda: combi.sample(2, seed=0)) == \
        [pytest.approx((1.0, 0.5))] * len(soft_layers(combi.G))


def test_spectrum_hf_gap_uses_the_upper_half_of_the_radii():
    real = np.zeros(17)  # 32x32 images: radii 0..16, upper half 8..16
    fake = np.zeros(17)
    fake[:8] = 5.0  # differences below R/4 do not count
    assert spectrum_hf_gap(fake, real) == 0.0
    fake[8:] = np.linspace(-1, 1, 9)
    assert spectrum_hf_gap(fake, real) == pytest.approx(np.abs(np.linspace(-1, 1, 9)).mean())


@pytest.mark.gpu
def test_soft_octave_stage_trains_and_samples_on_cuda(tmp_path):
    torch.manual_seed(0)
    stage, data = _stage(tmp_path, device="cuda", variant="combi", schedule_unit="budget")
    out = stage.train_step(_batch(data, epoch=0.01, progress=0.5, device="cuda"))  # bf16 autocast on CUDA
    assert all(np.isfinite(v) for v in out.values()) and out["beta_h"] == pytest.approx(1.0)
    layers = soft_layers(stage.G, stage.D)
    assert all(m.beta_h.device.type == "cuda" and float(m.beta_l) == pytest.approx(1.0) for m in layers)
    images = stage.sample(4, seed=0)
    assert images.dtype == torch.uint8 and images.device.type == "cpu" and images.shape == (4, 3, 32, 32)
    assert stage.cost == network_cost(stage.cfg, stage.G.cpu(), stage.D.cpu())  # cost is device-independent
