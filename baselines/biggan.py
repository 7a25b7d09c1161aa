"""BigGAN / BigGAN-deep training (Brock et al., ICLR 2019) and the `biggan` method, NSBGAN's
pixel-space baseline: the config, hinge loss with gradient accumulation over micro-batches, the EMA
of G, truncation, and the stage. The networks are in baselines.biggan_nets."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Iterator, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.biggan_nets import ARCHS, RESOLUTIONS, attention_resolutions, make_discriminator, make_generator
from baselines.dcgan import forward_macs
from harness.config import MethodConfig
from harness.errors import ConfigError
from harness.images import signed_to_uint8, uint8_to_signed
from harness.method import Batch, EvalContext, Method, Stage, StageContext
from harness.metrics.scorer import generator_metrics
from harness.registry import register

# Paper defaults are the NSBGAN authors' own pixel-space baseline. NSBGAN Sec. 5: "To train the BigGAN
# baseline model at the native resolution of 256 x 256, we use the same learning rates as for the
# NOT-SO-BIGGAN sampler and a recommended batch size of 2048" and "we accumulated gradients over 32
# mini-batches". The rest is their launch script, cited below as "B:" (hanseungwook/BigGAN-PyTorch
# scripts/launch_BigGAN_deep_baseline_bs64x32.slurm, the train_baseline.py command at l.66-84).
ARCH_DEFAULTS = {  # what ch / dim_z = None resolve to (ajbrock/BigGAN-PyTorch launch scripts)
    "biggan": {"ch": 96, "dim_z": 120},  # launch_BigGAN_bs256x8.sh: --G_ch 96 --D_ch 96 --dim_z 120
    "biggan-deep": {"ch": 128, "dim_z": 128},  # launch_BigGAN_deep.sh: --G_ch 128 --D_ch 128 --dim_z 128
}


@dataclass(frozen=True)
class BigGanConfig(MethodConfig):
    arch: Literal["biggan", "biggan-deep"] = "biggan-deep"  # B: --model BigGANdeep
    resolution: int = 256  # NSBGAN Sec. 5: the pixel-space baseline is trained at 256x256 (B: IN256_hdf5)
    ch: int | None = None  # G and D width; None: the arch's (B: --G_ch 128 --D_ch 128; biggan: 96)
    # resolution of self-attention in G and D; 0: none; None: 64 (B: --G_attn 64 --D_attn 64), or at
    # resolutions where 64 is no block resolution of D (32, 64) the largest that is
    attn: int | None = None
    dim_z: int | None = None  # None: the arch's (B: --dim_z 128; biggan: 120)
    shared_dim: int = 128  # B: --shared_dim 128 (--G_shared --hier)
    n_classes: int = 0  # 0: the dataset's own classes (ImageNet: 1000)
    depth: int = 2  # BigGAN-deep blocks per resolution (B: --G_depth 2 --D_depth 2); biggan uses 1
    batch_size: int = 64  # one micro-batch, all processes together (B: --batch_size 64)
    accumulate: int = 32  # micro-batches per optimiser step (B: --num_G_accumulations 32 --num_D_accumulations 32)
    # How the micro-batches are accumulated. "interleaved": the authors' baseline loop (train_baseline.py
    # l.182-262): per micro-batch a D forward/backward then a G forward/backward, D steps at the last D
    # micro-step, G at the last G micro-step (so G's first accumulate - 1 micro-steps see the D of before
    # the step), and the EMA is updated at every micro-step. "ajbrock": BigGAN-PyTorch's
    # GAN_training_function (train_fns.py l.20-92, the BigGAN paper's protocol and NSBGAN's samplers'):
    # all D micro-steps, D steps, then all G micro-steps, G steps, one EMA update.
    accumulation: Literal["interleaved", "ajbrock"] = "interleaved"
    lr_g: float = 1e-4  # B: --G_lr 1e-4 (NSBGAN Sec. 5: the sampler's)
    lr_d: float = 4e-4  # B: --D_lr 4e-4
    betas: tuple[float, float] = (0.0, 0.999)  # B: --G_B1 0 --D_B1 0 (defaults) --G_B2 0.999 --D_B2 0.999
    adam_eps: float = 1e-6  # B: --adam_eps 1e-6
    sn_eps: float = 1e-6  # B: --SN_eps 1e-6
    bn_eps: float = 1e-5  # B: --BN_eps 1e-5
    num_d_steps: int = 1  # B: --num_D_steps 1 (the BigGAN paper uses 2 at 128x128)
    ema_decay: float = 0.9999  # B: --ema (default --ema_decay 0.9999)
    ema_start: int = 20_000  # B: --ema_start 20000: before it the EMA copies G
    truncation_mode: Literal["scale", "truncnorm"] = "scale"  # see sample_z
    standing_stats: int = 0  # >0: re-estimate G's BN statistics over this many batches before sampling
    # (reference --use_standing_stats --num_standing_accumulations 16); 0: off, as the launch scripts
    iterations: int = 0  # optimiser steps to stop at (0: the budget alone ends training)
    collapse_steps: int = 0  # >0: D's hinge loss 0 on reals and fakes this many steps in a row = collapse
    amp: Literal["fp32", "bf16"] = "fp32"  # both papers trained in fp32; bf16 autocast is a speed option
    eval_batch_size: int = 50
    # the baseline's data: CenterCropLongEdge + Resize(256) (hanseungwook/BigGAN-PyTorch
    # create_hdf5_dataset_baseline.py:53-54, the IN256_hdf5 of launch_BigGAN_deep_baseline_bs64x32.slurm)
    data_options: str = "crop=long-edge"
    # NSBGAN's FIDs were computed with a TensorFlow Inception implementation that was not released
    # (not-so-biggan-decoder README l.118): clean-fid's legacy_tensorflow resize is the nearest
    # reproducible one (harness.metrics.fid); REPRODUCE.md names the deviation
    fid_mode: Literal["clean", "legacy_tensorflow"] = "legacy_tensorflow"

    def resolved(self, field_name: str) -> int:
        """`ch`, `dim_z` or `attn`, with None replaced by its default (see the fields)."""
        value = getattr(self, field_name)
        if value is not None:
            return value
        if field_name == "attn":
            return max(r for r in self.attention_choices() if r <= 64)
        return ARCH_DEFAULTS[self.arch][field_name]

    def attention_choices(self) -> tuple[int, ...]:
        """The resolutions where both G and D have a block, i.e. the valid non-zero `attn`."""
        d = set(attention_resolutions(self.arch, self.resolution, "D"))
        return tuple(r for r in attention_resolutions(self.arch, self.resolution, "G") if r in d)

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"arch must be one of {', '.join(ARCHS)}, got '{self.arch}'")
        if self.resolution not in RESOLUTIONS:
            raise ConfigError(f"resolution must be one of {', '.join(map(str, RESOLUTIONS))}, got {self.resolution}")
        if self.attn and self.attn not in self.attention_choices():
            ok = ", ".join(map(str, self.attention_choices()))
            raise ConfigError(f"attn {self.attn} is not a block resolution of {self.arch} G and D at {self.resolution} "
                              f"(one of {ok}, or 0 for none)")
        if self.accumulate < 1:
            raise ConfigError(f"accumulate must be at least 1, got {self.accumulate}")
        if self.accumulation == "interleaved" and self.num_d_steps != 1:
            raise ConfigError(f"accumulation=interleaved (the authors' baseline loop) takes one D step per G step, "
                              f"got num_d_steps={self.num_d_steps}: set accumulation=ajbrock")
        for name in ("ch", "dim_z"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1 (or unset for the arch's default), got {getattr(self, name)}")
        for name in ("n_classes", "iterations", "standing_stats", "collapse_steps", "ema_start"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more, got {getattr(self, name)}")
        for name in ("batch_size", "num_d_steps", "shared_dim", "depth", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr_g", "lr_d", "adam_eps", "sn_eps", "bn_eps"):
            if not getattr(self, name) > 0 or not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name} must be a positive number, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"ema_decay and betas must lie in [0, 1), got {self.ema_decay}, {list(self.betas)}")


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's `loss_hinge_dis`: (mean relu(1 - D(x)), mean relu(1 + D(G(z))))."""
    return F.relu(1.0 - real).mean(), F.relu(1.0 + fake).mean()


def hinge_g_loss(fake: torch.Tensor) -> torch.Tensor:
    """The reference's `loss_hinge_gen`: -mean D(G(z))."""
    return -fake.mean()


def _at_least_fp32(logits: torch.Tensor) -> torch.Tensor:
    """D's logits for the loss: bf16 autocast's in float32, float64 (the reference checks) kept."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def d_backward(G: nn.Module, D: nn.Module, micro: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
               accumulations: int | None = None) -> dict[str, torch.Tensor]:
    """Accumulate D's gradients over micro-batches (x real in [-1, 1], y real, z, y fake); each
    micro-loss is divided by the number of micro-batches of the optimiser step (`accumulations`,
    default these), so the sum equals the big batch's mean loss. G runs without gradients; reals and
    fakes go through D in one forward (the reference without --split_D). Only one micro-batch of
    activations is alive at a time. Returns the mean (detached) loss parts of these micro-batches on
    the device, without a host sync."""
    k = accumulations or len(micro)
    real_sum, fake_sum = 0.0, 0.0
    for x, y, z, y_fake in micro:
        with torch.no_grad():
            fake = G(z, y_fake)
        out = _at_least_fp32(D(torch.cat([fake, x.to(fake.dtype)]), torch.cat([y_fake, y])))
        loss_real, loss_fake = hinge_d_loss(out[len(z):], out[:len(z)])
        ((loss_real + loss_fake) / k).backward()
        real_sum = real_sum + loss_real.detach()
        fake_sum = fake_sum + loss_fake.detach()
    return {"loss_d_real": real_sum / len(micro), "loss_d_fake": fake_sum / len(micro)}


def g_backward(G: nn.Module, D: nn.Module, micro: list[tuple[torch.Tensor, torch.Tensor]],
               accumulations: int | None = None) -> torch.Tensor:
    """Accumulate G's gradients over micro-batches of (z, y fake), each loss / `accumulations`
    (default len(micro)); D's parameters get no gradient (the reference toggles requires_grad off).
    Returns the mean loss of these micro-batches."""
    k = accumulations or len(micro)
    total = 0.0
    flags = [p.requires_grad for p in D.parameters()]
    for p in D.parameters():
        p.requires_grad_(False)
    try:
        for z, y in micro:
            loss = hinge_g_loss(_at_least_fp32(D(G(z, y), y)))
            (loss / k).backward()
            total = total + loss.detach()
    finally:
        for p, flag in zip(D.parameters(), flags):
            p.requires_grad_(flag)
    return total / len(micro)


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, decay: float) -> None:
    """target = decay * target + (1 - decay) * source over parameters and floating buffers (BN
    statistics, SN's u), the reference's `ema.update`; integer buffers are copied. decay 0 copies."""
    src = dict(source.named_parameters()) | dict(source.named_buffers())
    for name, t in list(target.named_parameters()) + list(target.named_buffers()):
        s = src[name]
        if t.is_floating_point():
            t.lerp_(s.to(t.dtype), 1.0 - decay)
        else:
            t.copy_(s)


def ema_decay_at(itr: int, cfg: BigGanConfig) -> float:
    """The reference's rule (BigGAN-PyTorch utils.ema.update: `if itr and itr < self.start_itr`): at
    optimiser step `itr` (counted from 1) before ema_start the EMA copies G, then decays; at itr 0
    (the interleaved loop's micro-steps before its first optimiser step) it decays."""
    return 0.0 if itr and itr < cfg.ema_start else cfg.ema_decay


def sample_z(n: int, dim_z: int, truncation: float, mode: str, generator: torch.Generator) -> torch.Tensor:
    """(n, dim_z) latents on the CPU. `scale` (the reference's and NSBGAN's "truncation"): z ~
    N(0, truncation^2). `truncnorm` (the BigGAN paper's truncation trick, Sec. 3.1): z ~ N(0, 1)
    conditioned on |z| <= truncation, drawn exactly by inverse-CDF sampling (the paper resamples
    the values outside the range: the same distribution, without a loop that at truncation 0.01
    would take ~100 rounds)."""
    if not truncation > 0:
        raise ValueError(f"truncation must be positive, got {truncation}")
    if mode == "scale":
        return torch.randn(n, dim_z, generator=generator, dtype=torch.float64).float() * truncation
    if mode != "truncnorm":
        raise ValueError(f"truncation_mode must be scale or truncnorm, got '{mode}'")
    lo = torch.special.ndtr(torch.tensor(-truncation, dtype=torch.float64))
    u = torch.rand(n, dim_z, generator=generator, dtype=torch.float64) * (1 - 2 * lo) + lo
    return torch.special.ndtri(u).clamp_(-truncation, truncation).float()


@torch.no_grad()
def standing_statistics(G: nn.Module, dim_z: int, n_classes: int, batches: int, batch_size: int,
                        device: torch.device, generator: torch.Generator) -> None:
    """Re-estimate every BatchNorm's running statistics of G as the plain average over `batches`
    forward passes in train mode (the reference's `accumulate_standing_stats`), then eval mode."""
    norms = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    G.train()
    try:
        for _ in range(batches):
            z = torch.randn(batch_size, dim_z, generator=generator).to(device)
            y = torch.randint(n_classes, (batch_size,), generator=generator).to(device)
            G(z, y)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        G.eval()


class BigGanStage(Stage):
    """Class-conditional BigGAN / BigGAN-deep with hinge loss, gradient accumulation and an EMA of G.

    One loop step is one optimiser step of D (`num_d_steps` of them) and then of G, over the
    effective batch `batch_size x accumulate`: the loop draws that many real images at once (as the
    reference's loader does: batch_size x num_D_accumulations x num_D_steps) and the step splits them
    into micro-batches, each with fresh z and fresh fake labels. Under torchrun each process gets its
    share of every micro-batch, and the gradient average happens once, at the optimiser step.
    BatchNorm statistics are per micro-batch, as in the reference (no cross-micro-batch BN).
    The budget clock, checkpoints and evaluations therefore all fall on optimiser-step boundaries,
    and the losses returned are means over the effective batch.

    `real(images)` maps the data to what D sees, (N, C, R, R) in [-1, 1]; subclasses (NSBGAN's
    sampler on wavelet latents) override it and use `generate` for G's raw outputs.
    """

    name = "gan"
    best_metric = ("fid", "min")

    def __init__(self, cfg: BigGanConfig, name: str = "gan", channels: int = 3):
        self.cfg, self.name, self.channels = cfg, name, channels
        self.batch_size = cfg.batch_size * cfg.accumulate * cfg.num_d_steps
        self.max_steps = cfg.iterations or None
        self.G: nn.Module | None = None  # built in init
        self.steps = 0  # optimiser steps taken
        self.flat_steps = 0  # consecutive steps with a saturated D (collapse detection)

    # --- Stage ---
    def init(self, ctx: StageContext) -> None:
        cfg = self.cfg
        self.device = ctx.device
        self.n_classes = cfg.n_classes or max(1, ctx.data.num_classes)
        if ctx.data.num_classes > self.n_classes:
            raise ConfigError(f"the data has {ctx.data.num_classes} classes but n_classes is {self.n_classes}")
        self.dim_z_asked = cfg.resolved("dim_z")
        with torch.device(ctx.device):  # built where it runs, G then D, from the RNG state the loop seeded
            self.G = make_generator(cfg.arch, cfg.resolution, ch=cfg.resolved("ch"), attn=cfg.resolved("attn"),
                                    dim_z=self.dim_z_asked, shared_dim=cfg.shared_dim, n_classes=self.n_classes,
                                    depth=cfg.depth if cfg.arch == "biggan-deep" else 1, sn_eps=cfg.sn_eps,
                                    bn_eps=cfg.bn_eps, out_channels=self.channels)
            self.D = make_discriminator(cfg.arch, cfg.resolution, ch=cfg.resolved("ch"), attn=cfg.resolved("attn"),
                                        n_classes=self.n_classes, depth=cfg.depth if cfg.arch == "biggan-deep" else 1,
                                        sn_eps=cfg.sn_eps, in_channels=self.channels)
        self.dim_z = self.G.dim_z
        self.cuda = ctx.device.type == "cuda"
        if self.cuda:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.G_ema = copy.deepcopy(self.G).eval()
        for p in self.G_ema.parameters():
            p.requires_grad_(False)
        adam = dict(betas=cfg.betas, eps=cfg.adam_eps, fused=self.cuda)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, **adam)
        self.cost = self._cost()

    def modules(self) -> list[nn.Module]:
        return [self.G, self.D, self.G_ema]

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt_g, self.opt_d]

    def precision(self, device: torch.device) -> str:
        return self.cfg.amp  # bf16 autocast on any device

    def describe(self) -> dict:
        return dict(self.cost)

    def _cost(self) -> dict:
        """Parameters (as the reference counts them: G without its EMA copy) and multiply-adds of
        one G and one D forward, in eval mode on zero inputs (nothing random is drawn)."""
        z = torch.zeros(1, self.dim_z, device=self.device)
        y = torch.zeros(1, dtype=torch.long, device=self.device)
        x = torch.zeros(1, self.channels, self.cfg.resolution, self.cfg.resolution, device=self.device)
        self.G.eval()
        self.D.eval()
        try:
            g_macs, d_macs = forward_macs(self.G, z, y), forward_macs(self.D, x, y)
        finally:
            self.G.train()
            self.D.train()
        return {"g_params": sum(p.numel() for p in self.G.parameters()),
                "d_params": sum(p.numel() for p in self.D.parameters()), "g_macs": g_macs, "d_macs": d_macs,
                "arch": self.cfg.arch, "ch": self.cfg.resolved("ch"), "attn": self.cfg.resolved("attn"),
                "dim_z": self.dim_z, "n_classes": self.n_classes,
                "effective_batch": self.cfg.batch_size * self.cfg.accumulate, "precision": self.cfg.amp}

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp == "bf16")

    def real(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of uint8 images -> what D sees as real, (N, C, R, R) float in [-1, 1]."""
        x = uint8_to_signed(images)
        return x.contiguous(memory_format=torch.channels_last) if self.cuda else x

    def _fakes(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh z ~ N(0, 1) and uniform fake labels for one micro-batch, on the device (no sync)."""
        return (torch.randn(n, self.dim_z, device=self.device),
                torch.randint(self.n_classes, (n,), device=self.device))

    def train_step(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        self.G.train()
        self.D.train()
        micro = cfg.accumulate
        xs = self.real(batch.images).chunk(micro * cfg.num_d_steps)
        ys = batch.labels.chunk(micro * cfg.num_d_steps)
        n = len(xs[0])
        with self._autocast():
            if cfg.accumulation == "interleaved":
                parts, loss_g = self._interleaved(xs, ys, n)
            else:
                for d_step in range(cfg.num_d_steps):
                    self.opt_d.zero_grad(set_to_none=True)
                    chunks = range(d_step * micro, (d_step + 1) * micro)
                    parts = d_backward(self.G, self.D, [(xs[i], ys[i], *self._fakes(n)) for i in chunks])
                    self.opt_d.step()
                self.opt_g.zero_grad(set_to_none=True)
                loss_g = g_backward(self.G, self.D, [self._fakes(n) for _ in range(micro)])
                self.opt_g.step()
                self.steps += 1
                ema_update(self.G_ema, self.G, ema_decay_at(self.steps, cfg))
        # device tensors, unread: the loop reads every step's losses in one transfer per train line
        out = {"loss_d_real": parts["loss_d_real"], "loss_d_fake": parts["loss_d_fake"], "loss_g": loss_g.detach()}
        out["loss_d"] = out["loss_d_real"] + out["loss_d_fake"]
        if cfg.collapse_steps:  # a saturated D for collapse_steps steps is reported as a non-finite
            flat = torch.as_tensor(self.flat_steps, device=out["loss_d"].device)  # "collapse" loss, so
            self.flat_steps = torch.where(out["loss_d"] == 0, flat + 1, 0)  # that the loop marks it diverged
            out["collapse"] = torch.where(self.flat_steps >= cfg.collapse_steps, float("inf"), 0.0)
        return out

    def _interleaved(self, xs, ys, n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The authors' baseline loop (train_baseline.py l.196-258) over one optimiser step: per
        micro-batch a D micro-step, then a G micro-step, each with fresh z and fake labels; D steps
        after its last micro-step, G after its; the EMA follows G at every micro-step."""
        k = self.cfg.accumulate
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        real = fake = loss_g = 0.0
        for i in range(k):
            parts = d_backward(self.G, self.D, [(xs[i], ys[i], *self._fakes(n))], accumulations=k)
            real, fake = real + parts["loss_d_real"], fake + parts["loss_d_fake"]
            if i == k - 1:
                self.opt_d.step()
            loss_g = loss_g + g_backward(self.G, self.D, [self._fakes(n)], accumulations=k)
            if i == k - 1:
                self.opt_g.step()
                self.steps += 1  # the reference's itr, incremented after G's step
            ema_update(self.G_ema, self.G, ema_decay_at(self.steps, self.cfg))
        return {"loss_d_real": real / k, "loss_d_fake": fake / k}, loss_g / k

    @torch.no_grad()
    def generate(self, n: int, truncation: float = 1.0, seed: int = 0,
                 labels: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
        """n outputs of the EMA generator in eval mode, in chunks of `eval_batch_size`:
        (k, C, R, R) float in [-1, 1] on the stage's device. z from `sample_z` with the config's
        truncation_mode, labels uniform over the classes (or `labels`), both from a CPU generator
        seeded with `seed`, so a seed gives the same samples on any device. With `standing_stats`,
        G's BN statistics are re-estimated first."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        if self.cfg.standing_stats:
            standing_statistics(self.G_ema, self.dim_z, self.n_classes, self.cfg.standing_stats,
                                self.cfg.eval_batch_size, self.device, torch.Generator().manual_seed(seed + 1))
        self.G_ema.eval()
        y_all = labels if labels is not None else torch.randint(self.n_classes, (n,), generator=gen)
        for start in range(0, n, self.cfg.eval_batch_size):
            k = min(self.cfg.eval_batch_size, n - start)
            z = sample_z(k, self.dim_z, truncation, self.cfg.truncation_mode, gen).to(self.device)
            with self._autocast():
                yield self.G_ema(z, y_all[start:start + k].to(self.device)).float()

    @torch.no_grad()
    def sample(self, n: int, truncation: float = 1.0, seed: int = 0, device: torch.device | None = None,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """n samples as (n, 3, R, R) uint8 on the CPU (a harness.method.Sampler), see `generate`."""
        if device is not None and torch.device(device).type != self.device.type:
            raise ValueError(f"stage {self.name} runs on {self.device}, not {device}")
        out = [signed_to_uint8(x).cpu() for x in self.generate(n, truncation, seed, labels)]
        return torch.cat(out) if out else torch.empty(0, 3, self.cfg.resolution, self.cfg.resolution, dtype=torch.uint8)

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        ctx.save_grid(self.sample(64, seed=1234), "samples")
        return generator_metrics(ctx, self.sample)

    def state_dict(self) -> dict:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "steps": self.steps,
                "flat_steps": int(self.flat_steps)}

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.steps, self.flat_steps = int(state["steps"]), int(state["flat_steps"])


# NSBGAN Sec. 5: the pixel-space baseline at 256x256 with "64 x 32" accumulation, 168 h, FID of
# 50k samples every 6 h of training (the same schedule as NSBGAN's sampler).
BIGGAN_CONFIG = BigGanConfig()


# Sec. 5: "The baseline model trains with eight GPUs" (the released script requests four); FID and IS
# as NSBGAN's Fig. 3 reports them, KID added
@register("biggan", config=BIGGAN_CONFIG, paper="not-so-biggan", paper_data="imagenet 256x256",
          table="Fig. 3 (BigGAN baseline)", eval_every="6h", eval_samples=50_000, paper_devices=8,
          metrics="fid,is,kid")
def biggan(cfg: BigGanConfig) -> Method:
    """Pixel-space BigGAN baseline of NSBGAN: 256x256, batch 64 x 32 accumulations; --set arch=biggan-deep."""
    stage = BigGanStage(cfg)
    return Method(stages=[stage], sample=stage.sample)
