"""DCGAN / LSGAN / WGAN with vanilla convolutions: the baselines of the soft-octave paper.

Architecture of the paper's official code (CelebA 128x128, d = 32): G projects z (100) to
512 x 4 x 4 (linear, BN, ReLU), then blocks of nearest 2x upsampling + 3x3 conv + BN + ReLU halve
the channels (512@4 -> 256@8 -> ... -> 32@64) and a last upsample + 3x3 conv gives 3@128, tanh.
D mirrors it: blocks of 2x average pooling + 3x3 conv + BN + LeakyReLU(0.2) from 3@128 to 512@4,
then pool, conv to one channel, pool to a 1x1 logit. No conv has a bias (BN follows).

Octave variants (methods/octave.py) reuse `make_generator` / `make_discriminator` with their own
`ConvBlocks`, so `variant=base` there is exactly this network.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from harness.config import MethodConfig
from harness.errors import ConfigError
from harness.images import signed_to_uint8, uint8_to_signed
from harness.method import Batch, EvalContext, Method, Stage, StageContext
from harness.metrics.scorer import generator_metrics
from harness.registry import register

Position = Literal["first", "mid", "last"]


@dataclass(frozen=True)
class GanConfig(MethodConfig):
    """Soft-octave paper, Sec. 4.1-4.2 and the official code (train.py, dcgan.py, *.sh)."""

    loss: Literal["dcgan", "lsgan", "wgan"] = "dcgan"
    resolution: int = 128  # "we crop and resize ... to 128x128 pixels"
    data_options: str = "celeba:split=all,resize=squash"  # official: all 202,599 images (train.py train_len), full frame -> 128x128 (resize_celeba.py imresize, PIL bilinear)
    z_dim: int = 100  # official code: latent_dim = 100
    width: int = 32  # official code: d = 32; G starts at 16d = 512 channels at 4x4
    batch_size: int = 64  # "We set the batch size to 64"
    epochs: int = 50  # "run the experiments for 50 epochs"
    optimizer: Literal["adam", "rmsprop"] = "adam"
    lr_g: float = 2e-4  # "the learning rate used in the implementation is 0.0002"
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)  # "Adam optimizer with beta1 = 0.5, beta2 = 0.999"
    n_critic: int = 1  # "We update the generator after every discriminator update"
    # When G steps. "fixed": after every `n_critic` D steps. "official": the official train.py loop
    # (lines 135-167, see `official_g_step`): G steps on batches whose index in the epoch is a multiple
    # of the critic count, which for WGAN is 20 for the first 50 G steps and before every 500th, else
    # n_critic. For n_critic = 1 without WGAN both give a G step after every D step.
    critic_schedule: Literal["fixed", "official"] = "fixed"
    clip: float = 0.0  # WGAN weight clipping bound (official code: 0.05); 0 = off
    # the official code trains in fp32 (no autocast in train.py); bf16 autocast on CUDA is a speed
    # option, recorded as run.json's "precision" (ignored on CPU)
    amp: Literal["fp32", "bf16"] = "fp32"

    def validate(self) -> None:
        r = self.resolution
        if r < 16 or r & (r - 1):
            raise ConfigError(f"resolution must be a power of two >= 16, got {r}")
        if self.width < 1 or self.z_dim < 1 or self.batch_size < 1 or self.epochs < 1 or self.n_critic < 1:
            raise ConfigError("width, z_dim, batch_size, epochs and n_critic must be positive")
        if not (self.lr_g > 0 and self.lr_d > 0):
            raise ConfigError(f"lr_g and lr_d must be positive, got {self.lr_g}, {self.lr_d}")
        if not all(0.0 <= b < 1.0 for b in self.betas) or self.clip < 0:
            raise ConfigError(f"betas must lie in [0, 1) and clip must be >= 0, got {list(self.betas)}, {self.clip}")
        if self.loss == "wgan" and self.clip <= 0:
            raise ConfigError("wgan needs weight clipping: set clip > 0 (paper code: 0.05)")


def generator_channels(cfg: GanConfig) -> list[int]:
    """Channels of G's feature maps from 4x4 up to R/2: 16d, 8d, ... (one per upsampling)."""
    n_up = int(math.log2(cfg.resolution // 4))
    return [max(1, cfg.width * 16 // 2**i) for i in range(n_up)]


class ConvBlocks:
    """Builds the blocks of G and D. This vanilla family uses plain convolutions on tensors;
    the octave family overrides it to work on (high, low) pairs."""

    def g_block(self, cin: int, cout: int, position: Position) -> nn.Module:
        layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False)]
        if position != "last":
            layers += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        return nn.Sequential(*layers)

    def d_block(self, cin: int, cout: int, position: Position) -> nn.Module:
        if position == "last":  # pool to 2x2, conv, pool to a 1x1 logit (official LastOctaveConv_)
            return nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.AvgPool2d(2))
        return nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                             nn.LeakyReLU(0.2, inplace=True))


class Generator(nn.Module):
    def __init__(self, cfg: GanConfig, blocks: ConvBlocks):
        super().__init__()
        ch = generator_channels(cfg)
        self.c0 = ch[0]
        self.project = nn.Sequential(nn.Linear(cfg.z_dim, ch[0] * 16, bias=False), nn.BatchNorm1d(ch[0] * 16),
                                     nn.ReLU(inplace=True))
        body = [blocks.g_block(a, b, "first" if i == 0 else "mid") for i, (a, b) in enumerate(zip(ch[:-1], ch[1:]))]
        body.append(blocks.g_block(ch[-1], 3, "last"))
        self.body = nn.Sequential(*body)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (N, z_dim) -> images (N, 3, R, R) in [-1, 1]."""
        return torch.tanh(self.body(self.project(z).view(-1, self.c0, 4, 4)))


class Discriminator(nn.Module):
    def __init__(self, cfg: GanConfig, blocks: ConvBlocks):
        super().__init__()
        ch = generator_channels(cfg)[::-1]
        body = [blocks.d_block(3, ch[0], "first")]
        body += [blocks.d_block(a, b, "mid") for a, b in zip(ch[:-1], ch[1:])]
        body.append(blocks.d_block(ch[-1], 1, "last"))
        self.body = nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, R, R) in [-1, 1] -> logits (N,)."""
        return self.body(x).reshape(-1)


def make_generator(cfg: GanConfig, blocks: ConvBlocks | None = None) -> Generator:
    return Generator(cfg, blocks or ConvBlocks())


def make_discriminator(cfg: GanConfig, blocks: ConvBlocks | None = None) -> Discriminator:
    return Discriminator(cfg, blocks or ConvBlocks())


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss on logits, as in the official code's train_D."""
    if kind == "dcgan":
        return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    if kind == "lsgan":
        return ((real - 1) ** 2).mean() + (fake ** 2).mean()
    return fake.mean() - real.mean()  # wgan critic: maximise real - fake


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator loss on D's logits of fakes (non-saturating for dcgan)."""
    if kind == "dcgan":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    if kind == "lsgan":
        return ((fake - 1) ** 2).mean()
    return -fake.mean()


def forward_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-adds of one forward pass, from FlopCounterMode: it counts 2 FLOPs per multiply-add
    of convolutions and matmuls, so this is its total / 2. Pooling, upsampling, BN, activations
    and the elementwise band sums are not counted (they are not multiply-adds of weights)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops() // 2


def network_cost(cfg: GanConfig, G: nn.Module, D: nn.Module) -> dict[str, int]:
    """Parameters and multiply-adds of one G forward (one z) and one D forward (one image at
    cfg.resolution), measured on the networks' device in eval mode (BN on running statistics,
    which are left untouched), with zero inputs so that no random numbers are drawn."""
    device = next(G.parameters()).device
    modes = G.training, D.training
    G.eval()
    D.eval()
    try:
        g_macs = forward_macs(G, torch.zeros(1, cfg.z_dim, device=device))
        d_macs = forward_macs(D, torch.zeros(1, 3, cfg.resolution, cfg.resolution, device=device))
    finally:
        G.train(modes[0])
        D.train(modes[1])
    return {"g_params": sum(p.numel() for p in G.parameters()), "d_params": sum(p.numel() for p in D.parameters()),
            "g_macs": g_macs, "d_macs": d_macs}


# train.py line 137 (WGAN only): `n_critic = 20 if g_iter < 50 or (g_iter + 1) % 500 == 0 else self.n_critic`
OFFICIAL_WARMUP_CRITIC, OFFICIAL_WARMUP_G_STEPS, OFFICIAL_CRITIC_PERIOD = 20, 50, 500


def official_critic_count(loss: str, n_critic: int, g_steps: int) -> int:
    """The critic count of the official train.py (line 137) before G step `g_steps` + 1: for WGAN 20
    while fewer than 50 G steps are done and when the next G step is a multiple of 500, else
    `n_critic` (wgan.sh: 5); for the other losses always `n_critic` (gan.sh, lsgan.sh: 1)."""
    if loss == "wgan" and (g_steps < OFFICIAL_WARMUP_G_STEPS or (g_steps + 1) % OFFICIAL_CRITIC_PERIOD == 0):
        return OFFICIAL_WARMUP_CRITIC
    return n_critic


def official_g_step(loss: str, n_critic: int, g_steps: int, batch_index: int) -> bool:
    """Whether the official loop steps G after the D step on batch `batch_index` (0-based, within
    its epoch) when `g_steps` G steps are done: `batch_idx % n_critic == 0` (train.py line 164), so
    batch 0 of every epoch steps G, and a change of critic count takes effect at the next multiple
    of the new count (not a count of D steps since the last G step)."""
    return batch_index % official_critic_count(loss, n_critic, g_steps) == 0


class GanStage(Stage):
    """Alternating D and G updates of an unconditional GAN; one step = one real batch = one D
    update, followed by a G update when the critic schedule says so (`critic_schedule`)."""

    name = "gan"
    best_metric = ("fid", "min")

    def __init__(self, cfg: GanConfig, blocks: ConvBlocks | None = None,
                 before_step: Callable[[nn.Module, nn.Module, Batch], None] | None = None):
        self.cfg = cfg
        self.blocks = blocks or ConvBlocks()
        self.G: nn.Module | None = None  # built in init
        self.D: nn.Module | None = None
        self.batch_size = cfg.batch_size
        self.before_step = before_step
        self.d_since_g = 0
        self.g_steps = 0

    def init(self, ctx: StageContext) -> None:
        self.device = ctx.device
        # G then D, from the RNG state the loop seeded: the weights depend on the seed alone
        self.G = make_generator(self.cfg, self.blocks).to(ctx.device)
        self.D = make_discriminator(self.cfg, self.blocks).to(ctx.device)
        params = dict(g=self.G.parameters(), d=self.D.parameters())
        fused = ctx.device.type == "cuda"
        if self.cfg.optimizer == "adam":
            self.opt_g = torch.optim.Adam(params["g"], lr=self.cfg.lr_g, betas=self.cfg.betas, fused=fused)
            self.opt_d = torch.optim.Adam(params["d"], lr=self.cfg.lr_d, betas=self.cfg.betas, fused=fused)
        else:
            self.opt_g = torch.optim.RMSprop(params["g"], lr=self.cfg.lr_g)
            self.opt_d = torch.optim.RMSprop(params["d"], lr=self.cfg.lr_d)
        self.batches_per_epoch = len(ctx.data) // self.cfg.batch_size  # the BatchStream's
        self.max_steps = self.cfg.epochs * self.batches_per_epoch
        self.amp = self.cfg.amp == "bf16" and ctx.device.type == "cuda"
        self.cost = network_cost(self.cfg, self.G, self.D)

    def precision(self, device: torch.device) -> str:
        return "bf16" if self.cfg.amp == "bf16" and device.type == "cuda" else "fp32"  # autocast on CUDA only

    def describe(self) -> dict:
        """Parameters and multiply-adds of G and D (the octave paper's motivation), for run.json."""
        return dict(self.cost)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp)

    def _g_step_due(self, batch: Batch) -> bool:
        """Whether G steps after this batch's D step. The official rule reads the batch's index in
        its epoch: the loop's step counts batches from the stream's start, and every epoch has
        `batches_per_epoch` of them (the stream drops the last partial batch, as train.py does)."""
        if self.cfg.critic_schedule == "official":
            return official_g_step(self.cfg.loss, self.cfg.n_critic, self.g_steps, batch.step % self.batches_per_epoch)
        return self.d_since_g >= self.cfg.n_critic

    def train_step(self, batch: Batch) -> dict[str, float]:
        self.G.train()
        self.D.train()
        if self.before_step is not None:
            self.before_step(self.G, self.D, batch)
        real = uint8_to_signed(batch.images)
        n = real.shape[0]
        with self._autocast():
            z = torch.randn(n, self.cfg.z_dim, device=self.device)
            with torch.no_grad():
                fake = self.G(z)
            loss_d = d_loss(self.cfg.loss, self.D(real).float(), self.D(fake).float())
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        if self.cfg.clip > 0:
            with torch.no_grad():
                for p in self.D.parameters():
                    p.clamp_(-self.cfg.clip, self.cfg.clip)
        out = {"loss_d": loss_d.detach()}  # unread: the loop reads the losses once per train line
        self.d_since_g += 1
        if self._g_step_due(batch):
            with self._autocast():
                z = torch.randn(n, self.cfg.z_dim, device=self.device)
                loss_g = g_loss(self.cfg.loss, self.D(self.G(z)).float())
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
            self.d_since_g = 0
            self.g_steps += 1
            out["loss_g"] = loss_g.detach()
        return out

    @torch.no_grad()
    def sample(self, n: int, truncation: float = 1.0, seed: int = 0, device: torch.device | None = None,
               batch_size: int = 256) -> torch.Tensor:
        """n samples as (n, 3, R, R) uint8 on the CPU (a harness.method.Sampler); truncation scales
        z's standard deviation. `device` must be the stage's own (None: it)."""
        if device is not None and torch.device(device).type != self.device.type:
            raise ValueError(f"stage {self.name} runs on {self.device}, not {device}")
        was_training = self.G.training
        self.G.eval()
        gen = torch.Generator(device="cpu").manual_seed(seed)
        out = []
        for start in range(0, n, batch_size):
            z = torch.randn(min(batch_size, n - start), self.cfg.z_dim, generator=gen) * truncation
            with self._autocast():
                out.append(signed_to_uint8(self.G(z.to(self.device))).cpu())
        self.G.train(was_training)
        return torch.cat(out) if out else torch.empty(0, 3, self.cfg.resolution, self.cfg.resolution, dtype=torch.uint8)

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        ctx.save_grid(self.sample(64, seed=1234), "samples")
        return generator_metrics(ctx, self.sample)

    def state_dict(self) -> dict:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "d_since_g": self.d_since_g, "g_steps": self.g_steps}

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.d_since_g, self.g_steps = int(state["d_since_g"]), int(state["g_steps"])


def gan_method(cfg: GanConfig, blocks: ConvBlocks | None = None, before_step=None) -> Method:
    stage = GanStage(cfg, blocks, before_step)
    return Method(stages=[stage], sample=stage.sample)


# The three baselines' paper configs, named so that methods/octave.py starts from exactly these.
DCGAN_CONFIG = GanConfig(loss="dcgan")
LSGAN_CONFIG = GanConfig(loss="lsgan")
# wgan.sh: --optimizer rmsprop --learning-rate 0.00005 --critic 5; train.py lines 135-167: the critic schedule
# (the paper names no WGAN critic schedule, so the official code's); dcgan.py line 243: clip 0.05
WGAN_CONFIG = GanConfig(loss="wgan", optimizer="rmsprop", lr_g=5e-5, lr_d=5e-5, n_critic=5,
                        critic_schedule="official", clip=0.05)

# Sec. 4.1: FID after every epoch; the official test() draws 10,000 samples per epoch
_PAPER = dict(paper="soft-octave-gans", paper_data="celeba 128x128", table="Fig. 4/7 (base)",
              eval_every="1epoch", eval_samples=10_000, metrics="fid,kid")  # the paper reports FID; KID added


@register("dcgan", config=DCGAN_CONFIG, **_PAPER)
def dcgan(cfg: GanConfig) -> Method:
    """DCGAN baseline: non-saturating GAN loss, Adam 2e-4 (0.5, 0.999), batch 64."""
    return gan_method(cfg)


@register("lsgan", config=LSGAN_CONFIG, **_PAPER)
def lsgan(cfg: GanConfig) -> Method:
    """LSGAN baseline: least-squares loss (a=0, b=c=1), Adam 2e-4 (0.5, 0.999), batch 64."""
    return gan_method(cfg)


@register("wgan", config=WGAN_CONFIG, **_PAPER)
def wgan(cfg: GanConfig) -> Method:
    """WGAN baseline: weight clipping 0.05, RMSprop 5e-5, the official critic schedule (5, 20 early and every 500th)."""
    return gan_method(cfg)
