"""Training throughput of our BigGAN / BigGAN-deep networks against the official PyTorch code
(ajbrock/BigGAN-PyTorch), side by side at the same config and with the same weights.

    python -m benchmarks.biggan_reference --reference-src ~/src/BigGAN-PyTorch --resolution 128 --ch 96 \\
        --batch 64 --device cuda
    python -m benchmarks.biggan_reference --reference-src /tmp/biggan-ref --arch biggan-deep --resolution 64 \\
        --ch 16 --batch 8 --device cpu
    python -m benchmarks.biggan_reference --fork-equality --reference-src /tmp/nsbgan-fork   # the authors' baseline loop

--fork-equality (with a checkout of the NSBGAN authors' fork, hanseungwook/BigGAN-PyTorch): runs that
fork's baseline loop body (train_baseline.py, "######## Refactored train code" to its ema.update, read
from the checkout and executed as written) and our `accumulation=interleaved` BigGanStage from the same
weights and random draws, in float64 at a tiny BigGAN-deep config, and prints the largest differences
of D, G and G_ema after two optimiser steps (and, for contrast, ours with `accumulation=ajbrock`).

The official code is imported from --reference-src (a checkout you obtain yourself; it is never part of
this repository). One timed step is what the official train_fns does per iteration with one D step:
a D update on [G(z), x] in one forward (hinge loss), then a G update with D's weights frozen (-D(G(z))),
Adam with the official ImageNet settings (G 1e-4, D 4e-4, betas (0, 0.999), eps 1e-6). Before timing,
our networks get the official ones' weights and u vectors, and the script prints how far the outputs
are apart (float32 rounding, ~1e-6). Times are medians of --steps steps after --warmup untimed ones,
the two implementations alternating step by step; CUDA is synchronised around each step.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.biggan_nets import make_discriminator, make_generator
from harness.errors import ConfigError

# Official settings (scripts/launch_BigGAN_bs256x8.sh, launch_BigGAN_deep.sh).
G_LR, D_LR, BETAS, ADAM_EPS, SN_EPS, BN_EPS = 1e-4, 4e-4, (0.0, 0.999), 1e-6, 1e-6, 1e-5


def import_official(src: Path):
    """The official BigGAN.py / BigGANdeep.py modules, imported from a checkout."""
    if not (src / "BigGAN.py").is_file() or not (src / "layers.py").is_file():
        raise ConfigError(f"--reference-src {src} is not a BigGAN-PyTorch checkout (no BigGAN.py / layers.py)")
    sys.path.insert(0, str(src))
    try:
        import BigGAN
        import BigGANdeep
    except ImportError as e:
        raise ConfigError(f"cannot import the official code from {src}: {e}") from None
    return BigGAN, BigGANdeep


def our_key(official_key: str, network: str, depth: int) -> str | None:
    """Name in our state dict of an official one (None for its logging-only `sv0`). The official G
    keeps each block in a list of its own (blocks.k.0, attention at blocks.k.1), as does BigGAN's D;
    BigGAN-deep's D keeps a resolution's `depth` blocks in one list, attention last."""
    if official_key.endswith(".sv0"):
        return None
    k = official_key.replace(".u0", ".u").replace("conv_sc", "shortcut").replace("input_conv.", "stem.")
    k = k.replace("output_layer.0.gain", "output_bn.weight").replace("output_layer.0.bias", "output_bn.bias")
    k = k.replace("output_layer.0.stored_", "output_bn.running_").replace("output_layer.2.", "output_conv.")
    k = re.sub(r"(bn\d)\.stored_", r"\1.norm.running_", k)
    if network == "D":
        k = re.sub(r"^(linear|embed)\.", r"head.\1.", k)
    m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(.*)", k)
    if m:
        per_list = depth if network == "D" else 1
        i, j, rest = int(m[1]), int(m[2]), m[3]
        k = f"attention.{rest}" if j == per_list else f"blocks.{i * per_list + j}.{rest}"
    return k


def load_official_weights(ours: nn.Module, official: nn.Module, network: str, depth: int) -> None:
    state = ours.state_dict()
    for key, value in official.state_dict().items():
        k = our_key(key, network, depth)
        if k is not None:
            state[k] = value.reshape(state[k].shape)
    ours.load_state_dict(state)


def build(args, official_modules):
    """(ours G, ours D, official G, official D), the official ones' weights copied into ours."""
    depth = args.depth if args.arch == "biggan-deep" else 1
    common = dict(ch=args.ch, attn=args.attn, n_classes=args.n_classes, depth=depth, sn_eps=SN_EPS)
    G = make_generator(args.arch, args.resolution, dim_z=args.dim_z, shared_dim=args.shared_dim, bn_eps=BN_EPS,
                       **common)
    D = make_discriminator(args.arch, args.resolution, **common)
    module = official_modules[args.arch == "biggan-deep"]
    kw = dict(G_depth=depth, D_depth=depth) if args.arch == "biggan-deep" else {}
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every attention layer and param count
        oG = module.Generator(G_ch=args.ch, dim_z=args.dim_z, shared_dim=args.shared_dim, hier=True, G_shared=True,
                              resolution=args.resolution, G_attn=str(args.attn), n_classes=args.n_classes,
                              SN_eps=SN_EPS, BN_eps=BN_EPS, no_optim=True, **kw)
        oD = module.Discriminator(D_ch=args.ch, resolution=args.resolution, D_attn=str(args.attn),
                                  n_classes=args.n_classes, SN_eps=SN_EPS, **kw)
    load_official_weights(G, oG, "G", depth)
    load_official_weights(D, oD, "D", depth)
    return G, D, oG, oD


class TrainingStep:
    """One official training iteration (num_D_steps 1, no accumulation) for either implementation;
    `generate(z, y)` hides the one API difference: the official G takes G.shared(y), not y."""

    def __init__(self, G: nn.Module, D: nn.Module, generate: Callable, batch: int, dim_z: int, n_classes: int,
                 device: torch.device):
        self.G, self.D, self.generate = G.to(device), D.to(device), generate
        self.opt_g = torch.optim.Adam(G.parameters(), lr=G_LR, betas=BETAS, eps=ADAM_EPS)
        self.opt_d = torch.optim.Adam(D.parameters(), lr=D_LR, betas=BETAS, eps=ADAM_EPS)
        self.batch, self.dim_z, self.n_classes, self.device = batch, dim_z, n_classes, device
        gen = torch.Generator().manual_seed(0)
        self.x = (torch.rand(batch, 3, G.resolution, G.resolution, generator=gen) * 2 - 1).to(device)
        self.y = torch.randint(0, n_classes, (batch,), generator=gen).to(device)

    def _latents(self):
        return (torch.randn(self.batch, self.dim_z, device=self.device),
                torch.randint(0, self.n_classes, (self.batch,), device=self.device))

    def step(self) -> None:
        self.G.train()
        self.D.train()
        z, y = self._latents()
        with torch.no_grad():
            fake = self.generate(z, y)
        d_fake, d_real = self.D(torch.cat([fake, self.x]), torch.cat([y, self.y])).split(self.batch)
        loss_d = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        self.D.requires_grad_(False)  # official utils.toggle_grad(D, False) for the G step
        z, y = self._latents()
        loss_g = -self.D(self.generate(z, y), y).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.D.requires_grad_(True)


def time_steps(trainers: list[TrainingStep], device: torch.device, steps: int, warmup: int) -> list[float]:
    """Median seconds per step of each trainer, alternating between them step by step."""
    times: list[list[float]] = [[] for _ in trainers]
    for k in range(warmup + steps):
        for t, trainer in zip(times, trainers):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            trainer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if k >= warmup:
                t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


@torch.no_grad()
def output_gap(G, D, oG, oD, device: torch.device, n_classes: int) -> tuple[float, float]:
    """Max |ours - official| of G's images and D's logits, eval mode (no state changes)."""
    for m in (G, D, oG, oD):
        m.eval()
    z = torch.randn(4, G.dim_z, device=device)
    y = torch.randint(0, n_classes, (4,), device=device)
    x, ox = G(z, y), oG(z, oG.shared(y))
    return (x - ox).abs().max().item(), (D(ox, y) - oD(ox, y)).abs().max().item()


def fork_loop_body(src: Path) -> str:
    """The fork's baseline loop body as written: train_baseline.py from "######## Refactored train code"
    through `ema.update(state_dict['itr'])`, dedented, to be executed once per micro-batch."""
    lines = (src / "train_baseline.py").read_text().splitlines()
    first = next(i for i, s in enumerate(lines) if "######## Refactored train code" in s)
    last = next(i for i, s in enumerate(lines) if "ema.update(state_dict['itr'])" in s and i > first)
    body = lines[first:last + 1]
    indent = min(len(s) - len(s.lstrip()) for s in body if s.strip())
    return "\n".join(s[indent:] for s in body)


def fork_equality(src: Path, accumulate: int = 4, batch: int = 4, steps: int = 2) -> list[tuple[str, str, float]]:
    """(loop, network, max |ours - fork|) after `steps` optimiser steps of the fork's baseline loop body
    and of our BigGanStage, float64, same weights and draws (module docstring)."""
    import types

    from baselines.biggan import BigGanConfig, BigGanStage
    from harness.config import apply_overrides
    from harness.data.shapes import ShapesDataset
    from harness.images import uint8_to_signed
    from harness.method import Batch, StageContext

    sys.modules.setdefault("h5py", types.ModuleType("h5py"))  # its datasets module imports it; HDF5 is unused here
    import_official(src)
    import BigGANdeep
    import losses
    import utils

    body = compile(fork_loop_body(src), str(src / "train_baseline.py"), "exec")
    torch.set_default_dtype(torch.float64)
    res, ch, dim_z, shared, n_classes = 32, 16, 16, 8, 10
    data = ShapesDataset(res, "val")
    images, labels = data.images(np.arange(steps * accumulate * batch))
    labels = labels % n_classes
    with contextlib.redirect_stdout(io.StringIO()):
        torch.manual_seed(0)
        oG = BigGANdeep.Generator(G_ch=ch, dim_z=dim_z, shared_dim=shared, hier=True, G_shared=True, resolution=res,
                                  G_attn="0", n_classes=n_classes, SN_eps=SN_EPS, BN_eps=BN_EPS, G_lr=G_LR,
                                  G_B1=BETAS[0], G_B2=BETAS[1], adam_eps=ADAM_EPS, G_depth=2)
        oD = BigGANdeep.Discriminator(D_ch=ch, resolution=res, D_attn="0", n_classes=n_classes, SN_eps=SN_EPS,
                                      D_lr=D_LR, D_B1=BETAS[0], D_B2=BETAS[1], adam_eps=ADAM_EPS, D_depth=2)
        oE = BigGANdeep.Generator(G_ch=ch, dim_z=dim_z, shared_dim=shared, hier=True, G_shared=True, resolution=res,
                                  G_attn="0", n_classes=n_classes, SN_eps=SN_EPS, BN_eps=BN_EPS, skip_init=True,
                                  no_optim=True, G_depth=2)
        ema = utils.ema(oG, oE, 0.9999, 2)  # ema_start 2, so the copy-then-decay switch happens in two steps
    z_ = utils.Distribution(torch.zeros(batch, dim_z))
    z_.init_distribution("normal", mean=0, var=1.0)
    y_ = utils.Distribution(torch.zeros(batch, dtype=torch.int64))
    y_.init_distribution("categorical", num_categories=n_classes)
    config = {"num_D_accumulations": accumulate, "num_G_accumulations": accumulate, "toggle_grads": True,
              "batch_size": batch, "split_D": False, "D_ortho": 0.0, "G_ortho": 0.0, "ema": True}
    env = {"config": config, "G": oG, "D": oD, "GD": BigGANdeep.G_D(oG, oD), "z_": z_, "y_": y_, "losses": losses,
           "utils": utils, "ema": ema, "state_dict": {"itr": 0}, "d_acc_counter": 0, "g_acc_counter": 0}
    for step in range(steps):
        torch.manual_seed(100 + step)
        for i in range(accumulate):
            k = (step * accumulate + i) * batch
            oG.train(), oD.train()
            env.update(x=uint8_to_signed(images[k:k + batch]).double(), y=labels[k:k + batch])
            exec(body, env)  # the fork's code, one micro-batch
    results = []
    for accumulation in ("interleaved", "ajbrock"):
        cfg = apply_overrides(BigGanConfig(), {"arch": "biggan-deep", "resolution": res, "ch": ch, "attn": 0,
                                               "dim_z": dim_z, "shared_dim": shared, "n_classes": n_classes,
                                               "batch_size": batch, "accumulate": accumulate, "ema_start": 2,
                                               "accumulation": accumulation, "data_options": ""})
        stage = BigGanStage(cfg)
        stage.init(StageContext(torch.device("cpu"), 0, data, data, None, 1.0))
        torch.manual_seed(0)  # the fork's networks as they were before its loop ran
        with contextlib.redirect_stdout(io.StringIO()):
            g0 = BigGANdeep.Generator(G_ch=ch, dim_z=dim_z, shared_dim=shared, hier=True, G_shared=True, resolution=res,
                                      G_attn="0", n_classes=n_classes, SN_eps=SN_EPS, BN_eps=BN_EPS, no_optim=True,
                                      G_depth=2)
            d0 = BigGANdeep.Discriminator(D_ch=ch, resolution=res, D_attn="0", n_classes=n_classes, SN_eps=SN_EPS,
                                          no_optim=True, D_depth=2)
        for ours, theirs, net in ((stage.G, g0, "G"), (stage.G_ema, g0, "G"), (stage.D, d0, "D")):
            load_official_weights(ours, theirs, net, 2)
        for step in range(steps):
            torch.manual_seed(100 + step)
            k = step * accumulate * batch
            stage.train_step(Batch(images[k:k + accumulate * batch], labels[k:k + accumulate * batch], step, 0.0, 0.0))
        for name, ours, theirs, net in (("D", stage.D, oD, "D"), ("G", stage.G, oG, "G"), ("G_ema", stage.G_ema, oE, "G")):
            mapped = {our_key(key, net, 2): value for key, value in theirs.state_dict().items()}
            gap = max((v - mapped[key].reshape(v.shape)).abs().max().item()
                      for key, v in ours.state_dict().items() if key in mapped and v.is_floating_point())
            results.append((accumulation, name, gap))
    torch.set_default_dtype(torch.float32)
    return results


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference-src", type=Path, help="a BigGAN-PyTorch checkout (required)")
    p.add_argument("--arch", choices=("biggan", "biggan-deep"), default="biggan")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--ch", type=int, default=32, help="channel multiplier (paper at 128: 96 biggan, 128 deep)")
    p.add_argument("--attn", type=int, default=None, help="attention resolution (default R/2; 0 at 32x32)")
    p.add_argument("--depth", type=int, default=2, help="blocks per resolution of biggan-deep (official: 2)")
    p.add_argument("--dim-z", type=int, default=None, help="default 120 (biggan) / 128 (biggan-deep)")
    p.add_argument("--shared-dim", type=int, default=128)
    p.add_argument("--n-classes", type=int, default=1000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=5, help="timed steps per implementation")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--fork-equality", action="store_true",
                   help="compare our interleaved accumulation with the NSBGAN authors' baseline loop instead")
    args = p.parse_args(argv)
    if args.reference_src is None:
        p.exit(2, "error: --reference-src PATH is required: a checkout of github.com/ajbrock/BigGAN-PyTorch\n")
    if args.attn is None:
        args.attn = 0 if args.resolution == 32 else args.resolution // 2
    if args.dim_z is None:
        args.dim_z = 120 if args.arch == "biggan" else 128
    if args.resolution == 32 and args.attn:
        raise ConfigError("the official D at 32x32 labels all its blocks 16x16 and builds other networks than ours "
                          "with attention: use --attn 0 (its CIFAR setting)")
    if args.arch == "biggan-deep" and args.depth != 2:
        raise ConfigError(f"the official BigGAN-deep G builds matching channels only at depth 2, "
                          f"got --depth {args.depth}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device here")
    return args


def main(argv: list[str] | None = None) -> None:
    try:
        args = parse_args(argv)
        if args.fork_equality:
            rows = fork_equality(args.reference_src.expanduser())
            print("two optimiser steps, float64, BigGAN-deep 32x32 ch 16, 4 micro-batches of 4 (the fork's "
                  "train_baseline.py loop body vs our BigGanStage):")
            print("| our accumulation | network | max abs difference |")
            print("|---|---|---|")
            for accumulation, name, gap in rows:
                print(f"| {accumulation} | {name} | {gap:.2e} |")
            return
        official = import_official(args.reference_src.expanduser())
        if args.threads:
            torch.set_num_threads(args.threads)
        device = torch.device(args.device)
        torch.backends.cudnn.benchmark = True  # as the official train.py
        torch.manual_seed(0)
        G, D, oG, oD = build(args, official)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    ours = TrainingStep(G, D, G, args.batch, G.dim_z, args.n_classes, device)
    theirs = TrainingStep(oG, oD, lambda z, y: oG(z, oG.shared(y)), args.batch, oG.dim_z, args.n_classes, device)
    gap_g, gap_d = output_gap(G, D, oG, oD, device, args.n_classes)
    t_ours, t_theirs = time_steps([ours, theirs], device, args.steps, args.warmup)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"{args.arch} at {args.resolution}x{args.resolution}, ch {args.ch}, attn {args.attn}, batch {args.batch}, "
          f"{args.n_classes} classes; {name}, torch {torch.__version__}")
    print(f"same weights: max |G ours - official| = {gap_g:.1e}, max |D ours - official| = {gap_d:.1e}")
    print("| implementation | G params | D params | s/step (D+G) | images/s |")
    print("|---|---|---|---|---|")
    for label, (g, d), t in (("ours", (G, D), t_ours), ("official", (oG, oD), t_theirs)):
        n_g, n_d = (sum(p.numel() for p in m.parameters()) for m in (g, d))
        print(f"| {label} | {n_g:,} | {n_d:,} | {t:.4f} | {args.batch / t:.1f} |")
    print(f"ours / official: {t_theirs / t_ours:.2f}x images/s")


if __name__ == "__main__":
    main()
