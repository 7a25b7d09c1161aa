"""Throughput of the training batch stream: images/s from the dataset to normalised tensors on the
device (`BatchStream.next()`, then uint8 -> float in [-1, 1] as the methods' `to_unit`), for the
embedded `shapes` data (rendered on the fly) or a prepared dataset, by prefetch threads.

    python -m benchmarks.data [--data shapes] [--resolutions 64,128,256] [--batch 64]
                              [--workers 0,1,2,4,8] [--batches 12] [--device cpu|cuda]

`workers 0` reads each batch when it is asked for; `workers N` keeps N batches in flight in a
thread pool (what the loop uses: 1 thread on a CPU, up to 8 per process on a GPU). The consumer
here does nothing, so the figure is the stream's ceiling: a training step slower than
batch / (images/s) never waits for data.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from baselines.dcgan import to_unit  # noqa: E402
from harness.data import open_dataset  # noqa: E402
from harness.data.loader import BatchStream  # noqa: E402


def measure(data, batch: int, workers: int, batches: int, device: torch.device | str = "cpu") -> float:
    """Images/s of `batches` normalised batches on `device` after one warm-up batch."""
    device = torch.device(device)
    stream = BatchStream(data, batch, seed=0, device=device, workers=workers)
    to_unit(stream.next()[0])  # warm-up: starts the pool, first batches in flight
    t0 = time.perf_counter()
    for _ in range(batches):
        x = to_unit(stream.next()[0])
    if device.type == "cuda":
        x.sum().item()  # the last batch has arrived
    dt = time.perf_counter() - t0
    stream.close()
    return batch * batches / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--resolutions", default="64,128,256")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", default="0,1,2,4,8")
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    print(f"{args.data}, batch {args.batch}, {args.batches} batches after one warm-up, "
          f"{os.cpu_count()} CPUs, to {args.device}; images/s by prefetch threads")
    print(f"{'res':>5} " + " ".join(f"{f'w={w}':>9}" for w in workers))
    for res in (int(r) for r in args.resolutions.split(",")):
        data = open_dataset(args.data, res).train
        print(f"{res:>5} " + " ".join(f"{measure(data, args.batch, w, args.batches, args.device):>9.0f}" for w in workers),
              flush=True)


if __name__ == "__main__":
    main()
