"""Cost of the octave GAN variants: parameters, multiply-adds and training-step time of G and D.

The paper's motivation for octave convolutions is less computation (Sec. 2.3): the low band runs at
a quarter of the pixels. This prints, per loss and variant (base / oct / low / ramp / combi), the
parameters and multiply-adds of one G forward (one z) and one D forward (one image), as the runs
record them, and the time of a full training step (`OctaveGanStage.train_step`: one D update and,
every n_critic steps, one G update) on the CPU and, when present, on CUDA (bf16 autocast, as runs).

    python -m benchmarks.octave                          # 128x128, width 32, batch 64: the paper's
    python -m benchmarks.octave --resolution 64 --batch 16 --steps 3

Multiply-adds are FlopCounterMode's FLOPs / 2 (convolutions and matmuls only). Step times are the
median of `--steps` timed steps after `--warmup` untimed ones, on random-initialised networks and
one fixed batch of `shapes` images; for wgan a step is one critic update (G every 5th).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from harness.config import apply_overrides
from harness.data import open_dataset
from harness.method import Batch, StageContext
from harness.registry import get_method
from harness.engine.seeding import seed_everything, stage_seed

VARIANTS = ("base", "oct", "low", "ramp", "combi")


def step_seconds(stage, images: torch.Tensor, device: torch.device, steps: int, warmup: int) -> float:
    """Median wall seconds of one `train_step` on `device` (CUDA synchronised around each step)."""
    labels = torch.zeros(len(images), dtype=torch.long, device=device)
    times = []
    for i in range(warmup + steps):
        batch = Batch(images, labels, i, epoch=0.5, progress=0.5)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        stage.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(loss: str, variant: str, args, devices: list[torch.device], images: torch.Tensor, data) -> dict:
    info = get_method(f"octave-{loss}")
    cfg = apply_overrides(info.config, {"variant": variant, "resolution": args.resolution, "width": args.width,
                                        "batch_size": args.batch})
    row = {"loss": loss, "variant": variant, "alpha": cfg.band_alpha}
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            seed_everything(stage_seed(0, 0))
            stage = info.build(cfg).stages[0]
            stage.init(StageContext(device, stage_seed(0, 0), data.train, data.val, Path(tmp), 1.0))
            row.update(stage.cost)  # identical on every device: shapes only
            row[device.type] = step_seconds(stage, images.to(device), device, args.steps, args.warmup)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=128, help="image size (paper: 128)")
    p.add_argument("--width", type=int, default=32, help="d of the official code (paper: 32)")
    p.add_argument("--batch", type=int, default=64, help="batch size of the timed steps (paper: 64)")
    p.add_argument("--losses", default="dcgan", help="comma-separated: dcgan,lsgan,wgan")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant and device")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-cuda", action="store_true", help="time the CPU only")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.no_cuda:
        devices.append(torch.device("cuda"))
    data = open_dataset("shapes", args.resolution)
    images = data.train.images(np.arange(args.batch))[0]
    print(f"octave GAN cost at {args.resolution}x{args.resolution}, width {args.width}, batch {args.batch}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if len(devices) > 1 else ", no CUDA device"))
    rows = [measure(loss, variant, args, devices, images, data)
            for loss in args.losses.split(",") for variant in args.variants.split(",")]

    columns = ["loss", "variant", "alpha", "G params", "D params", "G MMACs", "D MMACs", "MACs vs base",
               "CPU ms/step", "CPU steps/s"] + (["CUDA ms/step"] if len(devices) > 1 else [])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        base = next((b for b in rows if b["loss"] == r["loss"] and b["variant"] == "base"), None)
        ratio = (r["g_macs"] + r["d_macs"]) / (base["g_macs"] + base["d_macs"]) if base else float("nan")
        line = (f"| {r['loss']} | {r['variant']} | {r['alpha']:g} | {r['g_params']:,} | {r['d_params']:,} | "
                f"{r['g_macs'] / 1e6:,.1f} | {r['d_macs'] / 1e6:,.1f} | {ratio:.2f} | {r['cpu'] * 1e3:,.0f} | "
                f"{1 / r['cpu']:.2f} |")
        if len(devices) > 1:
            line += f" {r['cuda'] * 1e3:,.1f} |"
        print(line, flush=True)


if __name__ == "__main__":
    main()
