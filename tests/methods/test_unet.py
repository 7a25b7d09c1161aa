"""methods/unet.py: layer shapes against the official decoders (Fig. 6, Tables 3-4), output
shapes for 64/128/256 images, and fused shallow heads against separate ones."""
import pytest
import torch
import torch.nn as nn

from methods.unet import PacketUNet, ShallowHeads, SRUNet
from methods.wavelets import packet_split


def conv_shapes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_channels, m.out_channels) for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_packet_unet_layers_are_the_official_ones():
    """UNet_NTail_128_Mod(n_channels=12, n_classes=3, n_tails=12): 512 channels at every scale,
    three poolings, heads conv3x3 512 -> 256 -> 3; 16 layers on any input-to-output path."""
    net = PacketUNet(packets=4, width=512)
    body = [(12, 512), (512, 512)] + [(512, 512)] * 6 + [(1024, 512), (512, 512)] * 3
    assert conv_shapes(net.body) == body
    assert conv_shapes(net.heads) == [(512, 256 * 12), (256 * 12, 3 * 12)]
    assert net.heads.body[-1].groups == 12  # 12 separate heads (Table 3, level "1" = 64 -> 128)
    assert len(body) + 2 == 16  # Table 3: 16 layers
    assert PacketUNet(packets=16, width=8).heads.n == 48  # Table 3: 48 heads for 128 -> 256


def test_sr_unet_layers_are_the_official_ones():
    """Pytorch-UNet `UNet(3, 3, bilinear=True)` with a 3x3 output conv: 19 layers (Table 4)."""
    expected = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512),
                (512, 512), (512, 512), (1024, 512), (512, 256), (512, 256), (256, 128), (256, 128), (128, 64),
                (128, 64), (64, 64), (64, 3)]
    assert conv_shapes(SRUNet(64)) == expected


@pytest.mark.parametrize("resolution,channels", [(64, 3), (128, 12), (256, 48)])
@pytest.mark.parametrize("heads", ["packet", "band"])
def test_packet_unet_shapes_from_image_size(resolution, channels, heads):
    """Level 1 (TL_1 at R/2 -> R): input = packets of TL_1 at 32x32; 12 channels for a 64x64
    TL (128 image), 48 for 128x128 (256 image)."""
    tl = torch.rand(2, 3, resolution // 2, resolution // 2)
    packets = packet_split(tl, 32)
    assert packets.shape == (2, channels, 32, 32)
    net = PacketUNet(packets=channels // 3, width=4, heads=heads)
    out = net(packets)
    assert out.shape == (2, 3, channels, 32, 32)
    assert net.heads.n == (channels if heads == "packet" else 3)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_sr_unet_keeps_the_size(size):
    assert SRUNet(width=2)(torch.rand(1, 3, size, size)).shape == (1, 3, size, size)


def test_fused_heads_equal_separate_heads():
    torch.manual_seed(0)
    fused = ShallowHeads(width=8, n=3, out=2)
    x = torch.randn(4, 8, 6, 6)
    first, bn, _, last = fused.body
    outs = []
    for k in range(3):  # each head alone: conv 8 -> 4, BN, ReLU, conv 4 -> 2, with its slice of the weights
        conv1 = nn.Conv2d(8, 4, 3, padding=1, bias=False)
        norm = nn.BatchNorm2d(4)
        conv2 = nn.Conv2d(4, 2, 3, padding=1)
        with torch.no_grad():
            conv1.weight.copy_(first.weight[4 * k:4 * k + 4])
            norm.weight.copy_(bn.weight[4 * k:4 * k + 4])
            norm.bias.copy_(bn.bias[4 * k:4 * k + 4])
            conv2.weight.copy_(last.weight[2 * k:2 * k + 2])
            conv2.bias.copy_(last.bias[2 * k:2 * k + 2])
        outs.append(conv2(torch.relu(norm(conv1(x)))))
    torch.testing.assert_close(fused(x), torch.cat(outs, 1), rtol=1e-5, atol=1e-5)
