"""methods/wavelets.py against pywt (the independent reference): forward and inverse in both
modes, several wavelets, dtypes, shapes and channel counts; gradients; packets; multi-level."""
import numpy as np
import pytest
import pywt
import torch

from methods.wavelets import (dwt2, idwt2, packet_depth, packet_merge, packet_split, wavedec2,
                              waverec2)

SHAPES = [(2, 3, 32, 32), (1, 1, 16, 24), (3, 5, 8, 8)]
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def pywt_bands(x: np.ndarray, wavelet: str, mode: str) -> list[np.ndarray]:
    """pywt.dwt2 bands in (TL, TR, BL, BR) order; `zero` cropped to its centre N/2 coefficients."""
    ll, (lh, hl, hh) = pywt.dwt2(x, wavelet, mode=mode, axes=(-2, -1))
    bands = [ll, lh, hl, hh]
    if mode == "zero":
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        top, left = (ll.shape[-2] - h) // 2, (ll.shape[-1] - w) // 2
        bands = [b[..., top:top + h, left:left + w] for b in bands]
    return [np.ascontiguousarray(b) for b in bands]


@pytest.mark.parametrize("mode", ["periodization", "zero"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("wavelet", ["bior2.2", "haar", "db4", "sym3"])
def test_dwt2_matches_pywt(mode, dtype, shape, wavelet):
    x = torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = dwt2(x.to(dtype), wavelet, mode)
    for band, ref in zip(out, pywt_bands(x.numpy(), wavelet, mode)):
        assert band.dtype == dtype and band.shape == ref.shape
        torch.testing.assert_close(band, torch.from_numpy(ref).to(dtype), rtol=0, atol=TOL[dtype])


def test_zero_mode_is_the_original_code_crop_of_pywt():
    # The original NSBGAN code: pad(x, 2) + stride-2 correlation == pywt zero mode [1 : N/2 + 1].
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    ll, (lh, hl, hh) = pywt.dwt2(x.numpy(), "bior2.2", mode="zero", axes=(-2, -1))
    assert ll.shape[-1] == 16 // 2 + 2
    for band, ref in zip(dwt2(x, "bior2.2", "zero"), (ll, lh, hl, hh)):
        torch.testing.assert_close(band, torch.from_numpy(ref[..., 1:9, 1:9].copy()), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("wavelet", ["bior2.2", "haar", "db4", "bior6.8"])
def test_periodization_reconstructs_exactly(shape, wavelet):
    x = torch.rand(*shape, dtype=torch.float64)
    torch.testing.assert_close(idwt2(*dwt2(x, wavelet), wavelet), x, rtol=0, atol=1e-10)
    x32 = x.float()
    torch.testing.assert_close(idwt2(*dwt2(x32, wavelet), wavelet), x32, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["periodization", "zero"])
@pytest.mark.parametrize("wavelet", ["bior2.2", "sym3", "db2"])
def test_idwt2_matches_pywt(mode, wavelet):
    """periodization: pywt.idwt2 of the same bands. zero: pywt.idwt2 of pywt's full zero-mode
    coefficients with the ones dwt2 dropped set to zero (what our synthesis assumes)."""
    x = np.random.default_rng(1).random((2, 3, 16, 24))
    bands = [torch.from_numpy(b) for b in pywt_bands(x, wavelet, mode)]
    if mode == "periodization":
        coeffs = (bands[0].numpy(), tuple(b.numpy() for b in bands[1:]))
    else:
        ll = pywt.dwt2(x, wavelet, mode="zero", axes=(-2, -1))[0]
        top, left = (ll.shape[-2] - 8) // 2, (ll.shape[-1] - 12) // 2
        full = []
        for b in bands:
            z = np.zeros(ll.shape)
            z[..., top:top + 8, left:left + 12] = b.numpy()
            full.append(z)
        coeffs = (full[0], tuple(full[1:]))
    ref = pywt.idwt2(coeffs, wavelet, mode=mode, axes=(-2, -1))
    torch.testing.assert_close(idwt2(*bands, wavelet, mode), torch.from_numpy(ref), rtol=0, atol=1e-12)


def test_zero_mode_reconstruction_is_exact_inside_and_wrong_on_the_borders():
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    err = (idwt2(*dwt2(x, mode="zero"), mode="zero") - x).abs()
    # bior2.2: the first two and the last row / column lose coefficients, the rest is exact
    assert err[..., 2:-1, 2:-1].max() < 1e-12
    assert err[..., :2, :].amin(dim=(0, 1, 3)).min() > 0 and err[..., -1, :].max() > 1e-3
    assert err[..., :, :2].max() > 1e-3 and err[..., :, -1].max() > 1e-3


@pytest.fixture
def one_thread():
    """gradcheck runs hundreds of tiny convolutions: on a busy 2-core machine OpenMP's barrier
    costs ~10 ms per op with two threads and nothing with one."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("mode", ["periodization", "zero"])
def test_gradcheck(mode, one_thread):
    x = torch.rand(1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dwt2(t, "bior2.2", mode), (x,))
    bands = tuple(torch.rand(1, 2, 4, 4, dtype=torch.float64, requires_grad=True) for _ in range(4))
    assert torch.autograd.gradcheck(lambda *b: idwt2(*b, "bior2.2", mode), bands)
    assert torch.autograd.gradcheck(lambda t: packet_split(t, 2, "bior2.2", mode), (x,))


@pytest.mark.parametrize("shape", [(1, 3, 33, 32), (1, 3, 32, 7)])
def test_odd_sizes_are_a_clear_error(shape):
    with pytest.raises(ValueError, match="even height and width"):
        dwt2(torch.rand(*shape))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(TypeError, match="floating-point"):
        dwt2(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="unknown wavelet mode"):
        dwt2(torch.rand(1, 3, 8, 8), mode="symmetric")
    with pytest.raises(ValueError, match="unknown wavelet 'bior9.9'"):
        dwt2(torch.rand(1, 3, 8, 8), wavelet="bior9.9")
    with pytest.raises(ValueError, match="one shape"):
        idwt2(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5))


def test_autocast_and_low_precision_inputs_stay_exact():
    x = torch.rand(2, 3, 16, 16)
    ref = dwt2(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = dwt2(x)
    for a, b in zip(inside, ref):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    low = dwt2(x.bfloat16())  # promoted to float32, not computed in bfloat16
    assert low[0].dtype == torch.float32
    torch.testing.assert_close(low[0], dwt2(x.bfloat16().float())[0], rtol=0, atol=0)


def test_wavedec2_waverec2_match_pywt():
    x = np.random.default_rng(2).random((1, 3, 128, 64))
    coeffs = wavedec2(torch.from_numpy(x), 3)
    ref = pywt.wavedec2(x, "bior2.2", mode="periodization", level=3, axes=(-2, -1))
    torch.testing.assert_close(coeffs[0], torch.from_numpy(ref[0]), rtol=0, atol=1e-12)
    for ours, theirs in zip(coeffs[1:], ref[1:]):
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, torch.from_numpy(b), rtol=0, atol=1e-12)
    torch.testing.assert_close(waverec2(coeffs), torch.from_numpy(x), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="divisible by 16"):
        wavedec2(torch.rand(1, 3, 24, 24), 4)


@pytest.mark.parametrize("channels", [1, 3])
def test_packet_split_matches_pywt_wavelet_packets(channels):
    x = np.random.default_rng(3).random((2, channels, 32, 32))
    packets = packet_split(torch.from_numpy(x), size=8)
    assert packets.shape == (2, 16 * channels, 8, 8)
    wp = pywt.WaveletPacket2D(x, "bior2.2", mode="periodization", maxlevel=2, axes=(-2, -1))
    node = "ahvd"  # pywt's names for TL, TR, BL, BR
    for b1 in range(4):
        for b2 in range(4):
            k = (b1 * 4 + b2) * channels
            ref = torch.from_numpy(wp[node[b1] + node[b2]].data)
            torch.testing.assert_close(packets[:, k:k + channels], ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("side,size,depth", [(32, 32, 0), (64, 32, 1), (128, 32, 2), (64, 8, 3)])
def test_packet_round_trip(side, size, depth):
    assert packet_depth(side, size) == depth
    x = torch.rand(2, 3, side, side, dtype=torch.float64)
    packets = packet_split(x, size)
    assert packets.shape == (2, 3 * 4**depth, size, size)
    torch.testing.assert_close(packet_merge(packets, 3), x, rtol=0, atol=1e-10)


def test_packet_sizes_that_do_not_fit_are_errors():
    with pytest.raises(ValueError, match="size \\* 2\\*\\*d"):
        packet_split(torch.rand(1, 3, 48, 48), 32)
    with pytest.raises(ValueError, match="size \\* 2\\*\\*d"):
        packet_split(torch.rand(1, 3, 16, 16), 32)
    with pytest.raises(ValueError, match="4\\*\\*d groups"):
        packet_merge(torch.rand(1, 24, 8, 8), 3)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["periodization", "zero"])
def test_cuda_matches_cpu_with_tf32_and_autocast_on(mode):
    x = torch.rand(4, 3, 64, 64)
    ref = dwt2(x, mode=mode)
    conv = torch.backends.cudnn.conv
    old = conv.fp32_precision
    conv.fp32_precision = "tf32"
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = dwt2(x.cuda(), mode=mode)
            rec = idwt2(*out, mode=mode)
        assert conv.fp32_precision == "tf32"  # restored
    finally:
        conv.fp32_precision = old
    for a, b in zip(out, ref):
        torch.testing.assert_close(a.cpu(), b, rtol=0, atol=1e-5)
    if mode == "periodization":
        torch.testing.assert_close(rec.cpu(), x, rtol=0, atol=1e-5)
