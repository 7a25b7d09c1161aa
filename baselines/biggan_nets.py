"""BigGAN and BigGAN-deep generators and discriminators (Brock et al., ICLR 2019), class-conditional.

The networks only; training (config, hinge loss, accumulation, EMA, truncation, the stage) is in
baselines.biggan. The structure is that of the official PyTorch code (ajbrock/BigGAN-PyTorch: `BigGAN.py`,
`BigGANdeep.py`, `layers.py`); where it and the paper differ we follow the code, and a comment says so.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.errors import ConfigError

ARCHS = ("biggan", "biggan-deep")
# 16 is not in the reference: the harness's own smallest size (NSBGAN's latent of a 64x64 image at two
# levels, and fast tests), built like 32 with one block fewer in G and in D
RESOLUTIONS = (16, 32, 64, 128, 256)
# Channel multipliers of ch, from the official G_arch / D_arch (identical in BigGAN.py and
# BigGANdeep.py). G: widths[0] at 4x4 after the linear layer, block i goes widths[i] -> widths[i+1]
# and doubles the resolution. D: the output width of each block (BigGAN, fed 3 channels) or of the
# stem and each stage (BigGAN-deep).
_G_WIDTHS = {16: (4, 4, 4), 32: (4, 4, 4, 4), 64: (16, 16, 8, 4, 2), 128: (16, 16, 8, 4, 2, 1), 256: (16, 16, 8, 8, 4, 2, 1)}
_D_WIDTHS = {16: (4, 4, 4), 32: (4, 4, 4, 4), 64: (1, 2, 4, 8, 16), 128: (1, 2, 4, 8, 16, 16), 256: (1, 2, 4, 8, 8, 16, 16)}
_BOTTLENECK = 4  # BigGAN-deep's channel_ratio: bottlenecks run at a quarter of the channels
# The official output layer builds its BatchNorm without passing BN_eps: it always has eps 1e-5.
_OUTPUT_BN_EPS = 1e-5


# ---------------------------------------------------------------------------------------------
# Spectral normalisation
#
# Our own small layers instead of torch.nn.utils.parametrizations.spectral_norm, for two reasons:
# 1. Numerics of the official code: from the stored u it computes v = W^T u / |W^T u|, then
#    u' = W v / |W v| and sigma = u'^T W v; torch's parametrization runs the step the other way round
#    (u from a stored v, then v) and, in eval mode, reuses the stored pair without the half step.
#    With the same weights and u our outputs match the official ones, in train and eval mode.
# 2. Speed: sigma = u'^T (W v) reuses W v (the official code multiplies by W a third time), and a
#    plain module has no parametrization overhead on every `.weight` access and no clones of u, v;
#    the state-dict key stays `weight`, and copy.deepcopy (for the EMA of G) needs nothing special.
# ---------------------------------------------------------------------------------------------


def spectral_normalize(weight: torch.Tensor, u: torch.Tensor, eps: float, update: bool) -> torch.Tensor:
    """weight / sigma, sigma from one power-iteration step started at u: (weight.shape[0],).

    The weight is read as a matrix (out, in * k * k); u is replaced in place by the new left singular
    vector when `update` (training mode). sigma's gradient is u' v^T (u, v held constant), as in the
    official code and Miyato et al. 2018. Computed in float32 even under autocast.
    """
    if torch.is_autocast_enabled(weight.device.type):
        with torch.autocast(weight.device.type, enabled=False):
            return spectral_normalize(weight.float(), u, eps, update)
    w = weight.reshape(weight.shape[0], -1)  # reshape: the weight may be channels_last
    with torch.no_grad():
        v = F.normalize(torch.mv(w.t(), u), dim=0, eps=eps)
    wv = torch.mv(w, v)
    u_new = F.normalize(wv.detach(), dim=0, eps=eps)
    if update:
        u.copy_(u_new)
    return weight / torch.dot(u_new, wv)


class _SpectralNorm:
    """Adds the power-iteration vector `u` (a buffer: saved, copied, moved with the module)."""

    weight: torch.Tensor
    u: torch.Tensor
    training: bool

    def _add_u(self, sn_eps: float) -> None:
        self.sn_eps = sn_eps
        u = torch.randn(self.weight.shape[0], device=self.weight.device)
        self.register_buffer("u", F.normalize(u, dim=0))

    def normalized_weight(self) -> torch.Tensor:
        return spectral_normalize(self.weight, self.u, self.sn_eps, update=self.training)


class SNConv2d(_SpectralNorm, nn.Conv2d):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, sn_eps: float, bias: bool = True):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self._add_u(sn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.normalized_weight(), self.bias)


class SNLinear(_SpectralNorm, nn.Linear):
    def __init__(self, in_features: int, out_features: int, *, sn_eps: float, bias: bool = True):
        nn.Linear.__init__(self, in_features, out_features, bias=bias)
        self._add_u(sn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class SNEmbedding(_SpectralNorm, nn.Embedding):
    """As the official SNEmbedding, sigma is that of the (num_embeddings, dim) table."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, sn_eps: float):
        nn.Embedding.__init__(self, num_embeddings, embedding_dim)
        self._add_u(sn_eps)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return F.embedding(y, self.normalized_weight())


# ---------------------------------------------------------------------------------------------
# Layers shared by both architectures
# ---------------------------------------------------------------------------------------------


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without affine terms, then per-sample gain 1 + W_g c and bias W_b c (SN linears
    without bias, official `ccbn` with G_shared). c: (N, cond_dim) float."""

    def __init__(self, channels: int, cond_dim: int, *, bn_eps: float, sn_eps: float):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, eps=bn_eps, momentum=0.1, affine=False)
        self.gain = SNLinear(cond_dim, channels, bias=False, sn_eps=sn_eps)
        self.bias = SNLinear(cond_dim, channels, bias=False, sn_eps=sn_eps)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        gain = 1 + self.gain(c)
        return torch.addcmul(self.bias(c)[:, :, None, None], self.norm(x), gain[:, :, None, None])


class SelfAttention(nn.Module):
    """SAGAN's non-local block as released (not as the SAGAN paper writes it): theta, phi to C/8,
    g to C/2, phi and g max-pooled 2x2, softmax(theta^T phi) without 1/sqrt(d) scaling, 1x1 conv
    back to C, out = x + gamma * o with gamma learned from 0. All four 1x1 convs are SN, no bias.

    On CUDA, scaled_dot_product_attention gives the official bmm-softmax-bmm's numbers with a fused
    (memory-efficient) kernel that never holds the (HW x HW/4) attention map; on the CPU its math
    fallback is slower than the plain bmm-softmax-bmm (C/8 != C/2 rules out the CPU flash kernel).
    """

    def __init__(self, channels: int, *, sn_eps: float):
        super().__init__()
        if channels < 8:
            raise ConfigError(f"self-attention needs at least 8 channels (it projects to C/8), got {channels}: "
                              "raise ch or move attn to a wider block")
        self.theta = SNConv2d(channels, channels // 8, 1, bias=False, sn_eps=sn_eps)
        self.phi = SNConv2d(channels, channels // 8, 1, bias=False, sn_eps=sn_eps)
        self.g = SNConv2d(channels, channels // 2, 1, bias=False, sn_eps=sn_eps)
        self.o = SNConv2d(channels // 2, channels, 1, bias=False, sn_eps=sn_eps)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)  # (N, HW, C/8)
        k = F.max_pool2d(self.phi(x), 2).flatten(2).transpose(1, 2)  # (N, HW/4, C/8)
        v = F.max_pool2d(self.g(x), 2).flatten(2).transpose(1, 2)  # (N, HW/4, C/2)
        o = attend(q, k, v, fused=x.is_cuda)  # (N, HW, C/2)
        o = self.o(o.transpose(1, 2).reshape(n, c // 2, h, w))
        return torch.addcmul(x, self.gamma, o)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fused: bool) -> torch.Tensor:
    """softmax(q k^T) v, unscaled: q (N, L, E), k (N, S, E), v (N, S, Ev) -> (N, L, Ev)."""
    if fused:  # the fused kernels need unit stride in the last dimension
        q, k, v = (t.contiguous()[:, None] for t in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v, scale=1.0)[:, 0]
    return torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1).bmm(v)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


class GBlock(nn.Module):
    """BigGAN up-block: cBN, ReLU, 2x nearest up, conv3x3, cBN, ReLU, conv3x3; shortcut 2x up + 1x1 conv."""

    def __init__(self, cin: int, cout: int, cond_dim: int, *, bn_eps: float, sn_eps: float):
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(cin, cond_dim, bn_eps=bn_eps, sn_eps=sn_eps)
        self.conv1 = SNConv2d(cin, cout, 3, sn_eps=sn_eps)
        self.bn2 = ConditionalBatchNorm2d(cout, cond_dim, bn_eps=bn_eps, sn_eps=sn_eps)
        self.conv2 = SNConv2d(cout, cout, 3, sn_eps=sn_eps)
        self.shortcut = SNConv2d(cin, cout, 1, sn_eps=sn_eps)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_upsample(F.relu(self.bn1(x, c), inplace=True)))
        h = self.conv2(F.relu(self.bn2(h, c), inplace=True))
        # The official code upsamples x, then applies the 1x1 conv; the two commute exactly, and
        # this order costs a quarter of the multiply-adds.
        return h + _upsample(self.shortcut(x))


class DBlock(nn.Module):
    """BigGAN down-block (wide: the hidden width is cout): [ReLU], conv3x3, ReLU, conv3x3, [2x avg
    pool]; shortcut [pool], [1x1 conv]. The first block of D has no pre-activation."""

    def __init__(self, cin: int, cout: int, *, preactivation: bool, downsample: bool, sn_eps: float):
        super().__init__()
        self.preactivation, self.downsample = preactivation, downsample
        self.conv1 = SNConv2d(cin, cout, 3, sn_eps=sn_eps)
        self.conv2 = SNConv2d(cout, cout, 3, sn_eps=sn_eps)
        self.shortcut = SNConv2d(cin, cout, 1, sn_eps=sn_eps) if cin != cout or downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x  # out of place: x feeds the shortcut
        h = self.conv2(F.relu(self.conv1(h), inplace=True))
        s = x
        if self.downsample:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
        # The official code pools after the 1x1 conv in pre-activated blocks; they commute exactly
        # (both linear, the bias is constant), and pooling first is 4x cheaper.
        return h + (s if self.shortcut is None else self.shortcut(s))


class DeepGBlock(nn.Module):
    """BigGAN-deep up-block: cBN, ReLU, 1x1 to cin/4; cBN, ReLU, [2x up], conv3x3; cBN, ReLU, conv3x3;
    cBN, ReLU, 1x1 to cout. Shortcut: keep the first cout channels of x, [2x up]."""

    def __init__(self, cin: int, cout: int, cond_dim: int, *, upsample: bool, bn_eps: float, sn_eps: float):
        super().__init__()
        hidden = cin // _BOTTLENECK
        self.cout, self.upsample = cout, upsample
        self.bn1 = ConditionalBatchNorm2d(cin, cond_dim, bn_eps=bn_eps, sn_eps=sn_eps)
        self.conv1 = SNConv2d(cin, hidden, 1, sn_eps=sn_eps)
        self.bn2 = ConditionalBatchNorm2d(hidden, cond_dim, bn_eps=bn_eps, sn_eps=sn_eps)
        self.conv2 = SNConv2d(hidden, hidden, 3, sn_eps=sn_eps)
        self.bn3 = ConditionalBatchNorm2d(hidden, cond_dim, bn_eps=bn_eps, sn_eps=sn_eps)
        self.conv3 = SNConv2d(hidden, hidden, 3, sn_eps=sn_eps)
        self.bn4 = ConditionalBatchNorm2d(hidden, cond_dim, bn_eps=bn_eps, sn_eps=sn_eps)
        self.conv4 = SNConv2d(hidden, cout, 1, sn_eps=sn_eps)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.bn1(x, c), inplace=True))
        h = F.relu(self.bn2(h, c), inplace=True)
        x = x[:, :self.cout]
        if self.upsample:
            h, x = _upsample(h), _upsample(x)
        h = self.conv3(F.relu(self.bn3(self.conv2(h), c), inplace=True))
        return self.conv4(F.relu(self.bn4(h, c), inplace=True)) + x


class DeepDBlock(nn.Module):
    """BigGAN-deep down-block: ReLU, 1x1 to cout/4, ReLU, conv3x3, ReLU, conv3x3, ReLU, [2x avg pool],
    1x1 to cout. Shortcut: [pool], then concatenate a 1x1 conv's cout - cin new channels."""

    def __init__(self, cin: int, cout: int, *, downsample: bool, sn_eps: float):
        super().__init__()
        hidden = cout // _BOTTLENECK
        self.downsample = downsample
        self.conv1 = SNConv2d(cin, hidden, 1, sn_eps=sn_eps)
        self.conv2 = SNConv2d(hidden, hidden, 3, sn_eps=sn_eps)
        self.conv3 = SNConv2d(hidden, hidden, 3, sn_eps=sn_eps)
        self.conv4 = SNConv2d(hidden, cout, 1, sn_eps=sn_eps)
        self.shortcut = SNConv2d(cin, cout - cin, 1, sn_eps=sn_eps) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(x))  # out of place: x feeds the shortcut
        h = F.relu(self.conv3(F.relu(self.conv2(F.relu(h, inplace=True)), inplace=True)), inplace=True)
        if self.downsample:
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
        s = x if self.shortcut is None else torch.cat([x, self.shortcut(x)], 1)
        return self.conv4(h) + s


# ---------------------------------------------------------------------------------------------
# Architecture tables and checks
# ---------------------------------------------------------------------------------------------


def _check_arch(arch: str, resolution: int) -> None:
    if arch not in ARCHS:
        raise ConfigError(f"unknown BigGAN arch {arch!r}: choose one of {', '.join(ARCHS)}")
    if resolution not in RESOLUTIONS:
        raise ConfigError(f"{arch} is defined at resolutions {', '.join(map(str, RESOLUTIONS))}, got {resolution}")


def _d_downsamples(resolution: int, n_blocks: int) -> list[bool]:
    """Which D blocks (BigGAN) or stages (BigGAN-deep) halve the resolution: down to 4x4, except at
    32x32 where the official D_arch stops at 8x8 (downsample = [True, True, False, ...])."""
    n_down = {16: 1, 32: 2}.get(resolution, int(math.log2(resolution)) - 2)  # 16 (ours) stops at 8x8 too
    return [i < n_down for i in range(n_blocks)]


def _d_resolutions(arch: str, resolution: int) -> list[int]:
    """Output resolution of each D block (BigGAN) or stage (BigGAN-deep)."""
    n = len(_D_WIDTHS[resolution]) - (arch == "biggan-deep")
    out, r = [], resolution
    for down in _d_downsamples(resolution, n):
        r //= 2 if down else 1
        out.append(r)
    return out


def attention_resolutions(arch: str, resolution: int, network: Literal["G", "D"]) -> tuple[int, ...]:
    """The values `attn` may take, besides 0 (no attention), for G or D of `arch` at `resolution`:
    the output resolutions of its blocks, e.g. G (8, 16, 32, 64, 128) and D (64, 32, 16, 8, 4) at 128."""
    _check_arch(arch, resolution)
    if network == "G":
        return tuple(8 * 2**i for i in range(len(_G_WIDTHS[resolution]) - 1))
    if network == "D":
        return tuple(dict.fromkeys(_d_resolutions(arch, resolution)))
    raise ValueError(f"network must be 'G' or 'D', got {network!r}")


def _check_attn(arch: str, resolution: int, attn: int, network: Literal["G", "D"]) -> None:
    valid = attention_resolutions(arch, resolution, network)
    if attn != 0 and attn not in valid:
        raise ConfigError(f"attn {attn} is not a block resolution of the {arch} {network} at "
                          f"{resolution}x{resolution}: use 0 (no attention) or one of {', '.join(map(str, valid))}")


def _check_common(arch: str, ch: int, depth: int, n_classes: int) -> None:
    if ch < 1 or n_classes < 1:
        raise ConfigError(f"ch and n_classes must be positive, got ch={ch}, n_classes={n_classes}")
    if arch == "biggan" and depth != 1:
        raise ConfigError(f"biggan has one residual block per resolution: set depth=1 (got {depth}; "
                          "depth is for biggan-deep, paper: 2)")
    if arch == "biggan-deep":
        if depth < 1:
            raise ConfigError(f"depth must be >= 1, got {depth}")
        if ch < _BOTTLENECK:
            raise ConfigError(f"biggan-deep's bottlenecks have ch/{_BOTTLENECK} channels at the widest-resolution "
                              f"block: ch must be >= {_BOTTLENECK}, got {ch}")


def orthogonal_init_(module: nn.Module) -> None:
    """Orthogonal init of every conv, linear and embedding weight, G's class embedding included
    (official `G_init/D_init = 'ortho'`); biases keep PyTorch's default init, as in the official code."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.init.orthogonal_(m.weight)


# ---------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------


class BigGANGenerator(nn.Module):
    """BigGAN G with hierarchical z: z is split into len(blocks) + 1 equal chunks, the first feeds the
    linear layer, block i is conditioned on [embed(y), chunk i + 1]. dim_z is rounded down to a
    multiple of the number of chunks (official code; 120 stays 120 at 128x128); `self.dim_z` holds it.

    Paper Appendix B, Fig. 15, Tables 4-5: SN linear(z_0) -> 16ch x 4 x 4, residual GBlocks,
    self-attention after the block that reaches `attn`, then BN, ReLU, conv3x3, tanh.
    """

    def __init__(self, resolution: int, ch: int, attn: int, dim_z: int, shared_dim: int, n_classes: int,
                 sn_eps: float, bn_eps: float, out_channels: int = 3):
        super().__init__()
        widths = [ch * m for m in _G_WIDTHS[resolution]]
        n_blocks = len(widths) - 1
        self.chunk = dim_z // (n_blocks + 1)
        if self.chunk < 1:
            raise ConfigError(f"dim_z={dim_z} is split into {n_blocks + 1} chunks at {resolution}x{resolution}: "
                              f"it must be >= {n_blocks + 1}")
        self.dim_z, self.resolution, self.out_channels, self.n_classes = (
            self.chunk * (n_blocks + 1), resolution, out_channels, n_classes)
        # Not SN, unlike every other weight (official code: "applying SN to G's embedding seems to
        # randomly cripple G"); still initialised orthogonally by orthogonal_init_.
        self.shared = nn.Embedding(n_classes, shared_dim)
        self.linear = SNLinear(self.chunk, widths[0] * 16, sn_eps=sn_eps)
        self.blocks = nn.ModuleList(GBlock(a, b, shared_dim + self.chunk, bn_eps=bn_eps, sn_eps=sn_eps)
                                    for a, b in zip(widths[:-1], widths[1:]))
        self.attn_after = int(math.log2(attn)) - 3 if attn else -1  # block i outputs 8 * 2**i
        self.attention = SelfAttention(widths[self.attn_after + 1], sn_eps=sn_eps) if attn else None
        self.output_bn = nn.BatchNorm2d(widths[-1], eps=_OUTPUT_BN_EPS)
        self.output_conv = SNConv2d(widths[-1], out_channels, 3, sn_eps=sn_eps)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z: (N, dim_z) float, y: (N,) int64 class ids -> (N, out_channels, R, R) float in [-1, 1]."""
        zs = torch.split(z, self.chunk, dim=1)
        e = self.shared(y)
        h = self.linear(zs[0]).reshape(z.shape[0], -1, 4, 4)
        for i, block in enumerate(self.blocks):
            h = block(h, torch.cat([e, zs[i + 1]], 1))  # [embedding, z chunk]: the official order
            if i == self.attn_after:
                h = self.attention(h)
        return torch.tanh(self.output_conv(F.relu(self.output_bn(h), inplace=True)))


class BigGANDeepGenerator(nn.Module):
    """BigGAN-deep G (paper Fig. 16, Tables 7-8): c = [embed(y), z], the whole z, feeds the linear layer
    and every cBN. Per resolution, depth - 1 blocks keep the width, then one block upsamples and narrows
    (paper Table 7; the official code builds exactly this for its depth 2, and blocks with mismatched
    channels for other depths)."""

    def __init__(self, resolution: int, ch: int, attn: int, dim_z: int, shared_dim: int, n_classes: int,
                 depth: int, sn_eps: float, bn_eps: float, out_channels: int = 3):
        super().__init__()
        widths = [ch * m for m in _G_WIDTHS[resolution]]
        cond = shared_dim + dim_z
        self.dim_z, self.resolution, self.out_channels, self.n_classes = dim_z, resolution, out_channels, n_classes
        self.shared = nn.Embedding(n_classes, shared_dim)  # not SN: see BigGANGenerator
        self.linear = SNLinear(cond, widths[0] * 16, sn_eps=sn_eps)
        blocks: list[nn.Module] = []
        self.attn_after = -1
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            blocks += [DeepGBlock(a, a, cond, upsample=False, bn_eps=bn_eps, sn_eps=sn_eps) for _ in range(depth - 1)]
            blocks.append(DeepGBlock(a, b, cond, upsample=True, bn_eps=bn_eps, sn_eps=sn_eps))
            if attn == 8 * 2**i:  # stage i outputs 8 * 2**i
                self.attn_after = len(blocks) - 1
        self.blocks = nn.ModuleList(blocks)
        self.attention = SelfAttention(widths[int(math.log2(attn)) - 2], sn_eps=sn_eps) if attn else None
        self.output_bn = nn.BatchNorm2d(widths[-1], eps=_OUTPUT_BN_EPS)
        self.output_conv = SNConv2d(widths[-1], out_channels, 3, sn_eps=sn_eps)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z: (N, dim_z) float, y: (N,) int64 class ids -> (N, out_channels, R, R) float in [-1, 1]."""
        c = torch.cat([self.shared(y), z], 1)  # [embedding, z]: the official order
        h = self.linear(c).reshape(z.shape[0], -1, 4, 4)
        for i, block in enumerate(self.blocks):
            h = block(h, c)
            if i == self.attn_after:
                h = self.attention(h)
        return torch.tanh(self.output_conv(F.relu(self.output_bn(h), inplace=True)))


# ---------------------------------------------------------------------------------------------
# Discriminators
# ---------------------------------------------------------------------------------------------


class _ProjectionHead(nn.Module):
    """ReLU, global sum pooling, SN linear + projection <SN embed(y), h> (Miyato & Koyama 2018)."""

    def __init__(self, channels: int, n_classes: int, *, sn_eps: float):
        super().__init__()
        self.linear = SNLinear(channels, 1, sn_eps=sn_eps)
        self.embed = SNEmbedding(n_classes, channels, sn_eps=sn_eps)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.relu(h).sum(dim=(2, 3))
        return self.linear(h) + (self.embed(y) * h).sum(1, keepdim=True)


class BigGANDiscriminator(nn.Module):
    """BigGAN D (paper Appendix B, Fig. 15, Tables 4-5): residual DBlocks (2x average pooling),
    self-attention at `attn`, then the projection head. Attention follows the first block whose output
    has resolution `attn`.

    The official code adds one after every block *labelled* `attn` in its D_arch, and labels all
    four blocks of the 32x32 D as 16 (they output 16, 8, 8, 8) and the last two at 64-256 as 4. So
    at 32x32 with attention, and with attn = 4, it builds several attention layers where we build
    one; for every other attn (and attn = 0, its CIFAR setting) the networks are the same.
    """

    def __init__(self, resolution: int, ch: int, attn: int, n_classes: int, sn_eps: float, in_channels: int = 3):
        super().__init__()
        widths = [ch * m for m in _D_WIDTHS[resolution]]
        downs = _d_downsamples(resolution, len(widths))
        self.resolution, self.in_channels = resolution, in_channels
        self.blocks = nn.ModuleList(
            DBlock(cin, cout, preactivation=i > 0, downsample=down, sn_eps=sn_eps)
            for i, (cin, cout, down) in enumerate(zip([in_channels] + widths[:-1], widths, downs)))
        res = _d_resolutions("biggan", resolution)
        self.attn_after = res.index(attn) if attn else -1
        self.attention = SelfAttention(widths[self.attn_after], sn_eps=sn_eps) if attn else None
        self.head = _ProjectionHead(widths[-1], n_classes, sn_eps=sn_eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (N, in_channels, R, R) float in [-1, 1], y: (N,) int64 class ids -> logits (N, 1)."""
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.attn_after:
                h = self.attention(h)
        return self.head(h, y)


class BigGANDeepDiscriminator(nn.Module):
    """BigGAN-deep D (paper Fig. 16, Tables 7-8): 3x3 stem conv, then per resolution one block that
    (usually) halves it and widens, and depth - 1 blocks that keep both. Attention follows the first
    stage with resolution `attn` (at 32x32 the official code labels all three stages 16; see
    BigGANDiscriminator)."""

    def __init__(self, resolution: int, ch: int, attn: int, n_classes: int, depth: int, sn_eps: float,
                 in_channels: int = 3):
        super().__init__()
        widths = [ch * m for m in _D_WIDTHS[resolution]]
        downs = _d_downsamples(resolution, len(widths) - 1)
        res = _d_resolutions("biggan-deep", resolution)
        self.resolution, self.in_channels = resolution, in_channels
        self.stem = SNConv2d(in_channels, widths[0], 3, sn_eps=sn_eps)
        blocks: list[nn.Module] = []
        self.attn_after = -1
        for i, (cin, cout, down) in enumerate(zip(widths[:-1], widths[1:], downs)):
            blocks.append(DeepDBlock(cin, cout, downsample=down, sn_eps=sn_eps))
            blocks += [DeepDBlock(cout, cout, downsample=False, sn_eps=sn_eps) for _ in range(depth - 1)]
            if attn and self.attn_after < 0 and res[i] == attn:
                self.attn_after = len(blocks) - 1
        self.blocks = nn.ModuleList(blocks)
        self.attention = SelfAttention(widths[res.index(attn) + 1], sn_eps=sn_eps) if attn else None
        self.head = _ProjectionHead(widths[-1], n_classes, sn_eps=sn_eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (N, in_channels, R, R) float in [-1, 1], y: (N,) int64 class ids -> logits (N, 1)."""
        h = self.stem(x)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.attn_after:
                h = self.attention(h)
        return self.head(h, y)


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------


def make_generator(arch: str, resolution: int, *, ch: int, attn: int, dim_z: int, shared_dim: int, n_classes: int,
                   depth: int, sn_eps: float, bn_eps: float, out_channels: int = 3, init: bool = True) -> nn.Module:
    """BigGAN ("biggan", depth must be 1) or BigGAN-deep ("biggan-deep") G at 32, 64, 128 or 256.

    Paper ImageNet 128 configs (official launch scripts): biggan ch 96, dim_z 120; biggan-deep ch 128,
    depth 2, dim_z 128; both attn 64, shared_dim 128, sn_eps 1e-6, bn_eps 1e-5. attn = 0: no attention.
    The result's `dim_z` is the size of z it takes (BigGAN rounds dim_z down to a multiple of the
    number of z chunks). `init=False` skips the orthogonal init (e.g. to count parameters quickly).
    Parameter counts equal the official code's for the same config (e.g. BigGAN 128x128, ch 96:
    G 70,433,988, D 87,982,370).
    """
    _check_arch(arch, resolution)
    _check_common(arch, ch, depth, n_classes)
    _check_attn(arch, resolution, attn, "G")
    if dim_z < 1 or shared_dim < 1 or out_channels < 1:
        raise ConfigError(f"dim_z, shared_dim and out_channels must be positive, "
                          f"got {dim_z}, {shared_dim}, {out_channels}")
    if arch == "biggan":
        G = BigGANGenerator(resolution, ch, attn, dim_z, shared_dim, n_classes, sn_eps, bn_eps, out_channels)
    else:
        G = BigGANDeepGenerator(resolution, ch, attn, dim_z, shared_dim, n_classes, depth, sn_eps, bn_eps, out_channels)
    if init:
        orthogonal_init_(G)
    return G


def make_discriminator(arch: str, resolution: int, *, ch: int, attn: int, n_classes: int, depth: int, sn_eps: float,
                       in_channels: int = 3, init: bool = True) -> nn.Module:
    """BigGAN ("biggan", depth must be 1) or BigGAN-deep ("biggan-deep") projection D at 32 ... 256.

    Paper ImageNet 128 configs: biggan ch 96; biggan-deep ch 128, depth 2; both attn 64, sn_eps 1e-6.
    `init=False` skips the orthogonal init.
    """
    _check_arch(arch, resolution)
    _check_common(arch, ch, depth, n_classes)
    _check_attn(arch, resolution, attn, "D")
    if in_channels < 1:
        raise ConfigError(f"in_channels must be positive, got {in_channels}")
    if arch == "biggan":
        D = BigGANDiscriminator(resolution, ch, attn, n_classes, sn_eps, in_channels)
    else:
        D = BigGANDeepDiscriminator(resolution, ch, attn, n_classes, depth, sn_eps, in_channels)
    if init:
        orthogonal_init_(D)
    return D
