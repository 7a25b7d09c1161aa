"""NOT-SO-BIGGAN: wavelet encoder and per-level UNet decoders (paper Sec. 4.1-4.2, 4.4, Table 1, Table 3).

Encoder (eq. 2): L levels of the 2-D DWT, keeping TL each time: a 256x256 image in [0, 1] becomes
TL_2, 3 x 64 x 64. Decoder level l (eq. 3) maps TL_l to TL_{l-1} (TL_0 = the image): a UNet
predicts the missing TR_l, BL_l, BR_l from TL_l and one IWT puts the four bands together. The
UNet never sees a full-size band: TL_l is split into `patch` x `patch` wavelet packets stacked on
channels (12 channels for a 64x64 TL, 48 for 128x128) and the three bands are predicted as packets
of the same size (Sec. 4.2, "until we reach the patch dimensionality of 32x32").

Levels are counted from the image, as in eq. (2)-(3): `decoder-l1` maps TL_1 (R/2) to the image
(R), `decoder-l2` maps TL_2 (R/4) to TL_1. Table 3 of the paper counts the other way: its
"level 1 decoder" has 12 shallow networks, i.e. 12 input channels = the 64 -> 128 decoder, which
is our `decoder-l2`. So Table 3's batch 128 and 288k iterations go to `decoder-l2`, its batch 64
and 232k iterations to `decoder-l1` (the larger 128 -> 256 network, 48 heads).

Each decoder is trained alone, on ground-truth TL_l of the data (Sec. 4.2: "independently train
each of the decoder networks (in a supervised manner)"), so the stages may run in parallel as
separate `harness run --stage decoder-lN` jobs into one run directory. Inputs and targets are
the raw wavelet coefficients of images in [0, 1], as in the official decoder code: TL_l lies in
[0, 2**l] and its packets up to 2**(l + depth), but BatchNorm follows the first conv, so the input
scale does not matter. The detail targets are small, and the loss (the sum of the three band MSEs)
is 4**l times the pixel MSE its errors cause up to the synthesis gain of bior2.2, which is not
orthogonal: white errors in TR or BL reach the image with 1.08x their energy, in BR with 2.07x.
(The (x - 2) / 5 normalisation in DESIGN.md is the sampler's input, not the decoders'.)

Evaluation is Table 1's reconstruction MSE in [0, 1] pixel space, on held-out and on training
images. Per stage: the image rebuilt with this level's decoder from ground-truth TL_l, every other
band ground truth (`mse_val`, `mse_train`), next to the decoder-free baseline with zero details
(`mse_lowpass_val`) and the transform's own error with all bands exact (`mse_floor_val`: 0 for
periodization, the border loss of mode `zero`). After all stages, `Method.evaluate` chains the
decoders as at sampling time, TL_L -> decoder-lL -> ... -> decoder-l1 -> image (stage `pipeline`).
Every MSE line says how it was measured (`MseProtocol`: `mse_protocol` harness | table1, `mse_clip`);
`protocol=table1` is the official evaluation (50,000 images of each split, float32, unclipped, mode zero).

The data follow the official scripts: the decoders and the pipeline's evaluation a native-resolution
CenterCrop(R) (`data_options=crop=native`), the sampler BigGAN-PyTorch's long-edge crop + resize
(`sampler_data=crop=long-edge`): two preparations of the same images (harness.data).
"""
from __future__ import annotations

import abc
import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import numpy as np
import pywt
import torch
import torch.nn as nn

from baselines.biggan import RESOLUTIONS, BigGanConfig, BigGanStage
from harness.config import apply_overrides
from harness.rundir.atomic import atomic_write_bytes
from harness.data.store import cache_root
from harness.errors import CheckpointError, ConfigError, MetricError
from harness.images import uint8_to_unit, unit_to_uint8
from harness.method import Batch, EvalContext, Method, Stage, StageContext
from harness.metrics.recon import MeanAccumulator, reconstruction_mse
from harness.metrics.scorer import generator_metrics
from harness.registry import register
from methods.unet import PacketUNet
from methods.wavelets import (MODES, dwt2, idwt2, packet_depth, packet_merge, packet_split, wavedec2,
                              waverec2)

GRID_IMAGES = 8  # originals and reconstructions in each evaluation's sample grid
TABLE1_IMAGES = 50_000  # official eval.py: 50,000 reconstructions of each of train and val


@dataclass(frozen=True)
class DecoderConfig:
    """What the wavelet and the pixel pipelines share: the decoders (entry l - 1 of the per-level
    tuples belongs to `decoder-l{l}`) and the BigGAN sampler on the latent (`sampler_*`: the
    sampler's BigGanConfig keys with a prefix, see `sampler_config`). Subclasses set the paper's
    values of their own tables."""

    resolution: int = 256  # Sec. 5: ImageNet at 256x256
    levels: int = 2  # Sec. 4.1 / Fig. 2: two levels, the sampler works on a 64x64 latent
    batch_sizes: tuple[int, ...] = (64, 64)
    iterations: tuple[int, ...] = (1, 1)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)  # Tables 3 and 4
    eps: float = 1e-8  # Tables 3 and 4
    eval_images: int = 2000  # held-out (and as many training) images per MSE, capped at the split
    eval_batch_size: int = 50
    # Both papers trained in fp32 (the official decoder scripts have no autocast or half()); "bf16" is
    # bf16 autocast for the UNets, a speed option recorded as run.json's "precision"
    amp: Literal["fp32", "bf16"] = "fp32"
    # The decoders' data: the official decoder scripts take a native-resolution CenterCrop(R), no resize
    # (not-so-biggan-decoder src/train_unet_256_real.py:41-42, train_unet_128.py:41-42; their Resize(R)
    # after the crop changes nothing). The pipeline's evaluation uses the same preparation.
    data_options: str = "crop=native"
    # The sampler's data: BigGAN-PyTorch's CenterCropLongEdge + Resize (hanseungwook/BigGAN-PyTorch
    # create_hdf5_dataset_wt.py:50-51, create_hdf5_dataset_pixel.py:53-54)
    sampler_data: str = "crop=long-edge"
    # "sum": the official decoder losses sum the per-packet MSEs (train.py:744-748) and the pixel
    # decoders use MSELoss(reduction='sum') (train_pixel.py:24); "mean" averages them. Under Adam a
    # constant factor (up to eps), but the logged loss is that factor larger with "sum".
    loss_reduction: Literal["sum", "mean"] = "sum"
    # MSE protocol. "harness": `eval_images` of each split, reconstructions clipped to [0, 1] as an image
    # would be, the configured mode and precision. "table1": the official evaluation (eval.py
    # eval_unet_128_256 + calc_nll.py): 50,000 training (a fixed random sample, as its shuffled
    # loader) and 50,000 held-out images, float32, unclipped, and for NSBGAN the zero-padded transform
    # (it sets mode=zero and eval_images=50000 for training and evaluation alike).
    protocol: Literal["harness", "table1"] = "harness"
    # FID: the NSBGAN numbers come from BigGAN-PyTorch's TF-Inception code (hanseungwook/BigGAN-PyTorch
    # inception_tf13.py, which feeds the TF graph un-resized images): clean-fid's legacy_tensorflow
    fid_mode: Literal["clean", "legacy_tensorflow"] = "legacy_tensorflow"
    # Sec. 5 "Convergence": the decoders "converge within 24-48 hours"; when the stages run one after
    # another (fewer than 4 GPUs), each decoder gets 48 h of the 168 h and the sampler the rest
    decoder_share: float = 48 / 168
    eval_truncations: tuple[float, ...] = (1.0, 0.4, 0.1, 0.01)  # Sec. 5 "Truncation Trick", Fig. 3a
    # The sampler (Sec. 5 "Hyperparameters", Table 2, and the official sampler launch script, which
    # Table 2 disagrees with in two rows: its "attention resolution" (128) and "z dim" (32) are the
    # script's dim_z (128) and attention (32) swapped, and its Adam eps 1e-8 is the script's 1e-6)
    sampler: Literal["biggan", "biggan-deep"] = "biggan-deep"  # Table 2 "best model type"
    sampler_ch: int = 128  # official script: --G_ch 128 --D_ch 128
    sampler_depth: int = 2  # Table 2: 2 resblocks per stage
    # official script: 32 (Table 2's 128 is dim_z, see above); None gives 32 at the paper's 64x64
    # latent (BigGanConfig's rule: the largest block resolution of G and D up to 64)
    sampler_attn: int | None = None
    sampler_dim_z: int = 128  # official script (Table 2's 32 is the attention resolution)
    sampler_shared_dim: int = 128  # official script
    sampler_n_classes: int = 0  # 0: the dataset's own classes
    sampler_batch_size: int = 256  # Sec. 5 / Table 2: batch 512 = the official script's 256 x 2
    sampler_accumulate: int = 2  # accumulations (--num_G_accumulations 2 --num_D_accumulations 2)
    sampler_lr_g: float = 1e-4  # Sec. 5, Table 2
    sampler_lr_d: float = 4e-4  # Sec. 5 ("4 x 10^4" is a typo for 4e-4), Table 2
    sampler_betas: tuple[float, float] = (0.0, 0.999)  # Table 2
    sampler_adam_eps: float = 1e-6  # official script (Table 2: 1e-8)
    sampler_sn_eps: float = 1e-6  # official script
    sampler_bn_eps: float = 1e-5  # official script
    sampler_num_d_steps: int = 1  # official script
    sampler_ema_decay: float = 0.9999  # official script --ema --ema_decay 0.9999
    sampler_ema_start: int = 20_000  # official script --ema_start 20000
    sampler_iterations: int = 250_000  # Table 2 "training iterations"
    sampler_truncation_mode: Literal["scale", "truncnorm"] = "scale"  # Sec. 5: truncation = z's variance
    sampler_standing_stats: int = 0
    sampler_collapse_steps: int = 0
    sampler_amp: Literal["fp32", "bf16"] = "fp32"
    sampler_eval_batch_size: int = 50
    sampler_norm_images: int = 0  # training images the latent's shift/scale are taken over (0: all)
    sampler_devices: int = 2  # Sec. 5: "We allocate two GPUs to the NOT-SO-BIGGAN sampler" (parallel layout)

    def __post_init__(self) -> None:
        if self.protocol == "table1":  # the preset fixes what the official evaluation fixed
            object.__setattr__(self, "eval_images", TABLE1_IMAGES)

    def validate(self) -> None:
        self.validate_decoders()
        # then the sampler's: its budget share (the rest) and its own checks, named with their prefix
        if not 0 < self.decoder_share * self.levels < 1:
            raise ConfigError(f"decoder_share x levels must lie in (0, 1), the sampler has the rest; got "
                              f"{self.decoder_share} x {self.levels}")
        sampler_config(self)

    def validate_decoders(self) -> None:
        """The decoders' checks (subclasses add theirs), before the sampler's."""
        r = self.resolution
        if r < 8 or r & (r - 1):
            raise ConfigError(f"resolution must be a power of two, got {r}")
        if self.levels < 1 or r >> self.levels < 1:
            raise ConfigError(f"levels must be in 1..{r.bit_length() - 1} for resolution {r}, got {self.levels}")
        check_per_level(self, ("batch_sizes", "iterations"))
        if self.lr <= 0 or self.eps <= 0 or self.eval_images < 1 or self.eval_batch_size < 1:
            raise ConfigError("lr, eps, eval_images and eval_batch_size must be positive")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas must lie in [0, 1), got {list(self.betas)}")
        if not self.eval_truncations or any(not t > 0 for t in self.eval_truncations):
            raise ConfigError(f"eval_truncations must be positive numbers, got {list(self.eval_truncations)}")
        if self.sampler_norm_images < 0 or self.sampler_devices < 1:
            raise ConfigError(f"sampler_norm_images must be 0 or more and sampler_devices at least 1, got "
                              f"{self.sampler_norm_images}, {self.sampler_devices}")


def sampler_config(cfg: DecoderConfig) -> BigGanConfig:
    """The sampler's BigGanConfig: `sampler` is its arch, every `sampler_<key>` its <key>, and its
    resolution is the latent's, resolution / 2**levels."""
    keys = {f.name for f in dataclasses.fields(BigGanConfig)}
    values = {f.name[len("sampler_"):]: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
              if f.name.startswith("sampler_") and f.name[len("sampler_"):] in keys}
    side = cfg.resolution >> cfg.levels
    if side not in RESOLUTIONS:
        raise ConfigError(f"the sampler works on the {side}x{side} latent (resolution {cfg.resolution}, levels "
                          f"{cfg.levels}), but BigGAN is built for {', '.join(map(str, RESOLUTIONS))}")
    try:
        return apply_overrides(BigGanConfig(), {"arch": cfg.sampler, "resolution": side, **values})
    except ConfigError as e:
        raise ConfigError(f"sampler: {e} (set it with --set sampler_<key>=...)") from None


@dataclass(frozen=True)
class NsbganConfig(DecoderConfig):
    """NSBGAN decoders (Sec. 4.2, Table 3, Fig. 6a)."""

    batch_sizes: tuple[int, ...] = (64, 128)  # Table 3 (see module docstring for the level order)
    iterations: tuple[int, ...] = (232_000, 288_000)  # Table 3 "training iterations"
    lr: float = 1e-4  # Table 3 and Sec. 5
    wavelet: str = "bior2.2"  # Sec. 5: "biorthogonal 2.2 wavelet"
    # Boundary handling of every DWT. The official code zero-pads (`zero`); we default to the
    # exact `periodization` (DESIGN.md) so that the MSE measures the decoders alone: with `zero`,
    # even exact bands leave an error of 6e-5 (one level) to 2.4e-4 (two) at 256x256.
    mode: Literal["periodization", "zero"] = "periodization"
    patch: int = 32  # Sec. 4.2 and Table 3 ("input size 32x32"): packets are patch x patch
    width: int = 512  # Fig. 6a / official UNet_NTail_128_Mod: 512 channels at every scale
    heads: Literal["packet", "band"] = "packet"  # Table 3: one shallow head per band packet (12 / 48)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.protocol == "table1":  # the official code's zero-padded transform (wt_utils.py)
            object.__setattr__(self, "mode", "zero")

    def validate_decoders(self) -> None:
        super().validate_decoders()
        r = self.resolution
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if self.wavelet not in pywt.wavelist(kind="discrete"):
            raise ConfigError(f"wavelet '{self.wavelet}' is not a discrete pywt wavelet (e.g. bior2.2, haar, db2)")
        if self.patch < 8 or self.patch % 8:
            raise ConfigError(f"patch must be a multiple of 8 (the UNet pools three times), got {self.patch}")
        for level in range(1, self.levels + 1):
            side = r >> level
            if side < self.patch or side % self.patch:
                raise ConfigError(
                    f"decoder-l{level} takes a {side}x{side} TL_{level} (resolution {r}), which cannot be split "
                    f"into {self.patch}x{self.patch} packets: set patch to {side} or smaller, or fewer levels")
        if self.width < 2:
            raise ConfigError("width must be >= 2")


def check_per_level(cfg, names: tuple[str, ...]) -> None:
    """Each per-level tuple field in `names` has a positive value for every level."""
    for name in names:
        values = getattr(cfg, name)
        if len(values) < cfg.levels or any(v < 1 for v in values):
            raise ConfigError(f"{name} needs one positive value per level (levels={cfg.levels}), got {list(values)}")



def encode(x: torch.Tensor, levels: int, wavelet: str = "bior2.2", mode: str = "periodization") -> torch.Tensor:
    """The NSBGAN encoder E_L (eq. 2): (N, 3, R, R) in [0, 1] -> TL_L, (N, 3, R/2**L, R/2**L) in [0, 2**L]."""
    for _ in range(levels):
        x = dwt2(x, wavelet, mode)[0]
    return x


# --- the decoder of one level --------------------------------------------------------------------
class WaveletDecoder(nn.Module):
    """D_l of eq. (3): TL_l (N, 3, s, s) -> TL_{l-1} (N, 3, 2s, 2s), a packet UNet + one IWT."""

    def __init__(self, side: int, cfg: NsbganConfig):
        super().__init__()
        self.patch, self.wavelet, self.mode = cfg.patch, cfg.wavelet, cfg.mode
        self.unet = PacketUNet(4 ** packet_depth(side, cfg.patch), cfg.width, cfg.heads)

    def details(self, tl: torch.Tensor) -> torch.Tensor:
        """TL_l -> predicted (TR, BL, BR) packets, (N, 3 bands, 3P, patch, patch) float32."""
        packets = packet_split(tl, self.patch, self.wavelet, self.mode)
        if packets.is_cuda:
            packets = packets.contiguous(memory_format=torch.channels_last)
        return self.unet(packets).float()

    def forward(self, tl: torch.Tensor) -> torch.Tensor:
        out = self.details(tl)
        n, _, c, s, _ = out.shape
        bands = packet_merge(out.reshape(n * 3, c, s, s), tl.shape[1], self.wavelet, self.mode)
        tr, bl, br = bands.view(n, 3, *bands.shape[1:]).unbind(1)
        return idwt2(tl, tr, bl, br, self.wavelet, self.mode)


def band_packets(tr: torch.Tensor, bl: torch.Tensor, br: torch.Tensor, patch: int, wavelet: str,
                 mode: str) -> torch.Tensor:
    """Ground-truth detail bands (N, 3, s, s) each -> packets (N, 3 bands, 3P, patch, patch)."""
    n, c, s, _ = tr.shape
    packets = packet_split(torch.stack((tr, bl, br), 1).reshape(n * 3, c, s, s), patch, wavelet, mode)
    return packets.view(n, 3, *packets.shape[1:])


# --- stages ---------------------------------------------------------------------------------------
Reconstructions = dict[str, tuple[torch.Tensor, torch.Tensor]]


class DecoderStage(Stage):
    """One decoder level, trained alone by regression on ground truth with Adam; shared by
    NSBGAN and NSBGAN-PIXEL. Subclasses say what the model is, what it is trained on and how a
    level is reconstructed; this class owns the optimiser, bf16 autocast on CUDA and the
    Table 1 evaluation."""

    best_metric = ("mse_val", "min")
    image_metrics = False  # Table 1's MSE only

    def __init__(self, level: int, cfg):
        self.level, self.cfg = level, cfg
        # levels in order, decoder-l1 first: a stage's position (which seeds it) does not change
        # with `levels`, so decoder-l1 trains identically in a one- or two-level run
        self.name = f"decoder-l{level}"
        self.batch_size = cfg.batch_sizes[level - 1]
        self.max_steps = cfg.iterations[level - 1]
        self.budget_share = cfg.decoder_share  # of the budget when the stages run one after another
        self.model: nn.Module | None = None
        self.amp = False
        self.steps = 0  # optimiser steps taken: a decoder with none cannot decode samples

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """The decoder network of this level (built on the current default device)."""

    @abc.abstractmethod
    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training losses on a batch x: (N, 3, R, R) float in [0, 1]; "loss" is minimised."""

    @abc.abstractmethod
    def apply(self, low: torch.Tensor) -> torch.Tensor:
        """The level's decoder: its input representation -> the next finer one."""

    @abc.abstractmethod
    def reconstructions(self, images: torch.Tensor, baselines: bool) -> Reconstructions:
        """uint8 images -> {name: (target, reconstruction)} in [0, 1]: "recon" rebuilt with this
        level's decoder and every other input exact; with `baselines`, decoder-free references."""

    def autocast(self, enabled: bool = True):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp and enabled)

    def decode(self, low: torch.Tensor) -> torch.Tensor:
        """`apply` under the stage's autocast (none under protocol=table1's float32 evaluation),
        float32 out: the step used when chaining levels."""
        with self.autocast(enabled=MseProtocol.of(self.cfg).autocast):
            return self.apply(low).float()

    # --- Stage ---
    def init(self, ctx: StageContext) -> None:
        self.device = ctx.device
        cuda = ctx.device.type == "cuda"
        self.amp = self.cfg.amp == "bf16"  # on any device, as run.json's "precision" says
        with torch.device(ctx.device):  # built where it runs, from the RNG state the loop seeded
            self.model = self.build_model()
        if cuda:
            self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr, betas=self.cfg.betas, eps=self.cfg.eps,
                                    fused=cuda)

    def train_step(self, batch: Batch) -> dict[str, float]:
        self.model.train()
        with self.autocast():
            parts = self.losses(uint8_to_unit(batch.images))
        self.opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        self.opt.step()
        self.steps += 1
        return {k: v.detach() for k, v in parts.items()}  # unread: the loop reads them once per train line

    @torch.no_grad()
    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        p = MseProtocol.of(self.cfg)
        n = min(p.images, len(ctx.val), len(ctx.data))  # same count on both splits

        def recon(images: torch.Tensor, baselines: bool = False) -> Reconstructions:
            with self.autocast(enabled=p.autocast):
                return self.reconstructions(images, baselines)

        self.model.eval()
        try:
            val = batched_mse(ctx.val, p.indices(len(ctx.val), n), self.cfg.eval_batch_size, ctx.device,
                              lambda x: recon(x, baselines=True), p.clip)
            train = batched_mse(ctx.data, p.indices(len(ctx.data), n), self.cfg.eval_batch_size, ctx.device,
                                recon, p.clip)
            save_recon_grid(ctx, lambda x: recon(x)["recon"])
        finally:
            self.model.train()
        metrics = {"mse_val": val.pop("recon"), "mse_train": train["recon"], "mse_images": n, **p.fields()}
        metrics.update({f"mse_{name}_val": value for name, value in val.items()})
        return metrics

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.steps = int(state.get("steps", 1))  # checkpoints from before the count hold trained decoders


@dataclass(frozen=True)
class MseProtocol:
    """How an MSE of Table 1 is measured (`DecoderConfig.protocol`), written on every MSE line as
    `mse_protocol` ("harness": the harness's own; "table1": the official evaluation's) and `mse_clip`."""

    name: str
    images: int
    clip: bool  # reconstructions clipped to [0, 1] before the error
    autocast: bool  # the stage's bf16 autocast (if amp=bf16) allowed during evaluation

    @classmethod
    def of(cls, cfg) -> "MseProtocol":
        if cfg.protocol == "table1":
            return cls("table1", cfg.eval_images, clip=False, autocast=False)
        return cls("harness", cfg.eval_images, clip=True, autocast=True)

    def indices(self, size: int, n: int) -> np.ndarray:
        """Which `n` of a split's `size` images: the first n (harness), or a fixed seed-0 random
        sample in index order (table1: the official shuffled loader's first 50,000)."""
        if self.name == "table1" and n < size:
            return np.sort(np.random.default_rng(0).choice(size, n, replace=False))
        return np.arange(n)

    def fields(self) -> dict:
        return {"mse_protocol": self.name, "mse_clip": self.clip}


def batched_mse(ds, idx: np.ndarray, batch_size: int, device: torch.device,
                reconstructions: Callable[[torch.Tensor], Reconstructions], clip: bool = True) -> dict[str, float]:
    """Mean `reconstruction_mse(target, recon, clip)` over the images `idx` of `ds`, for each name
    `reconstructions(uint8 batch on device)` returns; batches of `batch_size` images."""
    means: dict[str, MeanAccumulator] = {}
    for start in range(0, len(idx), batch_size):
        part = idx[start:start + batch_size]
        for name, (target, recon) in reconstructions(ds.images(part)[0].to(device)).items():
            means.setdefault(name, MeanAccumulator()).add(reconstruction_mse(target, recon, clip), len(part))
    return {name: m.mean for name, m in means.items()}


def save_recon_grid(ctx: EvalContext, reconstruct: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
                    ) -> None:
    """The first held-out images over their reconstructions, as one PNG grid."""
    images = ctx.val.images(np.arange(min(GRID_IMAGES, len(ctx.val))))[0].to(ctx.device)
    target, recon = reconstruct(images)
    ctx.save_grid(torch.cat([unit_to_uint8(target), unit_to_uint8(recon)]).cpu(), "recon")


class WaveletDecoderStage(DecoderStage):
    """`decoder-l{level}` of NSBGAN: TL_l -> TL_{l-1}, loss = sum of the three band MSEs
    (on the packets, as the official code)."""

    def __init__(self, level: int, cfg: NsbganConfig):
        super().__init__(level, cfg)
        self.side = cfg.resolution >> level

    def build_model(self) -> WaveletDecoder:
        return WaveletDecoder(self.side, self.cfg)

    def _coeffs(self, x: torch.Tensor) -> list:
        return wavedec2(x, self.level, self.cfg.wavelet, self.cfg.mode)

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        coeffs = self._coeffs(x)
        target = band_packets(*coeffs[1], self.cfg.patch, self.cfg.wavelet, self.cfg.mode)
        per_band = ((self.model.details(coeffs[0]) - target) ** 2).mean(dim=(0, 2, 3, 4))
        if self.cfg.loss_reduction == "sum":
            # the official loss: sum over packets j of F.mse_loss(packet j) = packets x the band's mean
            per_band = per_band * (target.shape[2] // x.shape[1])
        return {"loss": per_band.sum(), "loss_tr": per_band[0], "loss_bl": per_band[1], "loss_br": per_band[2]}

    def apply(self, tl: torch.Tensor) -> torch.Tensor:
        return self.model(tl)

    def reconstructions(self, images: torch.Tensor, baselines: bool = False) -> Reconstructions:
        """Full-resolution images: `recon` from this decoder's TL_{l-1} and the exact details of
        the finer levels; baselines `lowpass` (zero details at this level) and `floor` (exact)."""
        x = uint8_to_unit(images)
        coeffs = self._coeffs(x)
        tl, finer = coeffs[0], coeffs[2:]  # finer: exact details of levels l-1 .. 1
        wavelet, mode = self.cfg.wavelet, self.cfg.mode

        def image(tl_prev: torch.Tensor) -> torch.Tensor:
            return waverec2([tl_prev, *finer], wavelet, mode) if finer else tl_prev

        out = {"recon": (x, image(self.decode(tl)))}
        if baselines:
            zero = torch.zeros_like(tl)
            out["lowpass"] = (x, image(idwt2(tl, zero, zero, zero, wavelet, mode)))
            out["floor"] = (x, waverec2(coeffs, wavelet, mode))
        return out


def chained_evaluation(stages: list[DecoderStage], encoder: Callable[[torch.Tensor], torch.Tensor], cfg
                       ) -> Callable[[EvalContext], dict[str, float]]:
    """`Method.evaluate`: the decoders chained as at sampling time, encoder(x) -> decoder-lL ->
    ... -> decoder-l1 -> image, MSE on held-out and training images; `stages` in level order."""

    def reconstruct(images: torch.Tensor) -> Reconstructions:
        x = uint8_to_unit(images)
        low = encoder(x)
        for stage in reversed(stages):
            low = stage.decode(low)
        return {"recon": (x, low)}

    @torch.no_grad()
    def evaluate(ctx: EvalContext) -> dict[str, float]:
        p = MseProtocol.of(cfg)
        n = min(p.images, len(ctx.val), len(ctx.data))
        for s in stages:
            s.model.eval()
        try:
            val = batched_mse(ctx.val, p.indices(len(ctx.val), n), cfg.eval_batch_size, ctx.device, reconstruct,
                              p.clip)["recon"]
            train = batched_mse(ctx.data, p.indices(len(ctx.data), n), cfg.eval_batch_size, ctx.device, reconstruct,
                                p.clip)["recon"]
            save_recon_grid(ctx, lambda x: reconstruct(x)["recon"])
        finally:
            for s in stages:
                s.model.train()
        return {"mse_val": val, "mse_train": train, "mse_images": n, **p.fields()}

    return evaluate


# --- the sampler on the latent (Sec. 4.3, 5, Table 2) ----------------------------------------------
@dataclass(frozen=True)
class LatentRange:
    """The official sampler's fixed map of the latent to [-1, 1]: l = ((x + shift) / scale - 0.5) / 0.5,
    with shift = ceil(|min|) and scale = shift + ceil(max) over the training set (ImageNet, zero
    mode: shift 3, scale 10, i.e. (x - 2) / 5)."""

    shift: float
    scale: float

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + self.shift) / self.scale - 0.5) / 0.5

    def denormalise(self, latent: torch.Tensor) -> torch.Tensor:
        return (latent * 0.5 + 0.5) * self.scale - self.shift

    @classmethod
    def of(cls, low: float, high: float) -> "LatentRange":
        shift = float(math.ceil(abs(low)))
        return cls(shift, shift + float(math.ceil(high)))


PIXEL_RANGE = LatentRange(0.0, 1.0)  # NSBGAN-PIXEL: the downsampled image in [0, 1] -> 2x - 1


def latent_range(data, encoder: Callable[[torch.Tensor], torch.Tensor], key: str, device: torch.device,
                 limit: int = 0, batch_size: int = 250) -> LatentRange:
    """The LatentRange of `encoder`'s output over the first `limit` (0: all) images of `data`,
    computed once and cached as JSON beside the prepared data, keyed by the dataset id and `key`
    (the encoder's settings)."""
    n = len(data) if limit == 0 else min(limit, len(data))
    path = cache_root() / "latent-range" / f"{data.id}-{data.split}-n{n}-{key}.json"
    if path.is_file():
        try:
            d = json.loads(path.read_text())
            return LatentRange.of(d["min"], d["max"])
        except (OSError, ValueError, KeyError):
            pass  # torn: recompute
    low, high = math.inf, -math.inf
    with torch.no_grad():
        for start in range(0, n, batch_size):
            x = encoder(uint8_to_unit(data.images(np.arange(start, min(n, start + batch_size)))[0].to(device)))
            low, high = min(low, x.min().item()), max(high, x.max().item())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps({"min": low, "max": high, "n": n, "dataset": data.id, "key": key}).encode())
    return LatentRange.of(low, high)


class LatentSamplerStage(BigGanStage):
    """`sampler`: class-conditional BigGAN / BigGAN-deep trained on the encoder's latent of the real
    images (TL_L, or the downsampled image), normalised by a LatentRange, independently of the
    decoders (Sec. 4.3). Its samples become images through the trained decoders (`Pipeline`)."""

    def __init__(self, cfg: DecoderConfig, encoder: Callable[[torch.Tensor], torch.Tensor], encoder_key: str,
                 fixed_range: LatentRange | None, decoder_names: tuple[str, ...]):
        super().__init__(sampler_config(cfg), name="sampler", channels=3)
        self.pipeline_cfg, self.encoder, self.encoder_key = cfg, encoder, encoder_key
        self.fixed_range, self.decoder_names = fixed_range, decoder_names
        self.budget_share = 1.0 - cfg.decoder_share * cfg.levels
        self.devices = cfg.sampler_devices
        self.data_options = cfg.sampler_data  # the sampler trains on its own preparation (long-edge)
        self.range: LatentRange | None = None

    def init(self, ctx: StageContext) -> None:
        # no random numbers are drawn here, so G and D are built from the state the loop seeded
        self.range = self.fixed_range or latent_range(ctx.data, self.encoder, self.encoder_key, ctx.device,
                                                      self.pipeline_cfg.sampler_norm_images)
        super().init(ctx)

    def real(self, images: torch.Tensor) -> torch.Tensor:
        x = self.range.normalise(self.encoder(uint8_to_unit(images)))
        return x.contiguous(memory_format=torch.channels_last) if self.cuda else x

    def latents(self, n: int, truncation: float = 1.0, seed: int = 0) -> Iterator[torch.Tensor]:
        """Chunks of sampled latents in the encoder's units (de-normalised), on the device."""
        for x in self.generate(n, truncation, seed):
            yield self.range.denormalise(x)

    def describe(self) -> dict:
        return {**super().describe(), "latent_shift": self.range.shift, "latent_scale": self.range.scale,
                "latent_resolution": self.cfg.resolution}

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        """FID of decoded samples (the curve of Fig. 3a), with the decoders' last checkpoints."""
        try:  # decoders trained at the same time (the parallel layout) may not have a trained checkpoint yet
            decoders = [ctx.trained(name) for name in self.decoder_names]
            untrained = [d.name for d in decoders if d.steps == 0]
            if untrained:
                raise CheckpointError(f"{', '.join(untrained)} not trained yet")
        except CheckpointError as e:
            ctx.notes.append(f"no decoded samples: {e}")
            ctx.save_grid(self.sample(64, seed=1234), "latents")
            return {}
        pipeline = Pipeline(self, decoders, self.pipeline_cfg)
        ctx.save_grid(pipeline.sample(64, seed=1234), "samples")
        return generator_metrics(ctx, pipeline.sample)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "latent_range": [self.range.shift, self.range.scale]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.range = LatentRange(*state["latent_range"])


class Pipeline:
    """The whole model: sampler -> de-normalise -> decoder-lL -> ... -> decoder-l1 -> image, and its
    final evaluation (Sec. 5: FID/IS at each truncation level, FID* against reconstructions of
    real images, Table 1's chained MSE). `decoders` in level order."""

    def __init__(self, sampler: LatentSamplerStage, decoders: list[DecoderStage], cfg: DecoderConfig,
                 encoder: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.sampler, self.decoders, self.cfg = sampler, decoders, cfg
        self.encoder = encoder or sampler.encoder

    def _check_trained(self) -> None:
        for stage in self.decoders:
            if stage.model is None or stage.steps == 0:
                raise MetricError(f"{stage.name} is not trained yet: images cannot be decoded from the sampler's "
                                  f"latents (train it first: harness run --resume RUN_DIR --stage {stage.name})")

    def decode(self, low: torch.Tensor) -> torch.Tensor:
        """Latents in the encoder's units -> images (N, 3, R, R) float in [0, 1]."""
        for stage in reversed(self.decoders):
            stage.model.eval()
            low = stage.decode(low)
        return low

    @torch.no_grad()
    def sample(self, n: int, truncation: float = 1.0, seed: int = 0, device: torch.device | None = None) -> torch.Tensor:
        """n images as (n, 3, R, R) uint8 on the CPU (a harness.method.Sampler)."""
        self._check_trained()
        if device is not None and torch.device(device).type != self.sampler.device.type:
            raise ValueError(f"the pipeline runs on {self.sampler.device}, not {device}")
        out = [unit_to_uint8(self.decode(low)).cpu() for low in self.sampler.latents(n, truncation, seed)]
        side = self.cfg.resolution
        return torch.cat(out) if out else torch.empty(0, 3, side, side, dtype=torch.uint8)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> decode(encode(x)) as uint8, the reconstructions of FID* (and of
        `harness eval --latents-from`, Fig. 3's approximation with an external generator)."""
        self._check_trained()
        device = self.decoders[0].device
        return unit_to_uint8(self.decode(self.encoder(uint8_to_unit(images.to(device))))).cpu()

    def evaluate(self, ctx: EvalContext) -> list[dict[str, float]]:
        """One line per truncation level; the first also holds FID* and the chained MSE."""
        mse = chained_evaluation(self.decoders, self.encoder, self.cfg)(ctx)
        ctx.save_grid(self.sample(64, seed=1234), "samples")
        if ctx.scorer is None or ctx.eval_samples <= 0:
            return [mse]
        lines = []
        for i, t in enumerate(self.cfg.eval_truncations):
            # the first level's samples are kept and also scored against the reconstructions: FID*
            first = dict(extra={"fid_star": self.reconstruction_features(ctx)}) if i == 0 else {}
            level_ctx = dataclasses.replace(ctx, samples_path=ctx.samples_path if i == 0 else None)
            lines.append({"truncation": t, **generator_metrics(level_ctx, self.sample, t, **first)})
        lines[0].update(mse)
        return lines

    def reconstruction_features(self, ctx: EvalContext):
        """Backbone features of decode(encode(x)) for as many training images as samples: FID*'s
        reference (Sec. 5.1, after VQ-VAE-2: how far the samples are from what the decoders can
        express)."""
        n = min(ctx.eval_samples, len(ctx.data))
        size = self.cfg.eval_batch_size
        acc = ctx.scorer.features(self.reconstruct(ctx.data.images(np.arange(s, min(n, s + size)))[0])
                                  for s in range(0, n, size))
        acc.label = f"decode(encode({ctx.data.id}/{ctx.data.split}[:{n}]))"
        return acc


def pipeline_method(decoders: list[DecoderStage], sampler: LatentSamplerStage, cfg: DecoderConfig,
                    encoder: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Method:
    """The Method of NSBGAN or NSBGAN-PIXEL: decoders then the sampler (an order that does not
    matter: they train independently), the pipeline's sampler and its final evaluation; `encoder`
    (default: the sampler's) is the one the chained evaluation and the reconstructions use."""
    pipeline = Pipeline(sampler, decoders, cfg, encoder)
    return Method(stages=[*decoders, sampler], sample=pipeline.sample, evaluate=pipeline.evaluate,
                  reconstruct=pipeline.reconstruct)


# Sec. 5: 168 h on four V100s, FID/IS of 50k decoded samples every 6 h of training (Fig. 3a).
@register("nsbgan", config=NsbganConfig(), paper="not-so-biggan",
          paper_data="imagenet 256x256", table="Table 1, Fig. 3", eval_every="6h", eval_samples=50_000)
def nsbgan(cfg: NsbganConfig) -> Method:
    """NOT-SO-BIGGAN: bior2.2 encoder, packet-UNet decoder per level, BigGAN-deep sampler on TL_L."""
    decoders = [WaveletDecoderStage(level, cfg) for level in range(1, cfg.levels + 1)]
    encoder = functools.partial(encode, levels=cfg.levels, wavelet=cfg.wavelet, mode=cfg.mode)
    sampler = LatentSamplerStage(cfg, encoder, f"dwt-{cfg.wavelet}-{cfg.mode}-L{cfg.levels}", None,
                                 tuple(d.name for d in decoders))
    return pipeline_method(decoders, sampler, cfg)
