"""The two-stage framework NSBGAN and NSBGAN-PIXEL share (Sec. 4): a deterministic encoder maps
images to a small latent; per-level decoders, trained alone on ground truth, map it back; a BigGAN
sampler learns the latent. Here: the shared config, the decoder stage and Table 1's MSE protocol, the
latent's normalisation, the sampler stage, and the whole pipeline's sampling and final evaluation.
The wavelet (methods.nsbgan) and pixel (methods.nsbgan_pixel) variants add encoders and decoders."""
from __future__ import annotations

import abc
import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterator, Literal

import numpy as np
import torch
import torch.nn as nn

from baselines.biggan import BigGanConfig, BigGanStage
from baselines.biggan_nets import RESOLUTIONS
from harness.config import MethodConfig
from harness.data.store import cache_root
from harness.errors import CheckpointError, ConfigError, MetricError
from harness.images import uint8_to_unit, unit_to_uint8
from harness.method import Batch, EvalContext, Method, Stage, StageContext
from harness.metrics.recon import MeanAccumulator, reconstruction_mse
from harness.metrics.scorer import generator_metrics
from harness.rundir.atomic import atomic_write_bytes

GRID_IMAGES = 8  # originals and reconstructions in each evaluation's sample grid
TABLE1_IMAGES = 50_000  # official eval.py: 50,000 reconstructions of each of train and val


# BigGanConfig keys NSBGAN's config held as flat `sampler_<key>` copies before the sampler was nested
_FORMERLY_FLAT = ("ch", "depth", "attn", "dim_z", "shared_dim", "n_classes", "batch_size", "accumulate", "lr_g",
                  "lr_d", "betas", "adam_eps", "sn_eps", "bn_eps", "num_d_steps", "ema_decay", "ema_start",
                  "iterations", "truncation_mode", "standing_stats", "collapse_steps", "amp", "eval_batch_size")


# The samplers as the official launch scripts trained them (hanseungwook/BigGAN-PyTorch scripts/, all
# with train_fns.GAN_training_function: accumulation "ajbrock"). Table 2 disagrees with the scripts in
# three rows: its attention resolution (128) and z dim (32) are the scripts' dim_z and attention
# swapped, and its Adam eps 1e-8 is their 1e-6. Learning rates (Sec. 5, Table 2: 1e-4 / 4e-4; the text's
# "4 x 10^4" is a typo), betas, eps values and the EMA (start 20,000) are BigGanConfig's defaults, the
# same scripts'. attn None resolves to 32 at 64x64: --G_attn 32 --D_attn 32 in every script.
def _wavelet_deep() -> BigGanConfig:
    """launch_BigGAN_deep_WT64_bs512_hdf5.slurm (2 GPUs, the experiment every sampling script of the
    paper's time loads; Table 2's "best model type")."""
    return BigGanConfig(arch="biggan-deep", resolution=64, ch=128, depth=2, attn=None, dim_z=128, shared_dim=128,
                        batch_size=256, accumulate=2,  # --batch_size 256 --num_G/D_accumulations 2: Sec. 5's 512
                        iterations=250_000,  # Table 2 "training iterations"
                        accumulation="ajbrock",
                        # BigGAN-PyTorch's CenterCropLongEdge + Resize (create_hdf5_dataset_wt.py:50-51)
                        data_options="crop=long-edge")


def _wavelet_biggan() -> BigGanConfig:
    """launch_BigGAN_WT64_bs1024_hdf5.slurm (2 GPUs; committed 2020-09-22, after the paper): plain
    BigGAN, --G_ch 96 --D_ch 96, --dim_z 120, --shared_dim 128, --batch_size 256 x 4 accumulations."""
    return BigGanConfig(arch="biggan", resolution=64, ch=96, depth=1, attn=None, dim_z=120, shared_dim=128,
                        batch_size=256, accumulate=4, iterations=250_000, accumulation="ajbrock",
                        data_options="crop=long-edge")


@dataclass(frozen=True)
class DecoderConfig(MethodConfig):
    """What the wavelet and the pixel pipelines share: the decoders (entry l - 1 of the per-level
    tuples belongs to `decoder-l{l}`) and the BigGAN sampler on the latent (`sampler`, a nested
    BigGanConfig: `--set sampler.lr_g=2e-4`). Subclasses set the paper's values of their own tables."""

    RENAMED: ClassVar[dict[str, str]] = {
        **{f"sampler_{key}": f"sampler.{key}" for key in _FORMERLY_FLAT},
        "sampler": "sampler_model", "sampler_data": "sampler.data_options", "sampler_norm_images": "latent_norm_images"}
    # sampler_model -> the official script's sampler config (the nested `sampler`'s defaults)
    SAMPLER_SCRIPTS: ClassVar[dict[str, Callable[[], BigGanConfig]]] = {"biggan-deep": _wavelet_deep,
                                                                          "biggan": _wavelet_biggan}

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
    # "sum": the official decoder losses sum the per-packet MSEs (train.py:744-748) and the pixel
    # decoders use MSELoss(reduction='sum') (train_pixel.py:24); "mean" averages them. Under Adam a
    # constant factor (up to eps), but the logged loss is that factor larger with "sum".
    loss_reduction: Literal["sum", "mean"] = "sum"
    # MSE protocol. "harness": `eval_images` of each split, reconstructions clipped to [0, 1] as an image
    # would be, the configured mode and precision. "table1": the official evaluation (eval.py
    # eval_unet_128_256 + calc_nll.py): 50,000 training (a fixed random sample, as its shuffled
    # loader) and 50,000 held-out images, float32, unclipped, and for NSBGAN the zero-padded transform
    # (it fixes mode=zero and eval_images=50000 for training and evaluation alike: `implied`).
    protocol: Literal["harness", "table1"] = "harness"
    # FID: the NSBGAN numbers come from BigGAN-PyTorch's TF-Inception code (hanseungwook/BigGAN-PyTorch
    # inception_tf13.py, which feeds the TF graph un-resized images): clean-fid's legacy_tensorflow
    fid_mode: Literal["clean", "legacy_tensorflow"] = "legacy_tensorflow"
    # Sec. 5 "Convergence": the decoders "converge within 24-48 hours"; when the stages run one after
    # another (fewer than 4 GPUs), each decoder gets 48 h of the 168 h and the sampler the rest
    decoder_share: float = 48 / 168
    # the final evaluation's truncation levels: Fig. 3a's [1.0, 0.4, 0.1, 0.01] (Sec. 5 "Truncation Trick")
    # and 0.6, where FID* is measured; Fig. 3b's finer levels: `harness eval --truncation`
    eval_truncations: tuple[float, ...] = (1.0, 0.6, 0.4, 0.1, 0.01)
    # FID* (Sec. 5.1, after VQ-VAE-2): the samples against the reconstructions of real images, at
    # truncation 0.6 as the official figures.ipynb (`samples_recon_z06`, FID* 20.37); the final
    # evaluation adds this level where eval_truncations lacks it
    fid_star_truncation: float = 0.6
    # the sampler's model type (Table 2, Sec. 5.1: the paper trained instances of both); the nested
    # `sampler` starts from that model's official script, `--set sampler.<key>=...` changes it from there
    sampler_model: Literal["biggan-deep", "biggan"] = "biggan-deep"
    sampler: BigGanConfig = field(default_factory=_wavelet_deep)
    latent_norm_images: int = 0  # training images the latent's shift/scale are taken over (0: all)
    sampler_devices: int = 2  # Sec. 5: "We allocate two GPUs to the NOT-SO-BIGGAN sampler" (parallel layout)

    def nested_defaults(self) -> dict:
        return {"sampler": self.SAMPLER_SCRIPTS[self.sampler_model]()}

    def implied(self) -> dict:
        fixed = {"sampler.resolution": (self.resolution >> self.levels,
                                        f"resolution={self.resolution} with levels={self.levels} (the latent's size)"),
                 # the pipeline's FID is the one measured: the sampler's own setting would be unused
                 "sampler.fid_mode": (self.fid_mode, f"fid_mode={self.fid_mode}")}
        if self.protocol == "table1":  # the preset fixes what the official evaluation fixed
            fixed["eval_images"] = (TABLE1_IMAGES, "protocol=table1")
        return fixed

    def validate(self) -> None:
        self.validate_decoders()
        # then the sampler's budget share (the rest) and size; its own checks follow (harness.config)
        if not 0 < self.decoder_share * self.levels < 1:
            raise ConfigError(f"decoder_share x levels must lie in (0, 1), the sampler has the rest; got "
                              f"{self.decoder_share} x {self.levels}")
        side = self.resolution >> self.levels
        if side not in RESOLUTIONS:
            raise ConfigError(f"the sampler works on the {side}x{side} latent (resolution {self.resolution}, levels "
                              f"{self.levels}), but BigGAN is built for {', '.join(map(str, RESOLUTIONS))}")

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
        if not self.fid_star_truncation > 0:
            raise ConfigError(f"fid_star_truncation must be positive, got {self.fid_star_truncation}")
        if self.latent_norm_images < 0 or self.sampler_devices < 1:
            raise ConfigError(f"latent_norm_images must be 0 or more and sampler_devices at least 1, got "
                              f"{self.latent_norm_images}, {self.sampler_devices}")

def check_per_level(cfg, names: tuple[str, ...]) -> None:
    """Each per-level tuple field in `names` has a positive value for every level."""
    for name in names:
        values = getattr(cfg, name)
        if len(values) < cfg.levels or any(v < 1 for v in values):
            raise ConfigError(f"{name} needs one positive value per level (levels={cfg.levels}), got {list(values)}")



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

    def precision(self, device: torch.device) -> str:
        return self.cfg.amp  # bf16 autocast on any device

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
                 fixed_range: tuple[LatentRange, str] | None, decoder_names: tuple[str, ...]):
        """`fixed_range`: (the official normalisation, where it comes from), or None to take it from
        the data (LatentRange.of over `latent_norm_images` training images)."""
        super().__init__(cfg.sampler, name="sampler", channels=3)
        self.pipeline_cfg, self.encoder, self.encoder_key = cfg, encoder, encoder_key
        self.fixed_range, self.decoder_names = fixed_range, decoder_names
        self.budget_share = 1.0 - cfg.decoder_share * cfg.levels
        self.devices = cfg.sampler_devices
        self.data_options = cfg.sampler.data_options  # the sampler trains on its own preparation (long-edge)
        self.range: LatentRange | None = None
        self.range_source = ""

    def init(self, ctx: StageContext) -> None:
        # no random numbers are drawn here, so G and D are built from the state the loop seeded
        if self.fixed_range is not None:
            self.range, self.range_source = self.fixed_range
        else:
            n = self.pipeline_cfg.latent_norm_images or len(ctx.data)
            self.range = latent_range(ctx.data, self.encoder, self.encoder_key, ctx.device,
                                      self.pipeline_cfg.latent_norm_images)
            self.range_source = f"data: ceil(|min|), ceil(max) over {min(n, len(ctx.data))} images of {ctx.data.id}"
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
                "latent_normalisation": self.range_source, "latent_resolution": self.cfg.resolution}

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        """FID of decoded samples during training (the harness's curves against time, cost and energy),
        with the decoders' last checkpoints."""
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
        self.range = LatentRange(*state["latent_range"])  # as trained (range_source says how it was chosen)


class Pipeline:
    """The whole model: sampler -> de-normalise -> decoder-lL -> ... -> decoder-l1 -> image, and its
    final evaluation (Sec. 5: FID/IS at each truncation level, FID* against reconstructions of
    real images, Table 1's chained MSE). `decoders` in level order."""

    def __init__(self, sampler: LatentSamplerStage, decoders: list[DecoderStage], cfg: DecoderConfig,
                 encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 low_pass: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.sampler, self.decoders, self.cfg = sampler, decoders, cfg
        self.encoder = encoder or sampler.encoder
        self.low_pass = low_pass  # latent -> the image it alone gives, in [0, 1] (the official filter's input)

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
    def sample_filtered(self, n: int, truncation: float, seed: int, keep: Callable[[torch.Tensor], torch.Tensor],
                        draw_batch: int, max_draws: int) -> Iterator[torch.Tensor]:
        """The official sampling script's rejection (sample_wt.py l.111-139): draw batches of
        `draw_batch` latents (uniform classes), keep those whose low-pass image `keep` accepts,
        decode them; chunks of (k, 3, R, R) uint8 until `n` are kept, a MetricError after `max_draws`."""
        self._check_trained()
        kept = drawn = 0
        for k in itertools.count():
            if kept >= n:
                return
            if drawn >= max_draws:
                raise MetricError(f"the confidence filter kept {kept} of {drawn} samples, fewer than {n}: draw more "
                                  f"or score fewer samples")
            latents = torch.cat(list(self.sampler.latents(draw_batch, truncation, seed + k)))
            drawn += len(latents)
            take = latents[keep(self.low_pass(latents)).to(latents.device)][: n - kept]
            kept += len(take)
            if len(take):
                yield unit_to_uint8(self.decode(take)).cpu()

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> decode(encode(x)) as uint8, the reconstructions of FID* (and of
        `harness eval --latents-from`, Fig. 3's approximation with an external generator)."""
        self._check_trained()
        device = self.decoders[0].device
        return unit_to_uint8(self.decode(self.encoder(uint8_to_unit(images.to(device))))).cpu()

    def evaluate(self, ctx: EvalContext) -> list[dict[str, float]]:
        """One line per truncation level; the first also holds the chained MSE (and its samples are
        kept), the one at `fid_star_truncation` also FID* against the reconstructions."""
        mse = chained_evaluation(self.decoders, self.encoder, self.cfg)(ctx)
        ctx.save_grid(self.sample(64, seed=1234), "samples")
        if ctx.scorer is None or ctx.eval_samples <= 0:
            return [mse]
        lines = []
        levels = dict.fromkeys((*self.cfg.eval_truncations, self.cfg.fid_star_truncation))  # FID*'s level too
        for i, t in enumerate(levels):
            star = dict(extra={"fid_star": self.reconstruction_features(ctx)}) if t == self.cfg.fid_star_truncation \
                else {}
            level_ctx = dataclasses.replace(ctx, samples_path=ctx.samples_path if i == 0 else None)
            lines.append({"truncation": t, "sample_filter": "none (as the paper)",
                          **generator_metrics(level_ctx, self.sample, t, **star)})
        lines[0].update(mse)
        return lines

    def reconstruction_features(self, ctx: EvalContext):
        """Backbone features of decode(encode(x)) for as many training images as samples: FID*'s
        reference (Sec. 5.1, after VQ-VAE-2: how far the samples are from what the decoders can
        express)."""
        n = min(ctx.eval_samples, len(ctx.data))
        size = self.cfg.eval_batch_size

        def chunk(k: int) -> torch.Tensor:
            return self.reconstruct(ctx.data.images(np.arange(k * size, min(n, (k + 1) * size)))[0])

        label = f"decode(encode({ctx.data.id}/{ctx.data.split}[:{n}]))"
        sizes = [min(size, n - start) for start in range(0, n, size)]
        acc = ctx.scorer.sampled_features(chunk, sizes, f"FID* reference: {label}")
        if acc is not None:  # complete on rank 0 alone, where the metrics are computed
            acc.label = label
        return acc


def pipeline_method(decoders: list[DecoderStage], sampler: LatentSamplerStage, cfg: DecoderConfig,
                    encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    low_pass: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Method:
    """The Method of NSBGAN or NSBGAN-PIXEL: decoders then the sampler (an order that does not
    matter: they train independently), the pipeline's sampler and its final evaluation; `encoder`
    (default: the sampler's) is the one the chained evaluation and the reconstructions use,
    `low_pass` the latent's image the official confidence filter classifies."""
    pipeline = Pipeline(sampler, decoders, cfg, encoder, low_pass)
    return Method(stages=[*decoders, sampler], sample=pipeline.sample, evaluate=pipeline.evaluate,
                  reconstruct=pipeline.reconstruct, sample_filtered=pipeline.sample_filtered if low_pass else None)


