"""Octave and soft-octave convolutions in DCGAN / LSGAN / WGAN (Durall et al., VISAPP 2021).

An octave feature map is a pair (high, low): `1 - alpha` of the channels at full resolution and
`alpha` of them at half resolution (Sec. 2.3, Eq. 2, after Chen et al. 2019). `OctConv2d` mixes the
two bands through four convolutions: H->H, H->L (2x2 average pooling, then conv), L->H (conv, then
nearest 2x upsampling) and L->L. The first layer of a network takes a plain tensor (alpha_in = 0),
the last one returns a plain tensor (alpha_out = 0).

Soft octave convolutions (Sec. 3.1, Fig. 3) weight the two bands by beta_H(t) and beta_L(t), which
follow a schedule over training (Fig. 9). `SoftOctConv2d` applies them to the bands it *reads*:
beta_H X_H and beta_L X_L, as in Fig. 3. This is exactly the official code, which multiplies each
block's output bands (after BN and activation) by the betas before the next block's conv: the
upsampling / pooling in between is linear and commutes with the scaling. Weighting a conv's
output before its BatchNorm instead would be undone by the normalisation.

The networks are the baselines' (`baselines/dcgan.py`): `OctaveBlocks` swaps the blocks, so
`variant=base` builds exactly the vanilla DCGAN / LSGAN / WGAN.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.dcgan import (DCGAN_CONFIG, LSGAN_CONFIG, WGAN_CONFIG, ConvBlocks, GanConfig, GanStage, Position,
                             generator_channels)
from harness.atomic import atomic_path
from harness.errors import ConfigError
from harness.method import Batch, EvalContext, Method, StageContext
from harness.metrics.spectrum import spectrum_stats
from harness.registry import register

Bands = tuple[torch.Tensor, torch.Tensor]
Points = tuple[tuple[float, float], ...]  # ((progress, beta), ...), progress in [0, 1]


# --- layers ----------------------------------------------------------------------------------------
def band_channels(channels: int, alpha: float) -> tuple[int, int]:
    """(high, low) channel counts of a layer: low = int(alpha * channels), as Chen et al. and the
    official code split them. alpha = 0 means no low band. Raises ValueError when a split band
    would be empty (e.g. alpha 0.5 of 1 channel), since a 0-channel conv is not a band."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha} (the paper: alpha = 1 leaves no high band)")
    low = int(alpha * channels)
    high = channels - low
    if alpha > 0 and (low < 1 or high < 1):
        raise ValueError(f"alpha={alpha} splits {channels} channels into {high} high + {low} low: "
                         f"both bands need at least one channel (use more channels or another alpha)")
    return high, low


class OctConv2d(nn.Module):
    """Octave convolution with the four paths H->H, H->L, L->H, L->L; stride 1, 'same' padding.

    Input: a tensor (N, in_channels, H, W) when alpha_in = 0, else a pair (high (N, Ch, H, W),
    low (N, Cl, H/2, W/2)). Output: likewise with out_channels and alpha_out. With
    alpha_in = alpha_out = 0 only H->H exists and the layer is a plain Conv2d. Resolution changes
    (the GAN blocks' up- and downsampling) happen outside, on both bands alike.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, alpha_in: float, alpha_out: float,
                 padding: int | None = None, bias: bool = False):
        super().__init__()
        self.alpha_in, self.alpha_out = alpha_in, alpha_out
        self.in_high, self.in_low = band_channels(in_channels, alpha_in)
        self.out_high, self.out_low = band_channels(out_channels, alpha_out)
        pad = kernel_size // 2 if padding is None else padding

        def conv(cin: int, cout: int) -> nn.Conv2d | None:
            return nn.Conv2d(cin, cout, kernel_size, 1, pad, bias=bias) if cin and cout else None

        self.h2h = conv(self.in_high, self.out_high)
        self.h2l = conv(self.in_high, self.out_low)
        self.l2h = conv(self.in_low, self.out_high)
        self.l2l = conv(self.in_low, self.out_low)

    def forward(self, x: torch.Tensor | Bands) -> torch.Tensor | Bands:
        if self.in_low:
            if not isinstance(x, (tuple, list)):
                raise TypeError("this OctConv2d has alpha_in > 0 and expects a (high, low) pair")
            high, low = x
        else:
            high, low = x, None
        y_high = self.h2h(high)
        if self.l2h is not None:
            # conv at the low resolution, then upsample: a quarter of the multiply-adds
            y_high = y_high + F.interpolate(self.l2h(low), scale_factor=2, mode="nearest")
        if not self.out_low:
            return y_high
        y_low = self.h2l(F.avg_pool2d(high, 2))
        if self.l2l is not None:
            y_low = y_low + self.l2l(low)
        return y_high, y_low


class SoftOctConv2d(OctConv2d):
    """Octave convolution that reads its input bands weighted: conv(beta_H * X_H, beta_L * X_L)
    (Sec. 3.1, Eq. 3, Fig. 3). The betas are 0-dim buffers (so they follow the module's device
    and are saved with it), set by the training stage from the schedule; 1 and 1 give OctConv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, alpha_in: float, alpha_out: float,
                 padding: int | None = None, bias: bool = False):
        if alpha_in <= 0:
            raise ValueError("SoftOctConv2d weights the bands of its input: it needs alpha_in > 0")
        super().__init__(in_channels, out_channels, kernel_size, alpha_in, alpha_out, padding, bias)
        self.register_buffer("beta_h", torch.ones(()))
        self.register_buffer("beta_l", torch.ones(()))

    def forward(self, x: Bands) -> torch.Tensor | Bands:
        high, low = x
        # 0-dim float32 buffers keep a bf16 input bf16 under autocast (no type promotion)
        return super().forward((high * self.beta_h, low * self.beta_l))


def soft_layers(*modules: nn.Module) -> list[SoftOctConv2d]:
    """Every SoftOctConv2d inside `modules`."""
    return [m for module in modules for m in module.modules() if isinstance(m, SoftOctConv2d)]


def set_betas(layers: list[SoftOctConv2d], beta_h: float, beta_l: float) -> None:
    """Set beta_H and beta_L of soft octave layers in place (no host-device synchronisation)."""
    for layer in layers:
        layer.beta_h.fill_(beta_h)
        layer.beta_l.fill_(beta_l)


def _each_band(fn: nn.Module, x: torch.Tensor | Bands) -> torch.Tensor | Bands:
    return tuple(fn(t) for t in x) if isinstance(x, tuple) else fn(x)


class OctaveBlock(nn.Module):
    """resample (both bands) -> (soft) octave conv -> [BatchNorm and activation per band] -> [pool].

    Each band has its own BatchNorm (Sec. 3.2: the bands differ in size, so one BN would mix
    statistics of maps of different resolution); the activation is applied to each band.
    """

    def __init__(self, conv: OctConv2d, resample: nn.Module, act: nn.Module | None = None,
                 pool_out: bool = False):
        super().__init__()
        self.resample, self.conv = resample, conv
        self.act = act
        if act is not None:
            self.bn_h = nn.BatchNorm2d(conv.out_high)
            self.bn_l = nn.BatchNorm2d(conv.out_low) if conv.out_low else None
        self.pool = nn.AvgPool2d(2) if pool_out else None

    def forward(self, x: torch.Tensor | Bands) -> torch.Tensor | Bands:
        y = self.conv(_each_band(self.resample, x))
        if self.act is not None:
            if isinstance(y, tuple):
                y = (self.act(self.bn_h(y[0])), self.act(self.bn_l(y[1])))
            else:
                y = self.act(self.bn_h(y))
        return y if self.pool is None else self.pool(y)


class OctaveBlocks(ConvBlocks):
    """The blocks of the baselines' G and D with octave convolutions (the official architecture):
    G: nearest 2x upsampling of both bands, 3x3 OctConv, BN + ReLU per band; the first block splits
    the 4x4 projection into bands, the last one merges them into the RGB image. D: 2x2 average
    pooling of both bands, 3x3 OctConv, BN + LeakyReLU(0.2) per band; the last block merges the
    bands at 2x2 and pools to the 1x1 logit, which equals the official LastOctaveConv_ (H->H
    pooled + L->H at 1x1) because pooling a nearest-upsampled map gives the map back.
    `soft=True` uses SoftOctConv2d wherever the input is split (every conv but the first)."""

    def __init__(self, alpha: float, soft: bool = False):
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"octave blocks need 0 < alpha < 1, got {alpha} (alpha 0 is the vanilla ConvBlocks)")
        self.alpha, self.soft = alpha, soft

    def conv(self, cin: int, cout: int, alpha_in: float, alpha_out: float) -> OctConv2d:
        cls = SoftOctConv2d if self.soft and alpha_in > 0 else OctConv2d
        return cls(cin, cout, 3, alpha_in, alpha_out)

    def g_block(self, cin: int, cout: int, position: Position) -> nn.Module:
        a_in = 0.0 if position == "first" else self.alpha
        a_out = 0.0 if position == "last" else self.alpha
        act = None if position == "last" else nn.ReLU(inplace=True)
        return OctaveBlock(self.conv(cin, cout, a_in, a_out), nn.Upsample(scale_factor=2, mode="nearest"), act)

    def d_block(self, cin: int, cout: int, position: Position) -> nn.Module:
        if position == "last":
            return OctaveBlock(self.conv(cin, cout, self.alpha, 0.0), nn.AvgPool2d(2), None, pool_out=True)
        a_in = 0.0 if position == "first" else self.alpha
        return OctaveBlock(self.conv(cin, cout, a_in, self.alpha), nn.AvgPool2d(2), nn.LeakyReLU(0.2, inplace=True))


# --- beta schedules --------------------------------------------------------------------------------
def piecewise_linear(points: Points, x: float) -> float:
    """Value at `x` of the piecewise-linear function through `points` ((x0, y0), (x1, y1), ...),
    x non-decreasing; constant beyond the ends. A repeated x makes a step, taking the later value
    at the step itself."""
    if x <= points[0][0]:
        return float(points[0][1])
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x < x1:  # here x0 <= x < x1, so x1 > x0
            return float(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
    return float(points[-1][1])


def official_ramp(x: float, epochs: int) -> tuple[float, float]:
    """The official code's schedule (train.py + dcgan.py `weighting`): in epoch e (0-based) of E,
    freq_weight = (e + 1) / E and beta_H = 0.7 if freq_weight > 0.5 else freq_weight + 0.2, i.e.
    beta_H = min(0.2 + (e + 1) / E, 0.7), beta_L = 1 - beta_H; constant within an epoch.

    x: training progress in [0, 1] (epochs done / E, counting the current batch); e is the epoch
    that contains x. The tolerance keeps x = k / E (the last batch of epoch k-1) in epoch k-1
    despite rounding in epochs / E * E."""
    e_plus_1 = max(1, math.ceil(x * epochs - 1e-9))
    beta_h = min(0.2 + e_plus_1 / epochs, 0.7)
    return beta_h, 1.0 - beta_h


# Fig. 9 is a plot without numbers; these points are our reading of the text and the official code,
# NOT values digitised from the figure. x is training progress in [0, 1].
# Ramp (Fig. 9a, Sec. 4.2): "low frequency signals ... are learnt at the beginning, and after a certain
# time the high frequency parts ... start to appear and gain more importance". The official code's
# ramp, made continuous: beta_H rises 0.2 -> 0.7 over the first half and stays there, beta_L = 1 -
# beta_H (the coupling of Sec. 3.1, footnote 1): the ratio H:L goes from 1:4 to 7:3.
RAMP_BETA_H: Points = ((0.0, 0.2), (0.5, 0.7), (1.0, 0.7))
RAMP_BETA_L: Points = ((0.0, 0.8), (0.5, 0.3), (1.0, 0.3))
# Combination (Fig. 9b): the ramp "might be too harsh as the role played by the low and high
# frequencies is too insignificant at certain training stages", so the combination is "a
# trade-off between frequency components". Our reconstruction keeps the ramp's direction (low
# first, high later) but never lets a band fall below half weight: beta_H 0.5 -> 1 over the first
# half while beta_L stays 1, then beta_L 1 -> 0.5 over the second half; H:L goes 1:2 -> 1:1 -> 2:1.
COMBI_BETA_H: Points = ((0.0, 0.5), (0.5, 1.0), (1.0, 1.0))
COMBI_BETA_L: Points = ((0.0, 1.0), (0.5, 1.0), (1.0, 0.5))

VARIANT_ALPHA = {"base": 0.0, "oct": 0.5, "low": 0.99, "ramp": 0.5, "combi": 0.5}  # Fig. 7 caption
SOFT_POINTS = {"ramp": (RAMP_BETA_H, RAMP_BETA_L), "combi": (COMBI_BETA_H, COMBI_BETA_L)}


def _check_points(name: str, points: Points) -> None:
    if not points:
        raise ConfigError(f"{name} needs at least one (progress, beta) point")
    xs = [p[0] for p in points]
    if any(not 0.0 <= x <= 1.0 for x in xs) or any(b < a for a, b in zip(xs, xs[1:])):
        raise ConfigError(f"{name}: progress values must be non-decreasing in [0, 1], got {list(xs)}")
    if any(not math.isfinite(p[1]) or p[1] < 0 for p in points):
        raise ConfigError(f"{name}: betas must be finite and >= 0, got {[p[1] for p in points]}")


# --- config ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OctaveConfig(GanConfig):
    """The baselines' config (Sec. 4.1-4.2) plus the octave variant, its beta schedule and the
    spectrum of Fig. 10b."""

    # Fig. 7: base = vanilla conv, oct = OctConv alpha 0.5, low = alpha 0.99 ("we cannot set alpha to 1"),
    # ramp / combi = SoftOctConv alpha 0.5 with the betas of Fig. 9a / 9b. COMBI is the paper's proposal.
    variant: Literal["base", "oct", "low", "ramp", "combi"] = "combi"
    alpha: float | None = None  # None: the variant's alpha (above); otherwise in (0, 1)
    # ramp/combi only. "points": piecewise-linear beta_h / beta_l below; "official-ramp": the official
    # code's beta_H = min(0.2 + (e + 1) / E, 0.7), beta_L = 1 - beta_H, e the epoch (see official_ramp).
    beta_schedule: Literal["points", "official-ramp"] = "points"
    beta_h: Points | None = None  # ((progress, beta), ...); None: the variant's Fig. 9 reading above
    beta_l: Points | None = None
    # What "progress" is. "epoch": epochs done / `epochs` (the paper). "budget": fraction of the budget
    # spent. "auto": the larger of the two, i.e. the fraction of whichever end stops training first:
    # identical to "epoch" when the 50 epochs fit in the budget, and still completing the schedule
    # when a fixed budget ends the run earlier (with "epoch" a short run would never leave the
    # low-frequency start). Epoch progress is deterministic; budget progress follows wall time.
    schedule_unit: Literal["auto", "epoch", "budget"] = "auto"
    # Betas for sampling at evaluation: "current" = those of the last training step (resume-safe, they
    # follow from the saved progress); "end" = the schedule at progress 1, which is what the official
    # test() does (it samples with freq_weight 0.5, i.e. beta_H = 0.7, at every epoch).
    eval_betas: Literal["current", "end"] = "current"
    spectrum_samples: int = 1000  # Fig. 10b: 1-D spectra of generated vs real images; 0 = off
    # Evaluations that also compute the spectrum: those at which floor(epochs done) is listed (with
    # --eval-every 1epoch: the ends of these epochs), plus the final one; () = every evaluation.
    spectrum_epochs: tuple[int, ...] = ()

    @property
    def band_alpha(self) -> float:
        """The low-band fraction: `alpha` if set, else the variant's."""
        return VARIANT_ALPHA[self.variant] if self.alpha is None else self.alpha

    @property
    def soft(self) -> bool:
        return self.variant in SOFT_POINTS

    def betas_at(self, x: float) -> tuple[float, float]:
        """(beta_H, beta_L) at training progress x in [0, 1]; (1, 1) for variants without betas."""
        if not self.soft:
            return 1.0, 1.0
        if self.beta_schedule == "official-ramp":
            return official_ramp(x, self.epochs)
        default_h, default_l = SOFT_POINTS[self.variant]
        return (piecewise_linear(self.beta_h or default_h, x), piecewise_linear(self.beta_l or default_l, x))

    def validate(self) -> None:
        super().validate()
        alpha = self.band_alpha
        if self.variant == "base":
            if alpha != 0.0:
                raise ConfigError("variant=base uses vanilla convolutions: alpha must be unset (or 0)")
        else:
            if not 0.0 < alpha < 1.0:
                raise ConfigError(f"variant={self.variant} needs 0 < alpha < 1, got {alpha} "
                                  "(alpha 0 is variant=base; alpha 1 leaves no high band)")
            for channels in generator_channels(self):
                try:
                    band_channels(channels, alpha)
                except ValueError as e:
                    raise ConfigError(f"variant={self.variant}, width={self.width}: {e}") from None
        given = [k for k in ("beta_h", "beta_l") if getattr(self, k) is not None]
        if given and not self.soft:
            raise ConfigError(f"{', '.join(given)} only apply to the soft variants ramp and combi, "
                              f"not variant={self.variant}")
        if given and self.beta_schedule != "points":
            raise ConfigError(f"{', '.join(given)} are ignored by beta_schedule={self.beta_schedule}; "
                              "use beta_schedule=points")
        for k in given:
            _check_points(k, getattr(self, k))
        if self.spectrum_samples == 1 or self.spectrum_samples < 0:
            raise ConfigError("spectrum_samples must be 0 (off) or at least 2 (mean and std)")


def schedule_progress(cfg: OctaveConfig, epoch: float, budget_fraction: float) -> float:
    """Training progress in [0, 1] on the config's `schedule_unit`: epochs done / cfg.epochs,
    the budget fraction, or (auto) the larger of the two."""
    by_epoch = min(1.0, epoch / cfg.epochs)
    if cfg.schedule_unit == "epoch":
        return by_epoch
    if cfg.schedule_unit == "budget":
        return budget_fraction
    return max(by_epoch, budget_fraction)


# --- cost and spectrum -----------------------------------------------------------------------------
def spectrum_hf_gap(fake_mean: np.ndarray, real_mean: np.ndarray) -> float:
    """Mean absolute difference of two normalised 1-D spectra (`spectrum_1d`: radii 0 .. R/2)
    over the upper half of the frequencies, radii R/4 .. R/2, where the up-sampling artifacts
    of Fig. 10b show. 0 = the generated spectrum matches the real one there; units are those of
    the DC-normalised 20 log|F| profile."""
    k = (len(real_mean) - 1) // 2
    return float(np.abs(np.asarray(fake_mean)[k:] - np.asarray(real_mean)[k:]).mean())


SPECTRUM_SEED = 2021  # a fixed z for every spectrum of a run, so evaluations compare the same draws


# --- training stage --------------------------------------------------------------------------------
class OctaveGanStage(GanStage):
    """GanStage with the beta schedule (via the `before_step` hook), schedule-consistent
    sampling and the 1-D spectrum of Fig. 10b."""

    def __init__(self, cfg: OctaveConfig, blocks: ConvBlocks):
        super().__init__(cfg, blocks, before_step=self._follow_schedule)
        self.soft_convs: list = []  # found in init, once G and D are built
        self.progress_x = 0.0  # schedule progress of the last training step, in [0, 1]
        self.epoch = 0.0  # epochs done at the last training step
        self._real_spectrum: dict | None = None

    def _follow_schedule(self, G: nn.Module, D: nn.Module, batch: Batch) -> None:
        self.epoch = batch.epoch
        self.progress_x = schedule_progress(self.cfg, batch.epoch, batch.progress)
        set_betas(self.soft_convs, *self.cfg.betas_at(self.progress_x))

    def _sampling_betas(self) -> tuple[float, float]:
        return self.cfg.betas_at(1.0 if self.cfg.eval_betas == "end" else self.progress_x)

    def train_step(self, batch: Batch) -> dict[str, float]:
        out = super().train_step(batch)
        if self.soft_convs:
            out["beta_h"], out["beta_l"] = self.cfg.betas_at(self.progress_x)
        return out

    def init(self, ctx: StageContext) -> None:
        super().init(ctx)
        self.soft_convs = soft_layers(self.G, self.D)

    @torch.no_grad()
    def sample(self, n: int, truncation: float = 1.0, seed: int = 0, device: torch.device | None = None,
               batch_size: int = 256) -> torch.Tensor:
        """As GanStage.sample, with the betas set from the saved progress (not from whatever the
        buffers hold), so a resumed or reloaded stage samples exactly as the original did."""
        set_betas(self.soft_convs, *self._sampling_betas())
        try:
            return super().sample(n, truncation=truncation, seed=seed, device=device, batch_size=batch_size)
        finally:
            set_betas(self.soft_convs, *self.cfg.betas_at(self.progress_x))

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        metrics = super().evaluate(ctx)
        if self.soft_convs:
            metrics["beta_h"], metrics["beta_l"] = self._sampling_betas()
        if self._spectrum_due(ctx.final):
            metrics.update(self._spectrum(ctx))
        return metrics

    def _spectrum_due(self, final: bool) -> bool:
        if self.cfg.spectrum_samples <= 0:
            return False
        return final or not self.cfg.spectrum_epochs or math.floor(self.epoch + 1e-9) in self.cfg.spectrum_epochs

    def _spectrum(self, ctx: EvalContext) -> dict[str, float]:
        """1-D spectra of `spectrum_samples` generated and as many real training images, saved as
        samples/<stage>-<step>-spectrum.npz (mean/std per radius); returns the scalar summary."""
        n = self.cfg.spectrum_samples
        if self._real_spectrum is None or self._real_spectrum["n"] != min(n, len(ctx.data)):
            self._real_spectrum = spectrum_stats(ctx.data.first(n)[0])  # fixed data: computed once
        real = self._real_spectrum
        fake = spectrum_stats(self.sample(n, seed=SPECTRUM_SEED))
        beta_h, beta_l = self._sampling_betas()
        path = ctx.run_dir / "samples" / f"{ctx.stage}-{ctx.step:08d}-spectrum.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.savez(tmp, fake_mean=fake["mean"], fake_std=fake["std"], real_mean=real["mean"], real_std=real["std"],
                     n_fake=fake["n"], n_real=real["n"], radius=np.arange(len(real["mean"])), step=ctx.step,
                     epoch=self.epoch, beta_h=beta_h, beta_l=beta_l)
        return {"spectrum_hf_gap": spectrum_hf_gap(fake["mean"], real["mean"]), "spectrum_n": int(real["n"])}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "progress_x": self.progress_x, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.progress_x, self.epoch = float(state["progress_x"]), float(state["epoch"])
        set_betas(self.soft_convs, *self.cfg.betas_at(self.progress_x))


# --- methods ---------------------------------------------------------------------------------------
def octave_blocks(cfg: OctaveConfig) -> ConvBlocks:
    """The conv factory of a variant: the baselines' own blocks for `base`, octave ones otherwise."""
    return ConvBlocks() if cfg.variant == "base" else OctaveBlocks(cfg.band_alpha, soft=cfg.soft)


def octave_method(cfg: OctaveConfig) -> Method:
    stage = OctaveGanStage(cfg, octave_blocks(cfg))
    return Method(stages=[stage], sample=stage.sample)


def octave_config(base: GanConfig, **changes) -> OctaveConfig:
    """An OctaveConfig holding every setting of a baseline's config."""
    return OctaveConfig(**{**{f.name: getattr(base, f.name) for f in dataclasses.fields(GanConfig)}, **changes})


# Sec. 4.1: CelebA 128x128, 50 epochs, FID after every epoch on 10,000 samples (official test())
_PAPER = dict(paper="soft-octave-gans", paper_data="celeba 128x128", table="Fig. 7 / 10",
              eval_every="1epoch", eval_samples=10_000)


@register("octave-dcgan", config=octave_config(DCGAN_CONFIG), **_PAPER)
def octave_dcgan(cfg: OctaveConfig) -> Method:
    """DCGAN with (soft) octave convolutions; --set variant=base|oct|low|ramp|combi (default combi)."""
    return octave_method(cfg)


@register("octave-lsgan", config=octave_config(LSGAN_CONFIG), **_PAPER)
def octave_lsgan(cfg: OctaveConfig) -> Method:
    """LSGAN with (soft) octave convolutions; --set variant=base|oct|low|ramp|combi (default combi)."""
    return octave_method(cfg)


@register("octave-wgan", config=octave_config(WGAN_CONFIG), **_PAPER)
def octave_wgan(cfg: OctaveConfig) -> Method:
    """WGAN (clipping) with (soft) octave convolutions; --set variant=base|oct|low|ramp|combi."""
    return octave_method(cfg)
