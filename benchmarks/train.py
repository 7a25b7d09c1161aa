"""Training throughput of a registered method: steps/s and images/s of each stage's train_step on
a fixed batch (data loading excluded), on the CPU and on CUDA when present.

    python -m benchmarks.train --method dcgan                         # the paper's 128x128 DCGAN
    python -m benchmarks.train --method dcgan --set resolution=32 --set width=8
    python -m benchmarks.train --method nsbgan --set resolution=64 --set levels=1 --set width=16
    python -m benchmarks.train --method biggan --set resolution=64 --set accumulate=1   # one micro-batch of 64

A stage's batch is what one train_step consumes: for `biggan` that is the effective batch
(batch_size x accumulate), so images/s counts real images through D per second. Peak memory is
CUDA's max_memory_allocated during the timed steps (the CPU column says "-").

For the same figure from a real run, see `steps_per_s` in run.json's stage_state.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from harness.config import apply_overrides, parse_overrides
from harness.data.shapes import ShapesDataset
from harness.engine.seeding import seed_everything, stage_seed
from harness.method import Batch, StageContext
from harness.registry import get_method


def time_stage(stage, index: int, data, device: torch.device, steps: int, warmup: int) -> tuple[float, int | None]:
    """(seconds per train_step on one fixed batch, synchronised on CUDA; peak CUDA bytes or None);
    the stage is seeded as the loop seeds the `index`-th stage of a run with seed 0."""
    seed = stage_seed(0, index)
    seed_everything(seed)
    stage.init(StageContext(device, seed, data, data, Path("."), 1.0))
    images, labels = data.images(np.arange(stage.batch_size))
    images, labels = images.to(device), labels.to(device)
    times = []
    for k in range(warmup + steps):
        if k == warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        batch = Batch(images, labels, k, 0.0, 0.0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        stage.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return float(np.median(times)), peak


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--method", default="dcgan")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-cuda", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = get_method(args.method)
    cfg = apply_overrides(info.config, parse_overrides(args.overrides), info.name)
    data = ShapesDataset(cfg.resolution, "val")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() and not args.no_cuda else [])
    print(f"{info.name} at {cfg.resolution}x{cfg.resolution} ({', '.join(args.overrides) or 'paper config'}); "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print("| stage | device | batch | s/step | steps/s | images/s | peak memory |")
    print("|---|---|---|---|---|---|---|")
    for device in devices:
        method = info.build(cfg)
        for index, stage in enumerate(method.stages):
            t, peak = time_stage(stage, index, data, device, args.steps, args.warmup)
            name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
            mem = f"{peak / 2**30:.2f} GiB" if peak is not None else "-"
            print(f"| {stage.name} | {name} | {stage.batch_size} | {t:.4f} | {1 / t:.2f} | {stage.batch_size / t:.1f} | {mem} |")


if __name__ == "__main__":
    main()
