"""Octave and soft-octave convolutions in DCGAN / LSGAN / WGAN (Durall et al., VISAPP 2021).

An octave feature map is a pair (high, low): `1 - alpha` of the channels at full resolution and
`alpha` of them at half resolution (Sec. 2.3, Eq. 2, after Chen et al. 2019); soft octave convolutions
weight the two bands by a schedule over training. The networks are the baselines' (`baselines/dcgan.py`):
`OctaveBlocks` swaps the blocks, so `variant=base` builds exactly the vanilla DCGAN / LSGAN / WGAN.
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
from harness.rundir.atomic import atomic_path
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
    """Octave convolution with the four paths H->H, H->L (2x2 average pooling, then conv), L->H (conv,
    then nearest 2x upsampling) and L->L; stride 1, 'same' padding. The first layer of a network takes
    a plain tensor (alpha_in = 0), the last one returns a plain tensor (alpha_out = 0).

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
    and are saved with it), set by the training stage from the schedule (beta_H(t), beta_L(t),
    Fig. 9); 1 and 1 give OctConv2d.

    Weighting the bands a conv *reads* (as in Fig. 3) is exactly the official code, which multiplies each block's
    output bands (after BN and activation) by the betas before the next block's conv: the upsampling /
    pooling in between is linear and commutes with the scaling. Weighting a conv's output before its
    BatchNorm instead would be undone by the normalisation."""

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


def official_epoch_rule(x: float, epochs: int) -> tuple[float, float]:
    """The one beta schedule of the official code: in epoch e (0-based, train.py line 126
    `for epoch in range(nb_epochs)`) of E = nb_epochs (50 in gan.sh / lsgan.sh / wgan.sh),
    freq_weight = (e + 1) / E (train.py line 157) and `weighting` (dcgan.py lines 230-241 for D,
    283-294 for G) uses beta_H = 0.7 if freq_weight > 0.5 else freq_weight + 0.2, beta_L = 1 - beta_H:
    beta_H = min(0.2 + (e + 1) / E, 0.7), constant within an epoch (of 50: 0.22 in the first, 0.7
    from the 25th, e = 24, on).

    x: training progress in [0, 1] (epochs done / E, counting the current batch); e is the epoch
    that contains x. The tolerance keeps x = k / E (the last batch of epoch k-1) in epoch k-1
    despite rounding in epochs / E * E."""
    e_plus_1 = max(1, math.ceil(x * epochs - 1e-9))
    beta_h = min(0.2 + e_plus_1 / epochs, 0.7)
    return beta_h, 1.0 - beta_h


# Fig. 9 is a plot without numbers, and the official code has one schedule only (official_epoch_rule),
# which it does not name: whether it is Fig. 9a or 9b is not known. The two point lists below are
# therefore reconstructions (provenance "reconstructed"), not values read off the figure. x is training
# progress in [0, 1]; the curves are piecewise linear through the points.
# Ramp (Fig. 9a, Sec. 4.2): "low frequency signals ... are learnt at the beginning, and after a certain
# time the high frequency parts ... start to appear and gain more importance". The text fixes only the
# direction; the values (0.2 -> 0.7, reached at half of training, then constant) and the coupling
# beta_L = 1 - beta_H are the official code's epoch rule made continuous (within 1 / E of it): the
# assumption is that the code's schedule is the ramp, the paper's first strategy.
RAMP_BETA_H: Points = ((0.0, 0.2), (0.5, 0.7), (1.0, 0.7))
RAMP_BETA_L: Points = ((0.0, 0.8), (0.5, 0.3), (1.0, 0.3))
# Combination (Fig. 9b): the ramp "might be too harsh as the role played by the low and high
# frequencies is too insignificant at certain training stages", so the combination is "a
# trade-off between frequency components". No number of it is published anywhere; every value here
# is ours. We keep the ramp's direction (low first, high later) but never let a band fall below half
# weight: beta_H 0.5 -> 1 over the first half while beta_L stays 1, then beta_L 1 -> 0.5 over the
# second half (not coupled); H:L goes 1:2 -> 1:1 -> 2:1.
COMBI_BETA_H: Points = ((0.0, 0.5), (0.5, 1.0), (1.0, 1.0))
COMBI_BETA_L: Points = ((0.0, 1.0), (0.5, 1.0), (1.0, 0.5))

# Fig. 7 caption: OCT alpha 0.5, LOW alpha 0.99, RAMP / COMBI soft alpha 0.5; `official` is the
# official code's network (dcgan.py lines 206-294: alpha 0.5 everywhere, soft weighting) and schedule
VARIANT_ALPHA = {"base": 0.0, "oct": 0.5, "low": 0.99, "ramp": 0.5, "combi": 0.5, "official": 0.5}
RECONSTRUCTED_POINTS = {"ramp": (RAMP_BETA_H, RAMP_BETA_L), "combi": (COMBI_BETA_H, COMBI_BETA_L)}
SOFT_VARIANTS = ("ramp", "combi", "official")
# where each soft schedule's values come from, for run.json's beta_schedule.source
SCHEDULE_SOURCE = {
    "official": "official code: train.py line 157 (freq_weight = (epoch + 1) / nb_epochs), dcgan.py lines "
                "230-241 / 283-294 (weighting); E = nb_epochs = 50 (gan.sh, lsgan.sh, wgan.sh)",
    "ramp": "reconstructed: direction from Sec. 4.2 (Fig. 9a); values from the official epoch rule, made "
            "continuous",
    "combi": "reconstructed: direction from Sec. 4.2 (Fig. 9b); values chosen by the harness (none published)",
}


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
    # ramp / combi = SoftOctConv alpha 0.5 with our reconstructions of Fig. 9a / 9b; official = SoftOctConv
    # alpha 0.5 with the official code's epoch rule (official_epoch_rule). The default is `official`:
    # the only schedule whose values are known, and what the official scripts train; COMBI is the
    # paper's proposal, but its betas here are a reconstruction (REPRODUCE.md).
    variant: Literal["base", "oct", "low", "ramp", "combi", "official"] = "official"
    alpha: float | None = None  # None: the variant's alpha (above); otherwise in (0, 1)
    # ramp/combi only: ((progress, beta), ...) replacing the reconstruction (provenance "user");
    # None: the variant's points above
    beta_h: Points | None = None
    beta_l: Points | None = None
    # What "progress" is. "epoch": epochs done / `epochs` (the paper). "budget": fraction of the budget
    # spent. "auto": the larger of the two, i.e. the fraction of whichever end stops training first:
    # identical to "epoch" when the 50 epochs fit in the budget, and still completing the schedule
    # when a fixed budget ends the run earlier (with "epoch" a short run would never leave the
    # low-frequency start). Epoch progress is deterministic; budget progress follows wall time.
    schedule_unit: Literal["auto", "epoch", "budget"] = "auto"
    # Betas for sampling at evaluation: "end" = the schedule at progress 1 (official, ramp: beta_H 0.7,
    # beta_L 0.3), which is what the official code does at every epoch: train.py line 191 calls test(),
    # which samples with generate_img (lines 106-109), i.e. self.G(z, 0.5) (dcgan.py line 198), and
    # weighting turns freq_weight 0.5 into beta_H = 0.7 (dcgan.py lines 285-288). "current" = the betas
    # of the last training step (resume-safe, they follow from the saved progress).
    eval_betas: Literal["end", "current"] = "end"
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
        return self.variant in SOFT_VARIANTS

    @property
    def schedule_provenance(self) -> str | None:
        """Where the betas come from: "official-code" (variant official), "reconstructed" (ramp,
        combi as the harness reads Fig. 9), "user" (beta_h or beta_l given); None without betas."""
        if not self.soft:
            return None
        if self.beta_h is not None or self.beta_l is not None:
            return "user"
        return "official-code" if self.variant == "official" else "reconstructed"

    def betas_at(self, x: float) -> tuple[float, float]:
        """(beta_H, beta_L) at training progress x in [0, 1]; (1, 1) for variants without betas."""
        if not self.soft:
            return 1.0, 1.0
        if self.variant == "official":
            return official_epoch_rule(x, self.epochs)
        default_h, default_l = RECONSTRUCTED_POINTS[self.variant]
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
        if given and self.variant not in RECONSTRUCTED_POINTS:
            what = "is the official code's epoch rule, not points" if self.variant == "official" else "has no betas"
            raise ConfigError(f"{', '.join(given)}: variant={self.variant} {what}; "
                              "give points with variant=ramp or variant=combi")
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


def schedule_curve(cfg: OctaveConfig, points: int = 201) -> dict | None:
    """The soft variant's schedule as run.json's `beta_schedule`: name, provenance, the progress
    unit, the source of the values and (beta_H, beta_L) sampled over progress 0..1, enough to
    draw Fig. 9 from the file; None for variants without betas. Piecewise-linear schedules are
    sampled at `points` even steps plus every breakpoint; the official epoch rule, a step function,
    at both ends of each epoch (each boundary k / E appears twice, with epoch k-1's value and then
    epoch k's), so straight lines through the samples draw its staircase exactly."""
    if not cfg.soft:
        return None
    if cfg.variant == "official":
        progress = [x for e in range(cfg.epochs) for x in (e / cfg.epochs, (e + 1) / cfg.epochs)]
        betas = [official_epoch_rule((e + 0.5) / cfg.epochs, cfg.epochs) for e in range(cfg.epochs) for _ in (0, 1)]
    else:
        default_h, default_l = RECONSTRUCTED_POINTS[cfg.variant]
        corners = [x for x, _ in (cfg.beta_h or default_h) + (cfg.beta_l or default_l)]
        progress = sorted({float(x) for x in np.linspace(0.0, 1.0, points)} | {float(x) for x in corners})
        betas = [cfg.betas_at(x) for x in progress]
    curve = {"name": cfg.variant, "provenance": cfg.schedule_provenance, "unit": cfg.schedule_unit,
             "source": SCHEDULE_SOURCE[cfg.variant], "progress": progress,
             "beta_h": [b[0] for b in betas], "beta_l": [b[1] for b in betas]}
    if curve["provenance"] == "user":
        curve["user_set"] = [k for k in ("beta_h", "beta_l") if getattr(cfg, k) is not None]
        curve["source"] = f"user: --set {', '.join(curve['user_set'])}; otherwise {curve['source']}"
    return curve


def schedule_run_fields(cfg: OctaveConfig) -> dict:
    """Top-level run.json fields of a soft variant: `beta_schedule` (schedule_curve) and
    `schedule_provenance`; none for the other variants."""
    curve = schedule_curve(cfg)
    return {} if curve is None else {"beta_schedule": curve, "schedule_provenance": curve["provenance"]}


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
    return Method(stages=[stage], sample=stage.sample, run_fields=schedule_run_fields(cfg))


def octave_config(base: GanConfig, **changes) -> OctaveConfig:
    """An OctaveConfig holding every setting of a baseline's config."""
    return OctaveConfig(**{**{f.name: getattr(base, f.name) for f in dataclasses.fields(GanConfig)}, **changes})


# Sec. 4.1: CelebA 128x128, 50 epochs, FID after every epoch on 10,000 samples (official test())
_PAPER = dict(paper="soft-octave-gans", paper_data="celeba 128x128", table="Fig. 7 / 10",
              eval_every="1epoch", eval_samples=10_000, metrics="fid,kid")  # the paper reports FID; KID added


@register("octave-dcgan", config=octave_config(DCGAN_CONFIG), **_PAPER)
def octave_dcgan(cfg: OctaveConfig) -> Method:
    """DCGAN with (soft) octave convolutions; --set variant=base|oct|low|ramp|combi|official (default official)."""
    return octave_method(cfg)


@register("octave-lsgan", config=octave_config(LSGAN_CONFIG), **_PAPER)
def octave_lsgan(cfg: OctaveConfig) -> Method:
    """LSGAN with (soft) octave convolutions; --set variant=base|oct|low|ramp|combi|official (default official)."""
    return octave_method(cfg)


@register("octave-wgan", config=octave_config(WGAN_CONFIG), **_PAPER)
def octave_wgan(cfg: OctaveConfig) -> Method:
    """WGAN (clipping) with (soft) octave convolutions; --set variant=base|oct|low|ramp|combi|official."""
    return octave_method(cfg)
