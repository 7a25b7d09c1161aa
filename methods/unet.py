"""UNet decoders of NOT-SO-BIGGAN (Fig. 6 of the paper, and the authors' Pytorch-UNet fork).

`PacketUNet` (NSBGAN, Fig. 6a) and `SRUNet` (NSBGAN-PIXEL, Fig. 6b) share one UNet body, `UNetBody`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def double_conv(cin: int, cout: int, mid: int | None = None) -> nn.Sequential:
    """(conv3x3 -> BN -> ReLU) x 2, keeping the spatial size."""
    # No bias before BatchNorm: BN subtracts the batch mean, so a bias there is cancelled exactly (the
    # official code has one; the function class is the same).
    mid = mid or cout
    return nn.Sequential(
        nn.Conv2d(cin, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNetBody(nn.Module):
    """Encoder widths `widths` = (w_0, ..., w_D) from the input resolution down to the bottom
    after D = len(widths) - 1 poolings. The decoder stage at resolution level i concatenates
    the encoder feature (w_i) with the upsampled feature from below and outputs w_{max(i-1, 0)}
    channels, as in the official UNets (which also need w_D == w_{D-1}).

    A double 3x3 conv (conv-BN-ReLU twice) at the input resolution, D times max-pool 2x2 + double
    conv, then as many bilinear 2x upsamplings, each concatenated with the encoder feature of the
    same resolution and followed by a double conv whose middle width is half its input width."""

    def __init__(self, in_channels: int, widths: Sequence[int]):
        super().__init__()
        widths = list(widths)
        if len(widths) < 2 or widths[-1] != widths[-2]:
            raise ValueError(f"UNet widths need >= 2 levels and an equal-width bottom, got {widths}")
        self.inc = double_conv(in_channels, widths[0])
        self.down = nn.ModuleList(double_conv(a, b) for a, b in zip(widths[:-1], widths[1:]))
        up = []
        below = widths[-1]
        for i in range(len(widths) - 2, -1, -1):
            cin, cout = widths[i] + below, widths[max(i - 1, 0)]
            up.append(double_conv(cin, cout, cin // 2))
            below = cout
        self.up = nn.ModuleList(up)
        self.out_channels = below
        self.poolings = len(widths) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, in_channels, S, S), S divisible by 2**poolings -> (N, out_channels, S, S)."""
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        h = skips.pop()
        for block in self.up:
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True)  # as the official code
            h = block(torch.cat([skips.pop(), h], dim=1))
        return h


class ShallowHeads(nn.Module):
    """`n` independent shallow heads conv3x3 (w -> w/2), BN, ReLU, conv3x3 (w/2 -> out), run
    as one wide conv and one grouped conv. That is the same function as `n` separate modules
    (each head's first conv sees the whole input; BN is per channel; the grouped conv keeps the
    heads apart) and much faster than looping over 48 of them. Output channels are head-major:
    head k writes channels [k * out, (k + 1) * out)."""

    def __init__(self, width: int, n: int, out: int):
        super().__init__()
        mid = max(1, width // 2)
        self.n, self.out = n, out
        self.body = nn.Sequential(
            nn.Conv2d(width, mid * n, 3, padding=1, bias=False), nn.BatchNorm2d(mid * n), nn.ReLU(inplace=True),
            nn.Conv2d(mid * n, out * n, 3, padding=1, groups=n),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PacketUNet(nn.Module):
    """NSBGAN decoder of one level: packets of TL_l -> packets of (TR_l, BL_l, BR_l).

    in: (N, 3P, s, s) = `packet_split(TL_l, s)` with P = (side / s)**2 packets of 3 colours.
    out: (N, 3, 3P, s, s): band (TR, BL, BR) x packet channels in `packet_split`'s layout.
    `heads="packet"` gives one head per (band, packet), 3P heads of 3 channels each: Table 3's
    12 / 48 "added shallow networks" and the official `n_tails`; `heads="band"` gives the three
    heads of Sec. 4.2's text, each predicting all 3P channels of its band.

    Fig. 6a, Table 3: input = wavelet packets of TL_l stacked on channels, base width 512 at every
    scale (the official `UNet_NTail_128_Mod`), three poolings, then shallow heads (conv3x3 w -> w/2,
    BN, ReLU, conv3x3 w/2 -> 3): 14 body + 2 head convs = Table 3's 16 layers.
    """

    def __init__(self, packets: int, width: int = 512, heads: str = "packet", poolings: int = 3,
                 colours: int = 3):
        super().__init__()
        if heads not in ("packet", "band"):
            raise ValueError(f"heads must be 'packet' or 'band', got '{heads}'")
        self.packets, self.colours = packets, colours
        self.body = UNetBody(colours * packets, [width] * (poolings + 1))
        n = 3 * packets if heads == "packet" else 3
        self.heads = ShallowHeads(width, n, 3 * packets * colours // n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.heads(self.body(x))
        return out.unflatten(1, (3, self.packets * self.colours))


class SRUNet(nn.Module):
    """NSBGAN-PIXEL decoder: bilinearly upsampled image (N, 3, S, S) -> residual (N, 3, S, S),
    S divisible by 2**poolings. Widths w, 2w, 4w, 8w and a bottom of 8w (official `UNet`, the classic
    UNet's with w = 64). Fig. 6b, Table 4: four poolings and a 3x3 output conv, 19 layers."""

    def __init__(self, width: int = 64, poolings: int = 4, colours: int = 3):
        super().__init__()
        widths = [width * 2**i for i in range(poolings)]
        self.body = UNetBody(colours, widths + [widths[-1]])
        self.out = nn.Conv2d(self.body.out_channels, colours, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))
