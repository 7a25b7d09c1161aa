"""BigGAN / BigGAN-deep networks: shapes, parameter counts of the official code, spectral norm against
an SVD, init, attention against a direct softmax, config errors. Tiny widths; CPU, seconds."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from baselines.biggan_nets import (SelfAttention, SNConv2d, SNLinear, attend, attention_resolutions, make_discriminator,
                                   make_generator, spectral_normalize)
from harness.errors import ConfigError

ARCHS = ["biggan", "biggan-deep"]


def tiny(arch: str, resolution: int, attn: int = 0, ch: int = 4, n_classes: int = 5, **kw):
    depth = 2 if arch == "biggan-deep" else 1
    G = make_generator(arch, resolution, ch=ch, attn=attn, dim_z=20, shared_dim=8, n_classes=n_classes, depth=depth,
                       sn_eps=1e-6, bn_eps=1e-5, **{k: v for k, v in kw.items() if k == "out_channels"})
    D = make_discriminator(arch, resolution, ch=ch, attn=attn, n_classes=n_classes, depth=depth, sn_eps=1e-6,
                           **{k: v for k, v in kw.items() if k == "in_channels"})
    return G, D


def inputs(G, n: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, G.dim_z, generator=gen), torch.randint(0, G.n_classes, (n,), generator=gen)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("resolution, attn", [(32, 0), (32, 16), (64, 32)])
def test_shapes_and_range(arch, resolution, attn):
    G, D = tiny(arch, resolution, attn, ch=8)
    z, y = inputs(G)
    x = G(z, y)
    assert x.shape == (3, 3, resolution, resolution)
    assert x.abs().max() <= 1
    assert D(x, y).shape == (3, 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_wavelet_channels_in_and_out(arch):
    G, D = tiny(arch, 32, out_channels=12, in_channels=12)
    z, y = inputs(G)
    x = G(z, y)
    assert x.shape == (3, 12, 32, 32)
    assert D(x, y).shape == (3, 1)


@pytest.mark.parametrize("arch, ch, depth, dim_z, g_params, d_params", [
    ("biggan", 96, 1, 120, 70_433_988, 87_982_370),  # official launch_BigGAN_bs256x8.sh
    ("biggan-deep", 128, 2, 128, 50_244_484, 34_590_210),  # official launch_BigGAN_deep.sh
])
def test_parameter_counts_equal_the_official_code(arch, ch, depth, dim_z, g_params, d_params):
    # The counts of the official Generator/Discriminator at 128x128, 1000 classes, attn 64 (its
    # G.parameters() includes the shared class embedding).
    with torch.device("meta"):
        G = make_generator(arch, 128, ch=ch, attn=64, dim_z=dim_z, shared_dim=128, n_classes=1000, depth=depth,
                           sn_eps=1e-6, bn_eps=1e-5, init=False)
        D = make_discriminator(arch, 128, ch=ch, attn=64, n_classes=1000, depth=depth, sn_eps=1e-6, init=False)
    assert sum(p.numel() for p in G.parameters()) == g_params
    assert sum(p.numel() for p in D.parameters()) == d_params


def test_biggan_rounds_dim_z_to_the_chunks():
    # official: z_chunk_size = dim_z // (blocks + 1), dim_z = z_chunk_size * (blocks + 1)
    assert tiny("biggan", 64)[0].dim_z == 20  # 4 blocks, 5 chunks of 4
    assert tiny("biggan", 128)[0].dim_z == 18  # 5 blocks, 6 chunks of 3
    assert tiny("biggan-deep", 128)[0].dim_z == 20  # not split


def test_attention_resolutions():
    assert attention_resolutions("biggan", 128, "G") == (8, 16, 32, 64, 128)
    assert attention_resolutions("biggan", 128, "D") == (64, 32, 16, 8, 4)
    assert attention_resolutions("biggan-deep", 256, "D") == (128, 64, 32, 16, 8, 4)
    assert attention_resolutions("biggan", 32, "G") == (8, 16, 32)
    assert attention_resolutions("biggan", 32, "D") == (16, 8)  # D at 32 stops at 8x8


def test_config_errors():
    kw = dict(ch=8, attn=0, dim_z=20, shared_dim=8, n_classes=5, depth=1, sn_eps=1e-6, bn_eps=1e-5)
    with pytest.raises(ConfigError, match="unknown BigGAN arch"):
        make_generator("biggan-xl", 64, **kw)
    with pytest.raises(ConfigError, match="resolutions"):
        make_generator("biggan", 96, **kw)
    with pytest.raises(ConfigError, match="resolutions"):
        attention_resolutions("biggan-deep", 512, "D")
    with pytest.raises(ConfigError, match="not a block resolution"):
        make_generator("biggan", 64, **{**kw, "attn": 4})  # G's first block outputs 8x8
    with pytest.raises(ConfigError, match="not a block resolution"):
        make_discriminator("biggan", 64, ch=8, attn=64, n_classes=5, depth=1, sn_eps=1e-6)  # D starts at 32
    with pytest.raises(ConfigError, match="depth=1"):
        make_generator("biggan", 64, **{**kw, "depth": 2})
    with pytest.raises(ConfigError, match="at least 8 channels"):
        make_generator("biggan", 64, **{**kw, "ch": 1, "attn": 64})


def sigma_max(w: torch.Tensor) -> float:
    return torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item()


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_spectral_norm_converges_to_unit_top_singular_value(kind):
    layer = (SNConv2d(16, 32, 3, sn_eps=1e-6) if kind == "conv" else SNLinear(48, 24, sn_eps=1e-6)).double()
    with torch.no_grad():  # a spectral gap of 2 between the top two singular values
        w = layer.weight.reshape(layer.weight.shape[0], -1)
        u, s, vh = torch.linalg.svd(torch.randn_like(w), full_matrices=False)
        s = torch.linspace(1.0, 3.0, s.numel(), dtype=s.dtype).flip(0)
        s[0] = 6.0
        layer.weight.copy_(((u * s) @ vh).reshape(layer.weight.shape))
    x = torch.randn(2, *((16, 5, 5) if kind == "conv" else (48,)), dtype=torch.float64)
    layer.train()
    for _ in range(20):
        layer(x)
    assert sigma_max(layer.weight) == pytest.approx(6.0)
    assert sigma_max(layer.normalized_weight()) == pytest.approx(1.0, abs=1e-6)
    assert torch.linalg.svdvals(layer.normalized_weight().reshape(w.shape))[0].item() == pytest.approx(1.0, abs=1e-6)


def test_spectral_norm_of_a_random_weight_is_near_one():
    layer = SNConv2d(32, 64, 3, sn_eps=1e-6).double()
    for _ in range(20):
        layer.normalized_weight()
    assert sigma_max(layer.normalized_weight()) == pytest.approx(1.0, abs=0.05)


def test_power_iteration_updates_u_in_train_mode_only():
    G, D = tiny("biggan", 32, attn=16, ch=8)
    z, y = inputs(G)
    for net, run in ((G, lambda: G(z, y)), (D, lambda: D(G(z, y).detach(), y))):
        # every SN conv, linear and embedding, except D's output layer: its u has one entry, always 1
        us = [u for name, u in net.named_buffers() if name.endswith(".u") and u.numel() > 1]
        before = [u.clone() for u in us]
        net.eval()
        with torch.no_grad():
            run()
        assert all(torch.equal(a, b) for a, b in zip(before, us))
        net.train()
        run()
        assert all(not torch.equal(a, b) for a, b in zip(before, us))


def test_u_survives_a_state_dict_round_trip():
    G, _ = tiny("biggan-deep", 32)
    z, y = inputs(G)
    for _ in range(3):
        G(z, y)
    torch.manual_seed(1)
    H, _ = tiny("biggan-deep", 32)
    H.load_state_dict(G.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(G.buffers(), H.buffers()))
    G.eval()
    H.eval()
    torch.testing.assert_close(H(z, y), G(z, y), rtol=0, atol=0)


def test_deepcopy_and_channels_last():
    G, D = tiny("biggan", 32, attn=16, ch=8)
    z, y = inputs(G)
    ema = copy.deepcopy(G)
    G.eval()
    ema.eval()
    torch.testing.assert_close(ema(z, y), G(z, y), rtol=0, atol=0)
    ema.train()
    ema(z, y)  # the copy's u moves, the original's does not
    assert not torch.equal(ema.linear.u, G.linear.u)
    x = G(z, y)
    D.eval()
    D_cl = copy.deepcopy(D).to(memory_format=torch.channels_last)
    torch.testing.assert_close(D_cl(x.contiguous(memory_format=torch.channels_last), y), D(x, y))


def test_attention_gamma_starts_at_zero():
    for net in (*tiny("biggan", 64, attn=32, ch=8), *tiny("biggan-deep", 64, attn=32, ch=8)):
        gammas = [m.gamma for m in net.modules() if isinstance(m, SelfAttention)]
        assert len(gammas) == 1 and gammas[0].item() == 0.0


def test_attention_matches_a_direct_softmax():
    attn = SelfAttention(16, sn_eps=1e-6).double().eval()
    with torch.no_grad():
        attn.gamma.fill_(0.5)
    x = torch.randn(2, 16, 8, 6, dtype=torch.float64)
    theta = attn.theta(x).flatten(2)  # (N, C/8, HW)
    phi = F.max_pool2d(attn.phi(x), 2).flatten(2)  # (N, C/8, HW/4)
    g = F.max_pool2d(attn.g(x), 2).flatten(2)  # (N, C/2, HW/4)
    beta = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (N, HW, HW/4), unscaled logits
    expected = x + 0.5 * attn.o((g @ beta.transpose(1, 2)).reshape(2, 8, 8, 6))
    torch.testing.assert_close(attn(x), expected)


def test_fused_attention_matches_the_plain_one():
    # the CUDA path (scaled_dot_product_attention, here on its CPU fallback) against bmm-softmax-bmm
    q, k, v = torch.randn(2, 48, 4), torch.randn(2, 12, 4), torch.randn(2, 12, 16)
    torch.testing.assert_close(attend(q, k, v, fused=True), attend(q, k, v, fused=False))


def test_orthogonal_init():
    G, D = tiny("biggan", 64, ch=8)
    w = D.blocks[2].conv1.weight  # 16 -> 32 channels, 3x3: a wide (32, 144) matrix
    w = w.reshape(w.shape[0], -1)
    assert w.shape[0] < w.shape[1]
    torch.testing.assert_close(w @ w.t(), torch.eye(w.shape[0]), rtol=0, atol=1e-5)
    e = G.shared.weight  # (5, 8): the class embedding is initialised orthogonally too
    torch.testing.assert_close(e @ e.t(), torch.eye(5), rtol=0, atol=1e-5)


def test_spectral_norm_runs_in_float32_under_autocast():
    w = torch.randn(8, 4, 3, 3)
    u = F.normalize(torch.randn(8), dim=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = spectral_normalize(w, u.clone(), 1e-6, update=False)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, spectral_normalize(w, u.clone(), 1e-6, update=False), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ARCHS)
def test_no_host_sync_in_the_forward_pass(arch):
    G, D = tiny(arch, 64, attn=32, ch=8)
    G, D = G.cuda(), D.cuda()
    z, y = (t.cuda() for t in inputs(G))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # raises on .item(), nonzero(), a blocking copy, ...
    try:
        out = D(G(z, y), y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert math.isfinite(out.sum().item())
